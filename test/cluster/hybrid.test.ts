// Hybrid connections across edge nodes (issue 4, item 2): three nats-server
// processes clustered, three edge processes, Microsoft's hyco-ws and
// hyco-https as listeners, ws 8 and plain HTTP as senders.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { Cleanup } from '../helpers/cleanup.ts';
import { startCluster, type Edge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener, startHycoWsListener } from '../helpers/hyco.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const ACCEPT_MS = 20000;

function senderUrl(edge: Edge, entity = 'echo'): string {
  return wsUrl(edge.url, `/$hc/${entity}?sb-hc-action=connect`);
}

/** Opens a sender WebSocket: the socket, or the status and error code the upgrade failed with. */
function dial(url: string, token?: string): Promise<{ ws?: WebSocket; status: number; code?: string }> {
  const ws = new WebSocket(url, { headers: token ? { ServiceBusAuthorization: token } : {} });
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve({ ws, status: 101 }));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, code: JSON.parse(body || '{}').code }));
      });
      ws.once('error', reject);
    }),
    ACCEPT_MS + 5000,
    'sender upgrade',
  );
}

/**
 * Until the listener's node is known to the sender's NATS server (interest
 * travels between servers), the sender's edge hears nobody: NoListener, or
 * EntityNotFound for an entity the listener auto-created on its own edge.
 */
const notYetRoutable = (code: string | undefined) => code === 'NoListener' || code === 'EntityNotFound';

/** Dials until the listener's node is known to the sender's edge. */
async function dialRoutable(url: string, token?: string): Promise<WebSocket> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const got = await dial(url, token);
    if (got.ws) return got.ws;
    if (!notYetRoutable(got.code) || Date.now() > deadline) throw new Error(`sender refused: ${got.status} ${got.code}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function echo(ws: any): void {
  ws.on('message', (data: unknown, flags: { binary?: boolean }) => ws.send(data, { binary: !!flags?.binary }));
}

function nextMessage(ws: WebSocket): Promise<Buffer> {
  return withTimeout(new Promise((resolve) => ws.once('message', (d: Buffer) => resolve(d))), 5000, 'message');
}

describe('hybrid connections across nodes', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge, c: Edge;
  before(async () => {
    const cluster = await startCluster(cleanup, 3, { timeouts: { acceptMs: ACCEPT_MS, keepAliveIntervalMs: 500, idleMs: 10000 } });
    [a, b, c] = cluster.edges;
  });
  after(() => cleanup.run());

  it('a sender on B reaches a listener on A, which is told to dial B; B splices', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = senderUrl(b);
    const pendingSender = dialRoutable(url, tokenFor(url));
    const { accept } = await listener.next<{ accept: { address: string; id: string; connectHeaders: Record<string, string> } }>();
    assert.equal(new URL(accept.address).port, String(b.port), 'the rendezvous address names the sender\'s node');
    assert.equal(accept.connectHeaders.servicebusauthorization, undefined);
    const leg = new WebSocket(accept.address);
    t.after(() => leg.terminate());
    await withTimeout(new Promise((r) => leg.once('open', r)), 5000, 'rendezvous leg');
    const sender = await pendingSender;
    t.after(() => sender.terminate());
    sender.send('ping from the cloud');
    assert.equal(String(await nextMessage(leg)), 'ping from the cloud');
    leg.send(Buffer.from([1, 2, 3]));
    assert.deepEqual([...(await nextMessage(sender))], [1, 2, 3]);
  });

  it('hyco-ws on A echoes a sender on C, bulk frames included', async (t) => {
    await startHycoWsListener(t, a.url, echo, 'wsonly');
    const url = senderUrl(c, 'wsonly');
    const sender = await dialRoutable(url, tokenFor(url));
    t.after(() => sender.terminate());
    const payloads = [randomBytes(10), randomBytes(1 << 20), randomBytes(70000)];
    const got: Buffer[] = [];
    const done = new Promise<void>((resolve) =>
      sender.on('message', (d: Buffer) => {
        got.push(d);
        if (got.length === payloads.length) resolve();
      }),
    );
    for (const p of payloads) sender.send(p);
    await withTimeout(done, 10000, 'echoes');
    assert.deepEqual(got, payloads);
  });

  it('hyco-https on A answers HTTP requests sent to B: small bodies on the bus, large ones by rendezvous at B', async (t) => {
    await startHycoHttpsListener(t, a.url, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        res.setHeader('x-echo-length', String(body.length));
        res.end(Buffer.concat([Buffer.from(`${req.method} ${req.url} `), body]));
      });
    }, 'web');
    const url = `${b.url}/web/path?q=1`;
    const token = tokenFor(url);
    let first = await httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: token }, body: Buffer.from('hello') });
    for (const deadline = Date.now() + 5000; first.status === 404 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 20));
      first = await httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: token }, body: Buffer.from('hello') });
    }
    assert.equal(first.status, 200);
    assert.equal(first.body.toString(), 'POST /web/path?q=1 hello');
    const big = randomBytes(300 * 1024);
    const large = await httpRequest(url, { method: 'PUT', headers: { ServiceBusAuthorization: token }, body: big });
    assert.equal(large.status, 200);
    assert.equal(large.headers['x-echo-length'], String(big.length));
    assert.deepEqual(large.body.subarray(-big.length), big);
  });

  it('listeners on A and C for one entity both get a share of senders arriving at B', async (t) => {
    const counts = { a: 0, c: 0 };
    await startHycoWsListener(t, a.url, (ws) => { counts.a++; echo(ws); }, 'shared');
    await startHycoWsListener(t, c.url, (ws) => { counts.c++; echo(ws); }, 'shared');
    const url = senderUrl(b, 'shared');
    for (let i = 0; i < 30; i++) {
      const ws = await dialRoutable(url, tokenFor(url));
      ws.send(`n${i}`);
      assert.equal(String(await nextMessage(ws)), `n${i}`);
      ws.terminate();
    }
    assert.equal(counts.a + counts.c, 30);
    assert.ok(counts.a > 0 && counts.c > 0, `both nodes' listeners served: A ${counts.a}, C ${counts.c}`);
  });

  it('a listener on A that drops its control channel after the accept fails the sender on B at once (502 ListenerGone)', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/dropper?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = senderUrl(b, 'dropper');
    const started = Date.now();
    const outcome = (async () => {
      for (const deadline = Date.now() + 5000; ; ) {
        const got = await dial(url, tokenFor(url));
        if (!notYetRoutable(got.code) || Date.now() > deadline) return got;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await listener.next();
    listener.close();
    const got = await outcome;
    got.ws?.terminate();
    assert.deepEqual([got.status, got.code], [502, 'ListenerGone']);
    assert.ok(Date.now() - started < ACCEPT_MS / 2, 'answered long before the accept timeout');
  });

  it('a listener on A that drops its control channel before fetching a large request from B fails the sender at once (502 ListenerGone)', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/fetcher?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = `${b.url}/fetcher/upload`;
    const started = Date.now();
    // Of unknown length (chunked): the listener is told to fetch it over a rendezvous at B.
    const post = () => httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url), 'transfer-encoding': 'chunked' }, body: [Buffer.from('part')], timeoutMs: 20000 });
    const outcome = (async () => {
      for (const deadline = Date.now() + 5000; ; ) {
        const got = await post();
        const code = JSON.parse(got.body.toString() || '{}').code as string | undefined;
        if (!notYetRoutable(code) || Date.now() > deadline) return { status: got.status, code };
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const { request } = await listener.next();
    assert.equal(request.requestTarget, undefined, 'a notice to fetch the request');
    listener.close();
    // Before: 504 ResponseTimeout after httpResponseMs (60 s; the wait above gives up at 20 s).
    assert.deepEqual(await outcome, { status: 502, code: 'ListenerGone' });
    assert.ok(Date.now() - started < 10000, 'answered long before the response timeout');
  });

  it("a sender on B with a path suffix, a long query and a tracking id reaches a listener on A, which is told all three", async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/suffixed?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const long = 'x'.repeat(3000);
    const url = senderUrl(b, 'suffixed').replace('?', `/room/7?q=${long}&`) + '&sb-hc-id=trace-b';
    const dialing = dialRoutable(url, tokenFor(url));
    dialing.catch(() => {});
    const { accept } = await listener.next<{ accept: { address: string; id: string } }>();
    const address = new URL(accept.address);
    assert.equal(address.pathname, '/$hc/suffixed/room/7');
    assert.equal(address.searchParams.get('q'), long);
    assert.equal(accept.id, 'trace-b');
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await dialing;
    t.after(() => sender.terminate());
  });

  it("a listener on A answering a request from B with a response that fails its schema fails that request (502 BadListenerResponse), and keeps its channel", async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/garbler?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const url = `${b.url}/garbler/x`;
    const outcome = (async () => {
      for (const deadline = Date.now() + 5000; ; ) {
        const got = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 20000 });
        const code = JSON.parse(got.body.toString() || '{}').code as string | undefined;
        if (!notYetRoutable(code) || Date.now() > deadline) return { status: got.status, code };
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const { request } = await listener.next();
    listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 'OK' } }));
    // Before: the channel closed 1008 and B's sender got 502 ListenerGone.
    assert.deepEqual(await outcome, { status: 502, code: 'BadListenerResponse' });
    const next = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    const again = (await listener.next()).request;
    listener.ws.send(JSON.stringify({ response: { requestId: again.id, statusCode: 200 } }));
    assert.equal((await next).status, 200, 'the same control channel answers the next request');
  });

  it('with no listener anywhere the sender gets the one-node answer at once, not the accept timeout', async () => {
    const url = senderUrl(b, 'echo');
    const started = Date.now();
    const refused = await dial(url, tokenFor(url));
    assert.equal(refused.status, 404);
    assert.equal(refused.code, 'NoListener');
    assert.ok(Date.now() - started < ACCEPT_MS, 'answered before the accept timeout');
    const unknown = senderUrl(b, 'never-created');
    const missing = await dial(unknown, tokenFor(unknown));
    assert.equal(missing.status, 404);
    assert.equal(missing.code, 'EntityNotFound');
    const http = await httpRequest(`${c.url}/echo/x`, { headers: { ServiceBusAuthorization: tokenFor(`${c.url}/echo/x`) } });
    assert.equal(http.status, 404);
    assert.equal(JSON.parse(http.body.toString()).code, 'NoListener');
  });

  // Last: it kills edge A.
  it('a connect and a request waiting on a listener whose edge dies fail at once (502 ListenerGone), not at their timeouts', async (t) => {
    const listenUrl = wsUrl(a.url, '/$hc/doomed?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    // The listener hears of both and answers neither.
    const connectUrl = senderUrl(b, 'doomed');
    const connect = (async () => {
      for (const deadline = Date.now() + 5000; ; ) {
        const got = await dial(connectUrl, tokenFor(connectUrl));
        if (!notYetRoutable(got.code) || Date.now() > deadline) return got;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await listener.next();
    const requestUrl = `${b.url}/doomed/x`;
    const request = httpRequest(requestUrl, { headers: { ServiceBusAuthorization: tokenFor(requestUrl) }, timeoutMs: 30000 });
    await listener.next();
    const killedAt = Date.now();
    await a.kill();
    const [connected, answered] = await Promise.all([connect, request]);
    connected.ws?.terminate();
    // Before: 504 AcceptTimeout after acceptMs (20 s here) and 504 ResponseTimeout after httpResponseMs (60 s).
    assert.deepEqual([connected.status, connected.code], [502, 'ListenerGone']);
    assert.deepEqual([answered.status, JSON.parse(answered.body.toString()).code], [502, 'ListenerGone']);
    assert.ok(Date.now() - killedAt < 5000, `answered ${Date.now() - killedAt} ms after the kill`);
  });
});
