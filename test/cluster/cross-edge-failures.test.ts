// Connects and requests routed to a listener on another edge while something
// fails on the listener's side (src/hybrid/cluster-link.ts, listener-route.ts,
// hybrid-service.ts): a listener that cannot be told, one being closed, an
// answer on the other path, the listener's edge draining or briefly off NATS.
// In each, the sender gets what the listener (or another edge's listener)
// answered, not a 404, 502 or 504 made up on the way. Edges run in this
// process on one nats-server.
import assert from 'node:assert/strict';
import { before, after, describe, it, type TestContext } from 'node:test';
import { request as httpPost } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import type { ControlChannel } from '../../src/hybrid/control-channel.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeInProcess, edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer, type NatsNode } from '../helpers/nats.ts';
import { CuttableProxy } from '../helpers/pubsub.ts';
import { RawListener, connectStatus, listenOn, openWebSocket } from '../helpers/raw-listener.ts';
import { captureLogger, startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const CORE = { jetstream: { enabled: false } };

const edge = (t: Pick<TestContext, 'after'>, name: string, natsUrl: string, extra: Record<string, unknown> = {}) => edgeInProcess(t, name, natsUrl, extra);
const listen = (t: Pick<TestContext, 'after'>, relay: RunningRelay, entity: string) => listenOn(t, relay.url, entity);

/** A listener that answers every request 200 on its control channel and dials every accept; counts what it was given. */
function answerEverything(listener: RawListener, t: Pick<TestContext, 'after'>): { given: number } {
  const seen = { given: 0 };
  listener.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const { request, accept } = JSON.parse(String(data)) as { request?: { id: string }; accept?: { address: string } };
    if (accept) {
      seen.given++;
      const leg = new WebSocket(accept.address);
      leg.on('error', () => {});
      t.after(() => leg.terminate());
    } else if (request) {
      seen.given++;
      listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: false } }));
    }
  });
  return seen;
}

function channelsOf(relay: RunningRelay): ControlChannel[] {
  return [...relay.hybrid.listeners.all()];
}

describe('connects and requests across edges while the listener side fails', () => {
  const cleanup = new Cleanup();
  let nats: NatsNode;
  before(async () => {
    nats = await startNatsServer(cleanup);
  });
  after(() => cleanup.run());

  for (const action of ['request', 'connect'] as const) {
    it(`a listener that could not be told (its buffer full) leaves nothing watching it: the ${action} asked again on another edge gets that listener's answer`, async (t) => {
      // Requests up to 1 MiB go down the control channel whole (controlMessageBytes), so a few fill its buffer.
      const a = await edge(t, 'full-a', nats.url, { limits: { listenerBufferBytes: 65536, controlMessageBytes: 1048576 } });
      const b = await edge(t, 'full-b', nats.url);
      const c = await edge(t, 'full-c', nats.url);
      const entity = `full-${action}`;
      // A's listener never reads; C's answers everything.
      const stuck = await listen(t, a, entity);
      stuck.ws.pause();
      const open = answerEverything(await listen(t, c, entity), t);
      // A's listener is filled past listenerBufferBytes by requests of A's own senders (bodies it never reads).
      const channel = channelsOf(a)[0];
      const queued = () => channel.queuedBytes;
      // What A wrote down the channel so far, taken by the kernel or queued.
      const written = () => (channel.socket as Socket).bytesWritten;
      const body = Buffer.alloc(512 * 1024, 0x78);
      const fillUrl = `${a.url}/${entity}/fill`;
      // One request at a time, each until its body went down the channel (or it was answered elsewhere): a second
      // one sent down after the queue passed the buffer would drop the channel (a sleep of 50 ms between them let a
      // busy machine do that in the same fill of test/hybrid/listener-gone-early.test.ts).
      for (let i = 0; i < 100 && queued() < 65536; i++) {
        const before = written();
        let answered = false;
        const socket = netConnect(a.port, '127.0.0.1');
        socket.on('error', () => {});
        socket.on('data', () => (answered = true));
        t.after(() => socket.destroy());
        socket.write(`POST /${entity}/fill HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(fillUrl)}\r\nContent-Length: ${body.length}\r\n\r\n`);
        socket.write(body);
        await until(() => answered || written() >= before + body.length, 10000, `request ${i + 1}'s body down the channel or answered`);
      }
      assert.ok(queued() >= 65536, `A's listener has only ${queued()} bytes queued`);
      // Senders through B until one has been routed to A (NATS picks A or C): A cannot tell its listener, drops it
      // (listenerBufferBytes) and answers ListenerGone; B asks again and C's listener takes it.
      const statuses: number[] = [];
      for (let i = 0; i < 30 && channel.isOpen; i++) {
        if (action === 'connect') {
          statuses.push(await connectStatus(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`)));
        } else {
          const url = `${b.url}/${entity}/x${i}`;
          const got = await httpRequest(url, { method: "POST", headers: { ServiceBusAuthorization: tokenFor(url) }, body: Buffer.from("small"), timeoutMs: 10000 });
          statuses.push(got.status);
        }
      }
      assert.equal(channel.isOpen, false, 'no sender was routed to A');
      await until(() => channelsOf(a).length === 0, 5000, "A's listener gone");
      // Before: A's watch for the notice it could not send reported the listener's drop to B, which failed the sender C took.
      const ok = action === 'connect' ? 101 : 200;
      assert.deepEqual(statuses, statuses.map(() => ok));
      assert.equal(open.given, statuses.length);
    });
  }

  it("an edge whose only listener is closing is not routed to: senders through another edge reach an open listener elsewhere", async (t) => {
    const a = await edge(t, 'closing-a', nats.url);
    const b = await edge(t, 'closing-b', nats.url);
    const c = await edge(t, 'closing-c', nats.url);
    const entity = 'closing';
    answerEverything(await listen(t, c, entity), t);
    const closing = await listen(t, a, entity);
    // An invalid control message: A closes the listener (1008), which never answers the close, so its
    // channel stays registered for timeouts.closeHandshakeMs (5 s).
    closing.ws.pause();
    closing.ws.send('not json');
    await until(() => !channelsOf(a)[0].isOpen, 5000, "A's listener closing");
    const statuses = new Map<number, number>();
    const startedAt = Date.now();
    let sent = 0;
    while (Date.now() - startedAt < 2500 && sent < 400) {
      const url = `${b.url}/${entity}/x`;
      const got = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 10000 });
      statuses.set(got.status, (statuses.get(got.status) ?? 0) + 1);
      sent++;
    }
    assert.equal(channelsOf(a).length, 1, "A's listener was no longer in its closing handshake at the end");
    assert.ok(sent >= 30, `only ${sent} requests`);
    // Before: A stayed in the entity's queue group and answered NoListener to the share NATS gave it (404 after three tries).
    assert.deepEqual(Object.fromEntries(statuses), { 200: sent });
  });

  it('a request fetched by rendezvous across edges may be answered on the control channel', async (t) => {
    const a = await edge(t, 'either-a', nats.url, { timeouts: { httpResponseMs: 5000 } });
    const b = await edge(t, 'either-b', nats.url, { timeouts: { httpResponseMs: 5000 } });
    const entity = 'either-path';
    const listener = await listen(t, a, entity);
    const url = `${b.url}/${entity}/upload`;
    // A chunked body: the listener is told to fetch the request on a rendezvous at B.
    const pending = httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url), 'transfer-encoding': 'chunked' }, body: [Buffer.from('part')], timeoutMs: 10000 });
    const { request } = await listener.next<{ request: { address: string; id: string; requestTarget?: string } }>();
    assert.equal(request.requestTarget, undefined, 'the request came whole, not as a notice to fetch it');
    const leg = new WebSocket(request.address);
    t.after(() => leg.terminate());
    // The request and its body read on the leg; the answer goes on the control channel ("either path").
    await withTimeout(
      new Promise<void>((resolve) => {
        let heads = 0;
        leg.on('message', (_data, isBinary) => {
          if (!isBinary) heads++;
          else if (heads > 0) resolve();
        });
      }),
      5000,
      'the request on the rendezvous',
    );
    listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: true } }));
    listener.ws.send(Buffer.from('answered on the control channel'));
    const got = await pending;
    // Before: A dropped an answer on the control channel to a request fetched by rendezvous (504 after httpResponseMs).
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), 'answered on the control channel');
  });

  it('a request fetched by rendezvous across edges whose upload outlasts httpResponseMs may still be answered on the control channel', async (t) => {
    const logB = captureLogger('info');
    const a = await edge(t, 'slow-up-a', nats.url, { timeouts: { httpResponseMs: 1000 } });
    const b = await startTestRelay(t, edgeOverrides('slow-up-b', [nats.url], { bus: CORE, timeouts: { httpResponseMs: 1000 } }), { log: logB.log });
    await until(() => b.bus.connected, 10000, 'B on NATS');
    const entity = 'slow-upload';
    const listener = await listen(t, a, entity);
    const url = `${b.url}/${entity}/upload`;
    // A chunked body trickling for 6 s, a piece every 250 ms: B's wait starts again with each piece.
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpPost(url, { headers: { ServiceBusAuthorization: tokenFor(url), 'transfer-encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      t.after(() => req.destroy());
      let pieces = 0;
      const tick = setInterval(() => {
        req.write('x');
        if (++pieces === 24) {
          clearInterval(tick);
          req.end();
        }
      }, 250);
      t.after(() => clearInterval(tick));
    });
    const { request } = await listener.next<{ request: { address: string; id: string } }>();
    const leg = new WebSocket(request.address);
    t.after(() => leg.terminate());
    await withTimeout(new Promise<void>((resolve) => leg.on('message', (_data, isBinary) => isBinary && resolve())), 15000, 'the whole body on the rendezvous');
    listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: true } }));
    listener.ws.send(Buffer.from('answered on the control channel'));
    // Before: A forgot the request httpResponseMs after routing it, dropped this answer (listener.unknown_response), the
    // sender got 504, and B logged hybrid.answers_lost every second while the body still came.
    assert.deepEqual(await withTimeout(answered, 10000, 'the answer'), { status: 200, body: 'answered on the control channel' });
    assert.deepEqual(logB.events().filter((e) => e === 'hybrid.answers_lost'), []);
  });

  it("a draining edge keeps a listener told to accept another edge's connect until it has dialed", async (t) => {
    const a = await edge(t, 'drain-a', nats.url, { timeouts: { shutdownMs: 3000 } });
    const b = await edge(t, 'drain-b', nats.url);
    const entity = 'drain-accept';
    const listener = await listen(t, a, entity);
    const sender = connectStatus(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`));
    const { accept } = await listener.next<{ accept: { address: string } }>();
    const drained = a.close();
    // The listener accepts 200 ms later.
    await new Promise((r) => setTimeout(r, 200));
    const leg = await openWebSocket(accept.address).then(
      (ws) => {
        t.after(() => ws.terminate());
        return 'open';
      },
      (err: Error & { status?: number }) => `refused ${err.status}`,
    );
    // Before: A closed the listener (1001) at once and told B it was gone: the sender got 502, the leg 404.
    assert.equal(leg, 'open');
    assert.equal(await sender, 101);
    await withTimeout(drained, 10000, 'the drain');
  });

  for (const action of ['request', 'connect'] as const) {
    it(`a ${action} waiting on a listener whose edge is off NATS for a moment gets the listener's answer once it is back`, async (t) => {
      const link = await CuttableProxy.start(nats.port, t);
      const a = await edge(t, `blip-${action}-a`, `nats://127.0.0.1:${link.port}`);
      const b = await edge(t, `blip-${action}-b`, nats.url);
      const entity = `blip-${action}`;
      const listener = await listen(t, a, entity);
      const offNats = async () => {
        link.cut(1200);
        await until(() => !a.bus.connected, 5000, 'A off NATS');
        await until(() => a.bus.connected, 10000, 'A back on NATS');
        // B has asked after A (hc.alive) while it was away: "no responders".
        await new Promise((r) => setTimeout(r, 300));
      };
      if (action === 'request') {
        const url = `${b.url}/${entity}/x`;
        const pending = httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url) }, body: Buffer.from('small'), timeoutMs: 20000 });
        const { request } = await listener.next<{ request: { id: string } }>();
        await offNats();
        listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: false } }));
        // Before: B took one "no responders" for A being gone and answered 502 ListenerGone while A was away.
        assert.equal((await pending).status, 200);
      } else {
        const sender = connectStatus(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`));
        const { accept } = await listener.next<{ accept: { address: string } }>();
        await offNats();
        const leg = await openWebSocket(accept.address);
        t.after(() => leg.terminate());
        assert.equal(await sender, 101);
      }
    });
  }

  it('what waits on a listener whose edge is gone fails (502 ListenerGone) even when an edge of the same node id has started since', async (t) => {
    const link = await CuttableProxy.start(nats.port, t);
    const timeouts = { acceptMs: 20000, httpResponseMs: 20000 };
    const a = await edge(t, 'reborn-a', `nats://127.0.0.1:${link.port}`, { timeouts });
    const b = await edge(t, 'reborn-b', nats.url, { timeouts });
    const entity = 'reborn';
    const listener = await listen(t, a, entity);
    const requestUrl = `${b.url}/${entity}/x`;
    const request = httpRequest(requestUrl, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(requestUrl) }, body: Buffer.from('small'), timeoutMs: 30000 });
    await listener.next(); // the request
    await listener.next(); // its body
    const connected = connectStatus(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`));
    await listener.next(); // the accept
    // A is gone from NATS for good, as a killed process would be; an edge with its node id starts at once.
    link.refuse();
    link.cut();
    const goneAt = Date.now();
    await edge(t, 'reborn-a', nats.url, { timeouts });
    // Before: B's "are you there?" for A was answered by the new edge, and both waited their 20 s (504).
    const answered = await withTimeout(request, 15000, 'the request');
    assert.deepEqual([answered.status, JSON.parse(answered.body.toString()).code], [502, 'ListenerGone']);
    assert.equal(await withTimeout(connected, 15000, 'the connect'), 502);
    assert.ok(Date.now() - goneAt < 10000, `answered ${Date.now() - goneAt} ms after A went`);
  });

  it("a connect NATS gives an edge whose last listener has just gone, before the server heard it leave, is answered, not left to time out", async (t) => {
    const link = await CuttableProxy.start(nats.port, t);
    const timeouts = { acceptMs: 20000 };
    const a = await edge(t, 'leaving-a', `nats://127.0.0.1:${link.port}`, { timeouts, bus: { ...CORE, requestTimeoutMs: 8000 } });
    const b = await edge(t, 'leaving-b', nats.url, { timeouts, bus: { ...CORE, requestTimeoutMs: 8000 } });
    const entity = 'leaving';
    const listener = await listen(t, a, entity);
    // What A sends reaches the server late (its unsubscribe too): the server still gives A the entity's connects.
    link.hold(500);
    listener.ws.terminate();
    await until(() => channelsOf(a).length === 0, 5000, "A's listener gone");
    const startedAt = Date.now();
    const status = await connectStatus(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`));
    // Before: A had dropped the notice with its subscription, and the sender waited out bus.requestTimeoutMs (504).
    assert.equal(status, 404);
    assert.ok(Date.now() - startedAt < 5000, `answered after ${Date.now() - startedAt} ms`);
  });
});
