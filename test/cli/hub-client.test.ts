// The Web PubSub client behind `edge-relay pub` and `sub` (src/cli/hub-client.ts)
// bounds every wait on the relay: a relay that takes the connection and says
// nothing, one that stops answering after `connected`, an ack that never comes.
// Before, each of these held `pub` or `sub` for good (a frozen relay, a path gone
// silent). Short bounds here; the commands use HUB_CLIENT_TIMEOUTS.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { WebSocketServer } from 'ws';
import { HubClient, type HubClientTimeouts } from '../../src/cli/hub-client.ts';
import { watch } from '../../src/cli/sub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const HUB = { name: 'chat', accessKey: 'chat-hub-key-0123456789abcdef' };
const ACCESS = { hub: HUB.name, key: HUB.accessKey };
const SHORT: HubClientTimeouts = { connectMs: 300, ackMs: 300, keepAliveMs: 100 };

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

  it('sub reconnects when its join is not acknowledged, and prints what the next connection brings', async (t) => {
    // The first connection never acks the join; the second acks it and sends one message to the group.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (protocols) => [...protocols][0] ?? false });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    t.after(() => {
      for (const c of wss.clients) c.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    let connections = 0;
    wss.on('connection', (ws) => {
      const n = ++connections;
      ws.send(JSON.stringify({ type: 'system', event: 'connected', connectionId: `c${n}`, userId: null }));
      ws.on('message', (data) => {
        const request = JSON.parse(String(data)) as { type: string; ackId: number; group: string };
        if (n === 1 || request.type !== 'joinGroup') return;
        ws.send(JSON.stringify({ type: 'ack', ackId: request.ackId, success: true }));
        ws.send(JSON.stringify({ type: 'message', from: 'group', fromUserId: null, group: request.group, dataType: 'text', data: 'after the retry' }));
      });
    });
    const printed: string[] = [];
    const port = (wss.address() as AddressInfo).port;
    // Before: `sub` said "cannot join" and ended with 1.
    const watching = watch(`http://127.0.0.1:${port}`, ACCESS, 'g', undefined, 'data', 1, undefined, {}, { timeouts: SHORT, print: (line) => printed.push(line) });
    const code = await withTimeout(watching, 10000, 'sub to print one message');
    assert.equal(code, 0);
    assert.equal(connections, 2);
    assert.deepEqual(printed, ['after the retry\n']);
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
