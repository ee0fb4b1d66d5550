// A listener's close frame ends its control channel at once (RFC 6455 5.5.1:
// once an endpoint has both sent and received a close frame it considers the
// WebSocket connection closed), not when its TCP connection has gone too: the
// listener leaves the entity, a sender is told NoListener, and what it held
// fails (502 ListenerGone) or goes on to another listener, even when the
// listener keeps its side of the TCP connection open after its close (the
// relay then ends its own and resets the connection at
// timeouts.closeHandshakeMs). Before, all of that waited for the TCP
// connection's close, up to timeouts.closeHandshakeMs (5 s). hyco-ws and
// hyco-https end their side at once, so with them nothing changed.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import WebSocket from 'ws';
import { describe, it } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { httpRequest } from '../helpers/http.ts';
import { listenOn, openWebSocket } from '../helpers/raw-listener.ts';
import { maskedFrame, parseServerFrames, WS_KEY } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, waitEvent, withTimeout } from '../helpers/wait.ts';

type Relay = Awaited<ReturnType<typeof startTestRelay>>;

/**
 * The relays here wait this long for a listener's end of a closing connection (timeouts.closeHandshakeMs): what a
 * closing listener's work waited for before. Far above AT_ONCE_MS, so a loaded machine does not blur the two.
 */
const CLOSE_HANDSHAKE_MS = 20_000;
const RELAY = { timeouts: { closeHandshakeMs: CLOSE_HANDSHAKE_MS } };
/** At once: well under CLOSE_HANDSHAKE_MS. */
const AT_ONCE_MS = 5000;

const closePayload = (code: number, reason = '') => Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);

/**
 * A listener on `entity` over a raw TCP connection that never ends its side by itself (allowHalfOpen: it keeps the
 * connection open after the relay's FIN), as a listener behind a proxy that holds half-closed connections would.
 */
async function halfOpenListener(t: Pick<TestContext, 'after'>, relay: Relay, entity = 'echo') {
  const path = `/$hc/${entity}?sb-hc-action=listen`;
  const socket: Socket = connect({ port: relay.port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => socket.destroy());
  cleanupFor(t).after(() => socket.destroy());
  await withTimeout(new Promise((resolve) => socket.once('connect', resolve)), 5000, 'TCP connect');
  let bytes = Buffer.alloc(0);
  let ended = false;
  socket.on('data', (chunk: Buffer) => (bytes = Buffer.concat([bytes, chunk])));
  socket.on('end', () => (ended = true));
  const token = tokenFor(wsUrl(relay.url, path));
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${relay.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\nServiceBusAuthorization: ${token}\r\n\r\n`,
  );
  await until(() => bytes.includes('\r\n\r\n'), 5000, 'the 101');
  assert.match(bytes.toString('latin1'), /^HTTP\/1\.1 101 /);
  const frames = () => parseServerFrames(bytes.subarray(bytes.indexOf('\r\n\r\n') + 4)).frames;
  return {
    socket,
    frames,
    /** Control messages (text frames) the relay sent, parsed. */
    messages: () => frames().filter((f) => f.opcode === 0x1).map((f) => JSON.parse(f.payload.toString())),
    ended: () => ended,
  };
}

const listenersOf = (relay: Relay, entity = 'echo') => relay.hybrid.listeners.counts().get(entity) ?? 0;

describe('a listener\'s close frame ends its control channel at once', () => {
  it('the relay answers it, ends its side, and takes the listener off the entity without waiting for the listener\'s FIN', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const listener = await halfOpenListener(t, relay);
    await until(() => listenersOf(relay) === 1, 5000, 'the listener online');
    listener.socket.write(maskedFrame(0x8, closePayload(1000, 'bye')));
    const started = Date.now();
    await until(() => listener.ended(), AT_ONCE_MS, 'the relay to end its side');
    const close = listener.frames().find((f) => f.opcode === 0x8);
    assert.deepEqual(close?.payload, closePayload(1000, 'bye'), 'its close echoed');
    await until(() => listenersOf(relay) === 0, AT_ONCE_MS, 'the relay to drop the listener');
    const url = `${relay.url}/echo/x`;
    const r = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 2000 });
    assert.deepEqual([r.status, JSON.parse(r.body.toString()).code], [404, 'NoListener']);
    assert.ok(Date.now() - started < AT_ONCE_MS, `${Date.now() - started} ms`);
    assert.equal(listener.socket.destroyed, false, 'the listener\'s TCP connection was still open (it did not end it)');
  });

  it('so does a frame the relay refuses (1002): the listener is off the entity at once', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const listener = await halfOpenListener(t, relay);
    await until(() => listenersOf(relay) === 1, 5000, 'the listener online');
    // Unmasked: RFC 6455 5.1 has the server fail the connection.
    listener.socket.write(Buffer.from([0x81, 0x02, 0x7b, 0x7d]));
    await until(() => listener.ended(), AT_ONCE_MS, 'the relay to end its side');
    assert.deepEqual(listener.frames().find((f) => f.opcode === 0x8)?.payload, closePayload(1002));
    await until(() => listenersOf(relay) === 0, AT_ONCE_MS, 'the relay to drop the listener');
  });

  it('a relayed request the listener was given fails 502 ListenerGone at once', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const listener = await halfOpenListener(t, relay);
    await until(() => listenersOf(relay) === 1, 5000, 'the listener online');
    const url = `${relay.url}/echo/held`;
    const answer = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 10_000 });
    await until(() => listener.messages().some((m) => m.request), 2000, 'the request notice');
    listener.socket.write(maskedFrame(0x8, closePayload(1000)));
    const started = Date.now();
    const r = await answer;
    assert.deepEqual([r.status, JSON.parse(r.body.toString()).code], [502, 'ListenerGone']);
    assert.ok(Date.now() - started < AT_ONCE_MS, `answered after ${Date.now() - started} ms`);
  });

  it('a request the listener was only asked to dial for goes on to another listener of the entity', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const leaving = await halfOpenListener(t, relay);
    await until(() => listenersOf(relay) === 1, 5000, 'the first listener online');
    const url = `${relay.url}/echo/upload`;
    // Chunked: the listener is asked to dial for it (no request on the control channel).
    const answer = httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url), 'Transfer-Encoding': 'chunked' }, body: [Buffer.from('part')], timeoutMs: 10_000 });
    await until(() => leaving.messages().some((m) => m.request), 2000, 'the dial notice');
    assert.equal(leaving.messages()[0].request.method, undefined, 'only an address to dial');
    const staying = await listenOn(t, relay.url, 'echo');
    leaving.socket.write(maskedFrame(0x8, closePayload(1001)));
    const notice = await staying.next(AT_ONCE_MS);
    assert.ok(notice.request?.address, 'the second listener is asked to dial');
    // Its first message may come with the 101: read from the start.
    const leg = new WebSocket(notice.request.address);
    leg.on('error', () => {});
    t.after(() => leg.terminate());
    const [head] = await waitEvent<[Buffer]>(leg, 'message', 2000);
    const { request } = JSON.parse(String(head));
    leg.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, responseHeaders: {}, body: false } }));
    assert.equal((await answer).status, 200);
  });

  it('a sender\'s WebSocket held for the listener fails 502 ListenerGone at once', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const listener = await halfOpenListener(t, relay);
    await until(() => listenersOf(relay) === 1, 5000, 'the listener online');
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const sender = openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    sender.then((ws) => ws.terminate(), () => {});
    await until(() => listener.messages().some((m) => m.accept), 2000, 'the accept notice');
    listener.socket.write(maskedFrame(0x8, closePayload(1000)));
    const started = Date.now();
    await assert.rejects(sender, (err: { status?: number }) => err.status === 502);
    assert.ok(Date.now() - started < AT_ONCE_MS, `refused after ${Date.now() - started} ms`);
  });
});
