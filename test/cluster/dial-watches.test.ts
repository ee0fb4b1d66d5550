// A listener's edge watches a listener it told to dial another edge (a connect,
// a request fetched by rendezvous), so that edge hears at once when the
// listener drops (src/hybrid/cluster-link.ts, RemoteDialWatch). The sender's
// edge says `hc.done` once the listener dialed or the sender left, and the
// watch ends then. Before: each watch held a timer and an entry on the
// listener's control channel for timeouts.acceptMs (httpResponseMs for a
// fetch), and a listener that dropped sent one `hc.failed` per watch, for
// connects long since spliced. Two edges in this process on one nats-server.
// And before the watches, what they rest on: a listener told it is online is
// one that senders on the other edge reach (its edge's subscription for the
// entity is on the NATS server before the 101), so no test here retries.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomUUID } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { connect } from 'nats';
import { encodeEdgeMessage } from '../../src/bus/messages.ts';
import { Subjects } from '../../src/bus/subjects.ts';
import WebSocket from 'ws';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy } from '../helpers/pubsub.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

/** Long enough that a watch left to its timeout outlives every wait below. */
const timeouts = { acceptMs: 30000, httpResponseMs: 30000, shutdownMs: 500 };


/** Entries on the control channels of `relay`'s listeners: watches and exchanges still waiting. */
function waiting(relay: RunningRelay): number {
  let n = 0;
  for (const channel of relay.hybrid.listeners.all()) n += channel.exchanges.size;
  return n;
}

/** A sender's WebSocket through `url`, or the error its upgrade failed with (its `status`). */
function dialSender(url: string): Promise<WebSocket | (Error & { status?: number })> {
  return openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } }).catch((err: Error & { status?: number }) => err);
}

describe("a listener's edge watching a listener told to dial another edge", () => {
  // One nats-server and two edges for every test; each test has an entity of its own.
  const cleanup = new Cleanup();
  let a: RunningRelay, b: RunningRelay;
  let natsUrl: string;
  let natsMonitorPort: number;
  /** A's link to NATS, which a test can make slow one way (A to the server). */
  let aLink: CuttableProxy;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    natsUrl = nats.url;
    natsMonitorPort = nats.monitorPort;
    aLink = await CuttableProxy.start(nats.port, cleanup);
    a = await startTestRelay(cleanup, edgeOverrides('edge-a', [`nats://127.0.0.1:${aLink.port}`], { timeouts }));
    b = await startTestRelay(cleanup, edgeOverrides('edge-b', [nats.url], { timeouts }));
    // An edge serves before it reaches NATS (its own listeners and senders); these tests are about both.
    await until(() => a.bus.connected && b.bus.connected, 10000, 'both edges on NATS');
  });
  after(() => cleanup.run());

  /** A listener on A for `entity` (told it is online), at once a sender through B, and the listener's leg dialed: spliced at B. */
  async function connectAcross(t: { after(fn: () => unknown): void }, entity: string): Promise<void> {
    const listenUrl = wsUrl(a.url, `/$hc/${entity}?sb-hc-action=listen`);
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const sender = dialSender(wsUrl(b.url, `/$hc/${entity}?sb-hc-action=connect`));
    const { accept } = await listener.next<{ accept: { address: string } }>();
    const leg = new WebSocket(accept.address);
    t.after(() => leg.terminate());
    await withTimeout(new Promise((r) => leg.once('open', r)), 5000, 'rendezvous leg');
    const ws = await sender;
    assert.ok(ws instanceof WebSocket, String(ws));
    t.after(() => ws.terminate());
  }

  it("tells a listener it is online only once a sender through another edge reaches it (A's link to NATS slow)", async (t) => {
    // What A sends NATS waits 300 ms: its subscription for the entity reaches the server that much later.
    aLink.hold(300);
    t.after(() => aLink.hold(0));
    // Before: the 101 came at once and a sender through B, at once too, was refused 404 NoListener.
    await connectAcross(t, 'online');
  });

  it('leaves nothing behind for a listener whose upgrade fails after the wait (a malformed handshake)', async (t) => {
    const path = '/$hc/malformed?sb-hc-action=listen';
    const answer = await rawUpgrade(t, a.port, path, { 'Sec-WebSocket-Key': '', ServiceBusAuthorization: tokenFor(wsUrl(a.url, path)) });
    assert.equal(answer.status, 400);
    // Before: A stayed subscribed to the entity (NATS could pick it for a sender, who then got NoListener) and kept it auto-created.
    const subject = new Subjects('relay').hybridEntity('malformed');
    const subscribed = async () => {
      const subsz = await (await fetch(`http://127.0.0.1:${natsMonitorPort}/subsz?subs=1`, { signal: AbortSignal.timeout(2000) })).json();
      return (subsz as { subscriptions_list?: { subject: string }[] }).subscriptions_list?.some((s) => s.subject === subject) ?? false;
    };
    await untilAnswered(async () => !(await subscribed()), 5000, "A's subscription for the entity to go");
    const status = await httpRequest(`${a.url}/$relay/status`, { headers: { authorization: tokenFor(`${a.url}/`) } });
    const nodes = JSON.parse(status.body.toString()).nodes as { entities: { name: string }[] }[];
    assert.ok(nodes.length > 0 && nodes.every((n) => !n.entities.some((e) => e.name === 'malformed')), status.body.toString());
  });

  it('stops once the listener dialed the connect', async (t) => {
    await connectAcross(t, 'watched');
    // Before: the watch stayed on A's control channel for acceptMs (30 s).
    await until(() => waiting(a) === 0, 5000, `A's watch to end (${waiting(a)} left)`);
  });

  it('stops once the sender left before the listener dialed', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/left?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = wsUrl(b.url, '/$hc/left?sb-hc-action=connect');
    const sender = new WebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    sender.on('error', () => {});
    t.after(() => sender.terminate());
    await listener.next();
    await until(() => waiting(a) === 1, 5000, "A's watch");
    sender.terminate();
    await until(() => waiting(a) === 0, 5000, `A's watch to end (${waiting(a)} left)`);
  });

  it('forgets a request sent whole to the listener once its sender left, and one the listener answered', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/abandoned?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = `${b.url}/abandoned/x`;
    const sender = netConnect(b.port, '127.0.0.1');
    sender.on('error', () => {});
    t.after(() => sender.destroy());
    sender.write(`POST /abandoned/x HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(url)}\r\nContent-Length: 5\r\n\r\nsmall`);
    const { request } = await listener.next<{ request: { id: string; requestTarget?: string; body: boolean } }>();
    assert.equal(request.requestTarget, '/abandoned/x', 'sent whole on the control channel');
    assert.equal(String(await listener.next()), 'small', 'its body, in the frame after');
    await until(() => waiting(a) === 1, 5000, "A's relay of the request");
    sender.destroy();
    // Before: A kept the request (a timer and an entry on the channel) for httpResponseMs (30 s) after B had forgotten it.
    await until(() => waiting(a) === 0, 5000, `A to forget the request (${waiting(a)} left)`);

    // Answered: gone on both sides, and B owes A nothing (no hc.done for what A forgot as it answered).
    const answered = httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url) }, body: Buffer.from('small'), timeoutMs: 10000 });
    const next = await listener.next<{ request: { id: string } }>();
    await listener.next();
    listener.ws.send(JSON.stringify({ response: { requestId: next.request.id, statusCode: 200, body: false } }));
    assert.equal((await answered).status, 200);
    assert.equal(waiting(a), 0);
  });

  it('drains an edge whose listener still holds a request routed from another edge: no crash, the sender hears 502', async (t) => {
    // A third edge, closed by the test; its listener never answers.
    const c = await startTestRelay(t, edgeOverrides('edge-c', [natsUrl], { timeouts: { ...timeouts, shutdownMs: 300 } }));
    await until(() => c.bus.connected, 10000, 'C on NATS');
    const listenUrl = wsUrl(c.url, '/$hc/drained?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = `${b.url}/drained/x`;
    const pending = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 10000 });
    await listener.next();
    // An edge process died here (exit 70) when the listener's channel closed in the last part of the NATS drain: its
    // answer to the sender threw CONNECTION_DRAINING (timing-dependent; test/bus/nats-bus.test.ts makes it certain).
    await withTimeout(c.close(), 5000, "C's drain");
    const answered = await pending;
    assert.equal(answered.status, 502, answered.body.toString());
  });

  it('stops once the listener fetched and answered a large request', async (t) => {
    await startHycoHttpsListener(t, a.url, (req, res) => {
      req.resume();
      req.on('end', () => res.end('taken'));
    }, 'fetched');
    const url = `${b.url}/fetched/upload`;
    // Of unknown length (chunked): the listener fetches it over a rendezvous at B.
    const got = await httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url), 'transfer-encoding': 'chunked' }, body: [Buffer.from('part')], timeoutMs: 10000 });
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), 'taken');
    await until(() => waiting(a) === 0, 5000, `A's watch to end (${waiting(a)} left)`);
  });

  it('drops a routed request that arrives after the sender\'s edge gave up on it (it answered 504 RouteTimeout)', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/late?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    // Another edge's notices, as they would come out of NATS's buffers after a stall: one expired 5 s ago, then one in time.
    const nc = await connect({ servers: natsUrl });
    t.after(() => nc.close());
    const notice = (id: string, expiresAt: number) =>
      encodeEdgeMessage({ op: 'hc.request', entity: 'late', node: 'edge-b', expiresAt, request: { address: `ws://127.0.0.1:1/$hc/late?sb-hc-action=request&sb-hc-id=${id}`, id, requestTarget: '/late/x', method: 'POST', body: false } });
    const subject = new Subjects('relay').hybridEntity('late');
    await untilAnswered(() => nc.request(subject, notice(randomUUID(), Date.now() + 5000), { timeout: 1000 }).then(() => true, () => false), 5000, "A's interest in the entity");
    await listener.next();
    const [stale, fresh] = [randomUUID(), randomUUID()];
    nc.publish(subject, notice(stale, Date.now() - 5000));
    nc.publish(subject, notice(fresh, Date.now() + 5000));
    // Before: the listener got the stale one too, and ran a request whose sender had its 504 already.
    const { request } = await listener.next<{ request: { id: string } }>();
    assert.equal(request.id, fresh);
  });

  it('asks once more, a moment later, when no edge answered: an edge whose interest arrives just after is reached', async (t) => {
    const nc = await connect({ servers: natsUrl });
    t.after(() => nc.close());
    let asked = 0;
    const lateEdge = async () => {
      nc.subscribe(new Subjects('relay').hybridEntity('late-edge'), {
        queue: 'listeners',
        callback: (_err, m) => {
          asked++;
          m.respond(encodeEdgeMessage({ op: 'hc.routed', ok: false, code: 'NoListener' }));
        },
      });
      await nc.flush();
    };
    // An edge whose subscription reaches B's NATS server just after B first asked (B's own bus is watched for
    // that moment), as one on another server of a cluster does when its listener has just come online.
    const request = b.bus.request.bind(b.bus);
    b.bus.request = async (...args: Parameters<typeof request>) => {
      try {
        return await request(...args);
      } catch (err) {
        if (asked === 0 && (err as { code?: string }).code === 'NoResponders') await lateEdge();
        throw err;
      }
    };
    t.after(() => (b.bus.request = request));
    const url = `${b.url}/late-edge/x`;
    assert.equal((await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) } })).status, 404);
    // Before: B answered 404 on the first "no responders" and never asked it.
    assert.ok(asked > 0, 'B asked again and reached the late edge');
  });

  it('routes again when the edge NATS picked has just lost its last listener (its NoListener is not the last word)', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/again?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    listener.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const { request } = JSON.parse(String(data)) as { request?: { id: string } };
      if (request) listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: false } }));
    });
    const url = `${b.url}/again/x`;
    // Another edge in the queue group whose last listener has just gone: it answers NoListener to the first notice it gets, then leaves.
    const nc = await connect({ servers: natsUrl });
    t.after(() => nc.close());
    let refused = 0;
    const edgeWithoutListener = nc.subscribe(new Subjects('relay').hybridEntity('again'), {
      queue: 'listeners',
      callback: (_err, m) => {
        refused++;
        m.respond(encodeEdgeMessage({ op: 'hc.routed', ok: false, code: 'NoListener' }));
        edgeWithoutListener.unsubscribe();
      },
    });
    await nc.flush();
    // Before: the sender NATS sent to that edge got 404 NoListener, though A had a listener all along.
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) } })).status);
    assert.equal(refused, 1, 'the leaving edge was asked');
    assert.deepEqual(statuses, Array(12).fill(200));
  });
});
