// The Web PubSub client behind `edge-relay pub` and `sub` (src/cli/hub-client.ts)
// bounds every wait on the relay: a relay that takes the connection and says
// nothing, one that stops answering after `connected`, an ack that never comes.
// Before, each of these held `pub` or `sub` for good (a frozen relay, a path gone
// silent). Short bounds here; the commands use HUB_CLIENT_TIMEOUTS.
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { HubClient, type HubClientTimeouts } from '../../src/cli/hub-client.ts';
import { watch } from '../../src/cli/sub.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { blockEventLoop } from '../helpers/busy-pause.ts';
import { httpRequest } from '../helpers/http.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const HUB = { name: 'chat', accessKey: 'chat-hub-key-0123456789abcdef' };
const ACCESS = { hub: HUB.name, key: HUB.accessKey };
const SHORT: HubClientTimeouts = { connectMs: 300, ackMs: 300, keepAliveMs: 100 };

/** Ends a `watch` with the test, however the test ends (it would otherwise go on reconnecting). */
function stopped(t: TestContext): AbortSignal {
  const controller = new AbortController();
  t.after(() => controller.abort());
  return controller.signal;
}

/**
 * A scripted relay for `sub`: its history endpoint answers read `n` (from 1) after `after` with `page(n, after)`
 * once `delayMs` have passed; its pub/sub endpoint says `connected`, and on a join of connection `n` (from 1) calls
 * `joined(ws, n, group, ack)` (`ack` acknowledges the join). Its port and how many connections it has had.
 */
async function scriptedRelay(
  t: TestContext,
  page: (n: number, after: number) => { delayMs: number; body: Record<string, unknown> },
  joined: (ws: WebSocket, n: number, group: string, ack: () => void) => void,
): Promise<{ port: number; connections: () => number }> {
  let reads = 0;
  const server = createHttpServer((req, res) => {
    const { delayMs, body } = page(++reads, Number(new URL(req.url!, 'http://x').searchParams.get('after')));
    setTimeout(() => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(body));
    }, delayMs);
  });
  const wss = new WebSocketServer({ server, handleProtocols: (protocols) => [...protocols][0] ?? false });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  let connections = 0;
  wss.on('connection', (ws) => {
    const n = ++connections;
    ws.send(JSON.stringify({ type: 'system', event: 'connected', connectionId: `c${n}`, userId: null }));
    ws.on('message', (data) => {
      const request = JSON.parse(String(data)) as { type: string; ackId: number; group: string };
      if (request.type !== 'joinGroup') return;
      joined(ws, n, request.group, () => ws.send(JSON.stringify({ type: 'ack', ackId: request.ackId, success: true })));
    });
  });
  return { port: (server.address() as AddressInfo).port, connections: () => connections };
}

/** A page of history: the messages, `next` after them, and the history's id when given. */
function historyPage(messages: { sequence: number; data: string }[], after: number, historyId?: string): Record<string, unknown> {
  const kept = messages.filter((m) => m.sequence > after).map((m) => ({ ...m, dataType: 'text', fromUserId: null, time: new Date(0).toISOString() }));
  return { messages: kept, next: kept.length ? kept[kept.length - 1].sequence : after, ...(historyId ? { historyId } : {}) };
}

/** A TCP server that takes connections and never writes a byte. */
async function silentServer(t: TestContext): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as AddressInfo).port;
}

/** A WebSocket server that says `connected`, then answers nothing: no ack, no pong. */
async function mutedAfterConnected(t: TestContext): Promise<number> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: false, handleProtocols: (protocols) => [...protocols][0] ?? false });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws) => ws.send(JSON.stringify({ type: 'system', event: 'connected', connectionId: 'c1', userId: null })));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise<void>((r) => wss.close(() => r()));
  });
  return (wss.address() as AddressInfo).port;
}

describe('the pub/sub command-line client', () => {
  it('gives up on a relay that takes the connection and never answers', async (t) => {
    const port = await silentServer(t);
    const startedAt = Date.now();
    const outcome = await withTimeout(
      HubClient.connect(`http://127.0.0.1:${port}`, ACCESS, { roles: [], timeouts: SHORT }).then(
        (c) => (c.close(), 'connected'),
        (err: Error) => err.message,
      ),
      5000,
      'the connect to a silent relay to settle',
    );
    assert.match(outcome, /no answer from the relay within 300 ms/);
    assert.ok(Date.now() - startedAt < 3000, `settled after ${Date.now() - startedAt} ms`);
  });

  it('reports a request with no ack as unacknowledged, and drops a connection on which the relay went silent', async (t) => {
    const port = await mutedAfterConnected(t);
    // Pings every 500 ms: the ack's bound (300 ms) comes first, the drop within about two intervals.
    const client = await withTimeout(HubClient.connect(`http://127.0.0.1:${port}`, ACCESS, { roles: [], timeouts: { ...SHORT, keepAliveMs: 500 } }), 5000, 'connected');
    const closed = new Promise<number>((resolve) => client.onClose((code) => resolve(code)));
    const outcome = await withTimeout(
      client.request({ type: 'joinGroup', group: 'g' }).then(
        () => 'acked',
        (err: Error & { unacknowledged?: boolean }) => `${err.unacknowledged === true} ${err.message}`,
      ),
      5000,
      'the request to settle',
    );
    assert.match(outcome, /^true no ack within 300 ms/);
    // No pong for a ping: dropped (1006), so `sub` reconnects.
    assert.equal(await withTimeout(closed, 5000, 'the silent connection to be dropped'), 1006);
  });

  it('keeps a connection whose relay answered all along when its own process was paused past two pings (before: dropped as silent)', async (t) => {
    // The relay is in this process: at the second ping it pauses the process (a busy loop: no timer, no read), then
    // answers. The client's keep-alive check after the pause runs before that pong is read.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: false, handleProtocols: (protocols) => [...protocols][0] ?? false });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    t.after(() => {
      for (const c of wss.clients) c.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    let pings = 0;
    wss.on('connection', (ws) => {
      ws.send(JSON.stringify({ type: 'system', event: 'connected', connectionId: 'c1', userId: null }));
      ws.on('ping', (data) => {
        if (++pings === 2) blockEventLoop(600);
        ws.pong(data);
      });
      ws.on('message', (data) => {
        const request = JSON.parse(String(data)) as { ackId: number };
        ws.send(JSON.stringify({ type: 'ack', ackId: request.ackId, success: true }));
      });
    });
    const client = await withTimeout(HubClient.connect(`http://127.0.0.1:${(wss.address() as AddressInfo).port}`, ACCESS, { roles: [], timeouts: SHORT }), 5000, 'connected');
    t.after(() => client.close());
    let closedWith: number | undefined;
    client.onClose((code) => (closedWith = code));
    await until(() => pings >= 4 || closedWith !== undefined, 5000, 'two pings after the pause');
    assert.equal(closedWith, undefined, 'the connection dropped');
    await withTimeout(client.request({ type: 'joinGroup', group: 'g' }), 5000, 'a join on the connection');
  });

  it('sub reconnects when its join is not acknowledged, and prints what the next connection brings', async (t) => {
    // The first connection never acks the join; the second acks it and sends one message to the group.
    const relay = await scriptedRelay(
      t,
      (_n, after) => ({ delayMs: 0, body: historyPage([], after) }),
      (ws, n, group, ack) => {
        if (n === 1) return;
        ack();
        ws.send(JSON.stringify({ type: 'message', from: 'group', fromUserId: null, group, dataType: 'text', data: 'after the retry' }));
      },
    );
    const { port } = relay;
    const printed: string[] = [];
    // Before: `sub` said "cannot join" and ended with 1.
    const watching = watch(`http://127.0.0.1:${port}`, ACCESS, 'g', undefined, 'data', 1, undefined, {}, { timeouts: SHORT, print: (line) => printed.push(line), signal: stopped(t) });
    const code = await withTimeout(watching, 10000, 'sub to print one message');
    assert.equal(code, 0);
    assert.equal(relay.connections(), 2);
    assert.deepEqual(printed, ['after the retry\n']);
  });

  it('sub --from-start: the history read of a connection that closed meanwhile leaves the next one its live messages', async (t) => {
    // A scripted relay. Messages 1..3 are kept at first, 4 and 5 from 700 ms after the first history read began.
    // Connection 1 is closed (1012) right after its join while its history read takes 600 ms; connection 2's
    // read takes 1.2 s, and 5 reaches it live at 800 ms. Before: the first read, ending on no connection,
    // took the second connection's held live messages: 5 was printed before 4, and 4 never.
    let firstRead = 0;
    const { port } = await scriptedRelay(
      t,
      (n, after) => {
        firstRead ||= Date.now();
        const upTo = n === 1 ? 3 : 5;
        return { delayMs: n === 1 ? 600 : n === 2 ? 1200 : 0, body: historyPage([1, 2, 3, 4, 5].filter((s) => s <= upTo).map((s) => ({ sequence: s, data: `m${s}` })), after) };
      },
      (ws, n, group, ack) => {
        ack();
        if (n === 1) setTimeout(() => ws.close(1012, 'draining'), 50);
        else setTimeout(() => ws.send(JSON.stringify({ type: 'message', from: 'group', group, dataType: 'text', data: 'm5', sequence: 5 })), Math.max(0, firstRead + 800 - Date.now()));
      },
    );
    const printed: string[] = [];
    const watching = watch(`http://127.0.0.1:${port}`, ACCESS, 'g', undefined, 'data', 5, 0, {}, { timeouts: SHORT, print: (line) => printed.push(line.trim()), signal: stopped(t) });
    assert.equal(await withTimeout(watching, 10000, 'sub to print five messages'), 0);
    assert.deepEqual(printed, ['m1', 'm2', 'm3', 'm4', 'm5']);
  });

  it('sub --from-start: a history that started over, first seen by a connection that closed meanwhile, is printed from its start by the next', async (t) => {
    // A scripted relay: history A holds old-1..3; then history B (its numbering started over) holds new-1..4.
    // Connection 1 reads A and closes; connection 2 closes while its read of B (100 ms) is answered, before connection 3 (at least 125 ms later) reads B.
    // Before: connection 2's read stored B's id and kept the old cursor: connection 3 saw no restart, new-1..3 lost.
    const { port } = await scriptedRelay(
      t,
      (n, after) => {
        const [historyId, names] = n === 1 ? ['A', ['old-1', 'old-2', 'old-3']] : ['B', ['new-1', 'new-2', 'new-3', 'new-4']];
        return { delayMs: n === 2 ? 100 : 0, body: historyPage(names.map((data, i) => ({ sequence: i + 1, data })), after, historyId) };
      },
      (ws, n, _group, ack) => {
        ack();
        if (n === 1) setTimeout(() => ws.close(1012, 'draining'), 100);
        if (n === 2) setTimeout(() => ws.close(1012, 'draining'), 20);
      },
    );
    const printed: string[] = [];
    const watching = watch(`http://127.0.0.1:${port}`, ACCESS, 'g', undefined, 'data', 7, 0, {}, { timeouts: SHORT, print: (line) => printed.push(line.trim()), signal: stopped(t) });
    assert.equal(await withTimeout(watching, 10000, 'sub to print seven messages'), 0);
    assert.deepEqual(printed, ['old-1', 'old-2', 'old-3', 'new-1', 'new-2', 'new-3', 'new-4']);
  });

  it('sub tries again when refused for a limit of the moment (429), not only when the relay is away', async (t) => {
    // The first two upgrades are refused 429 (too many new connections from this address); the third is taken.
    let upgrades = 0;
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (protocols) => [...protocols][0] ?? false,
      verifyClient: (_info, done) => (++upgrades <= 2 ? done(false, 429, 'Too many new connections from this address; retry later') : done(true)),
    });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    t.after(() => {
      for (const c of wss.clients) c.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    wss.on('connection', (ws) => {
      ws.send(JSON.stringify({ type: 'system', event: 'connected', connectionId: 'c', userId: null }));
      ws.on('message', (data) => {
        const request = JSON.parse(String(data)) as { type: string; ackId: number; group: string };
        if (request.type !== 'joinGroup') return;
        ws.send(JSON.stringify({ type: 'ack', ackId: request.ackId, success: true }));
        ws.send(JSON.stringify({ type: 'message', from: 'group', group: request.group, dataType: 'text', data: 'let in' }));
      });
    });
    const printed: string[] = [];
    const port = (wss.address() as AddressInfo).port;
    // Before: "the relay refused the connection: 429 ...", and sub ended with 1.
    const watching = watch(`http://127.0.0.1:${port}`, ACCESS, 'g', undefined, 'data', 1, undefined, {}, { timeouts: SHORT, print: (line) => printed.push(line), signal: stopped(t) });
    assert.equal(await withTimeout(watching, 10000, 'sub to print after the refusals'), 0);
    assert.deepEqual([upgrades, printed], [3, ['let in\n']]);
  });

  it('sub --from-start prints what a relay keeping history in memory holds after a restart (its numbering started over)', async (t) => {
    const overrides = { pubsub: { hubs: [{ ...HUB, history: { maxMessages: 100 } }] } };
    const first = await startTestRelay(t, overrides);
    const port = first.port;
    const send = async (url: string, data: string) => {
      const target = `${url}/api/hubs/${HUB.name}/groups/g/:send`;
      const res = await httpRequest(target, { method: 'POST', headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: target }, HUB.accessKey, 60)}` }, body: Buffer.from(data) });
      assert.equal(res.status, 202);
    };
    for (const data of ['before-1', 'before-2', 'before-3']) await send(first.url, data);
    const printed: string[] = [];
    const watching = watch(first.url, ACCESS, 'g', undefined, 'data', 6, 0, {}, { timeouts: SHORT, print: (line) => printed.push(line.trim()), signal: stopped(t) });
    await until(() => printed.length === 3, 5000, 'the history before the restart');
    await first.close();
    const second = await startTestRelay(t, { ...overrides, listen: { host: '127.0.0.1', port } });
    // Kept by the new relay before sub is back, and live after: numbered 1, 2, 3 again.
    await send(second.url, 'after-1');
    await send(second.url, 'after-2');
    await until(() => printed.length >= 5, 10000, 'sub back');
    await send(second.url, 'after-3');
    // Before: after-1..3 were taken for before-1..3, printed already, and dropped without a word.
    assert.equal(await withTimeout(watching, 10000, 'sub to print six'), 0);
    assert.deepEqual(printed, ['before-1', 'before-2', 'before-3', 'after-1', 'after-2', 'after-3']);
  });

  it('sub --after a position past the end of the history reads it from its start, and prints live messages (before: dropped without a word)', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ ...HUB, history: { maxMessages: 100 } }] } });
    const send = async (data: string) => {
      const target = `${relay.url}/api/hubs/${HUB.name}/groups/g/:send`;
      const res = await httpRequest(target, { method: 'POST', headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: target }, HUB.accessKey, 60)}` }, body: Buffer.from(data) });
      assert.equal(res.status, 202);
    };
    for (const data of ['kept-1', 'kept-2', 'kept-3']) await send(data);
    const printed: string[] = [];
    // A position from another numbering of the history (a relay keeping it in memory restarted since sub last ran).
    const watching = watch(relay.url, ACCESS, 'g', undefined, 'data', 5, 100, {}, { timeouts: SHORT, print: (line) => printed.push(line.trim()), signal: stopped(t) });
    await until(() => printed.length === 3, 5000, 'the history from its start');
    await send('live-4');
    await send('live-5');
    assert.equal(await withTimeout(watching, 10000, 'sub to print five'), 0);
    assert.deepEqual(printed, ['kept-1', 'kept-2', 'kept-3', 'live-4', 'live-5']);
  });

  it('keeps a connection to a relay that answers its pings', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [HUB] } });
    const client = await withTimeout(HubClient.connect(relay.url, ACCESS, { roles: ['webpubsub.joinLeaveGroup.g'], timeouts: SHORT }), 5000, 'connected');
    t.after(() => client.close());
    let closedWith: number | undefined;
    client.onClose((code) => (closedWith = code));
    // Ten keep-alive intervals: each ping answered by the relay's pong.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(closedWith, undefined);
    await withTimeout(client.request({ type: 'joinGroup', group: 'g' }), 5000, 'the ack');
  });
});
