// Peers that write and never read (issue 18, defect 2): every frame the relay
// writes in answer to one (a pong, an ack, a `pong` message) is bounded like
// data is, so a flood of pings or requests from a socket that does not read
// its answers makes the relay stop reading it, and the relay's memory stays
// within its configured buffers. Each case drives a real relay process with
// raw sockets, measures its resident memory from /proc, and checks that the
// relay still answers and that other clients are unaffected.
// (Unbounded, 64 MiB of pings grew the relay by 159 MiB.)
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import { MAX_RSS_GROWTH, assertStillServing, measuringRss, mib, startHostileRelay } from '../helpers/hostile.ts';
import { httpRequest } from '../helpers/http.ts';
import { accessUrl } from '../helpers/pubsub.ts';
import { RawListener, openWebSocket, rawRelayedPair } from '../helpers/raw-listener.ts';
import { floodWithoutReading, maskedFrame, parseServerFrames, rawUpgrade } from '../helpers/raw-socket.ts';
import { tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const FLOOD_BYTES = 64 << 20;
/** The flood counts as refused once the relay has taken nothing for this long. */
const STALL_MS = 1500;

const OP_TEXT = 0x1;
const OP_PING = 0x9;
const PING = maskedFrame(OP_PING, Buffer.alloc(125, 0x61));

/** Floods `frame` down `socket` without reading; checks the relay's memory, and that it still serves others. */
async function floodAndCheck(t: TestContext, relay: RelayProcess, socket: Socket, frame: Buffer, bytes = FLOOD_BYTES): Promise<void> {
  const { result, growth } = await measuringRss(relay, () => floodWithoutReading(socket, frame, bytes, STALL_MS));
  t.diagnostic(`wrote ${mib(result.written)} (${result.stalled ? 'relay stopped reading' : result.closed ? 'closed' : 'all taken'}), RSS +${mib(growth)}`);
  assert.ok(result.stalled || result.closed, `the relay took all ${mib(bytes)} from a peer that does not read`);
  assert.ok(growth < MAX_RSS_GROWTH, `RSS grew ${mib(growth)}`);
  await assertStillServing(t, relay);
}

/** A relayed WebSocket on `relay`: the sender's raw socket; the listener's leg reads or not. */
async function relayedSender(t: TestContext, relay: RelayProcess, legReads: boolean): Promise<Socket> {
  const { sender, leg, listener } = await rawRelayedPair(t, relay);
  assert.equal(leg.status, 101);
  if (legReads) leg.socket.resume();
  else leg.socket.pause();
  assert.equal(sender.status, 101);
  // The splice lives on without it; the entity's next connect goes to the next listener.
  listener.close();
  return sender.socket;
}

async function pubsubSocket(t: TestContext, relay: RelayProcess): Promise<Socket> {
  const url = new URL(accessUrl(relay.url));
  const up = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
  assert.equal(up.status, 101);
  return up.socket;
}

describe('a peer that writes and never reads', () => {
  // One relay process for the cases: each measures its own attack's growth, and each attacker's socket stays open to the end.
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    relay = await startHostileRelay(cleanup);
  });
  after(() => cleanup.run());

  it('sending pings on a relayed WebSocket is stopped at spliceBufferBytes', async (t) => {
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const upgrading = rawUpgrade(t, relay.port, '/$hc/open?sb-hc-action=connect');
    const { accept } = await listener.next();
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await upgrading;
    assert.equal(sender.status, 101);
    await floodAndCheck(t, relay, sender.socket, PING);
  });

  it('sending pings on a pub/sub socket is stopped at outboundBufferBytes', async (t) => {
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), PING);
  });

  it('sending {"type":"ping"} messages is stopped at outboundBufferBytes', async (t) => {
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), maskedFrame(OP_TEXT, '{"type":"ping"}'));
  });

  it('sending acked sendToGroup requests is stopped at outboundBufferBytes', async (t) => {
    // One frame repeated: the same ackId is answered Duplicate every time after the first.
    const frame = maskedFrame(OP_TEXT, JSON.stringify({ type: 'sendToGroup', group: 'nobody', ackId: 1, data: 'x' }));
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), frame);
  });

  it('a listener pinging its HTTP-mode rendezvous leg without reading is stopped at spliceBufferBytes', async (t) => {
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const pending = httpRequest(`${relay.url}/open/x`, { timeoutMs: 60000 }).catch(() => undefined);
    const { request } = await listener.next();
    const path = new URL(request.address);
    const leg = await rawUpgrade(t, relay.port, `${path.pathname}${path.search}`);
    assert.equal(leg.status, 101);
    await floodAndCheck(t, relay, leg.socket, PING);
    leg.socket.destroy();
    await pending;
  });

  it('a listener pinging its control channel without reading is dropped (ws bounds its pongs)', async (t) => {
    const path = '/$hc/open?sb-hc-action=listen';
    const channel = await rawUpgrade(t, relay.port, path, { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, path)) });
    assert.equal(channel.status, 101);
    await floodAndCheck(t, relay, channel.socket, PING);
  });
});

// Tiny frames (issue 18's byte caps, found again by a review): every frame the relay kept or queued
// cost a Buffer and a write entry, ~100-250 bytes, while the caps counted 2 to 7 bytes for it.
describe('a peer sending tiny frames', () => {
  const OP_CONTINUATION = 0x0;
  const OP_BINARY = 0x2;
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    // 1 MiB: half a million frames of 2 bytes each, which cost ~250 bytes of the relay's memory each before.
    relay = await startHostileRelay(cleanup, { limits: { spliceBufferBytes: 1 << 20 } });
  });
  after(() => cleanup.run());

  it('empty data frames to a listener that does not read, and empty pings whose pongs are not read, are held to spliceBufferBytes (before: +252 and +105 MB)', async (t) => {
    await floodAndCheck(t, relay, await relayedSender(t, relay, false), maskedFrame(OP_BINARY, Buffer.alloc(0)));
    await floodAndCheck(t, relay, await relayedSender(t, relay, true), maskedFrame(OP_PING, Buffer.alloc(0)));
  });

  it('a pub/sub message under pubsubMessageBytes sent in 1-byte fragments is refused 1009 once its frames and parts, 64 bytes each, pass the cap (before: kept at ~100 bytes a byte, +72 MB for one message)', async (t) => {
    const socket = await pubsubSocket(t, relay);
    let read = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => (read = Buffer.concat([read, d])));
    socket.resume();
    // 20,000 fragments, 20,000 bytes: far under the 1 MiB cap by bytes, past it at 128 bytes a fragment (a frame and a part).
    const fragment = maskedFrame(OP_CONTINUATION, ' ', false);
    socket.write(Buffer.concat([maskedFrame(OP_TEXT, ' ', false), ...Array.from({ length: 20000 }, () => fragment)]));
    const closeFrame = () => parseServerFrames(read).frames.find((f) => f.opcode === 0x8);
    await until(() => closeFrame() !== undefined, 5000, 'a close frame');
    assert.equal(closeFrame()!.payload.readUInt16BE(0), 1009, closeFrame()!.payload.toString('latin1'));
    await assertStillServing(t, relay);
  });

  it('a listener\'s control message in fragments it never finishes is closed 1008 past one frame per byte of a body hyco-https sends on the channel, and two (65,538; before: ws kept up to 16,384 frames; one per 64 bytes failed hyco-https answers written in over 1,024 pieces)', async (t) => {
    const path = '/$hc/open?sb-hc-action=listen';
    const up = await rawUpgrade(t, relay.port, path, { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, path)) });
    assert.equal(up.status, 101);
    let read = Buffer.alloc(0);
    up.socket.on('data', (d: Buffer) => (read = Buffer.concat([read, d])));
    up.socket.resume();
    // 66,000 empty frames: no bytes towards controlMessageBytes (64 KiB), past its 65,538 frames.
    const fragment = maskedFrame(OP_CONTINUATION, '', false);
    up.socket.write(Buffer.concat([maskedFrame(OP_TEXT, '{', false), ...Array.from({ length: 66000 }, () => fragment)]));
    const closeFrame = () => parseServerFrames(read).frames.find((f) => f.opcode === 0x8);
    await until(() => closeFrame() !== undefined, 5000, 'a close frame');
    assert.equal(closeFrame()!.payload.readUInt16BE(0), 1008, closeFrame()!.payload.toString('latin1'));
    await assertStillServing(t, relay);
  });

  it('a response head sent on a rendezvous in 1-byte fragments is answered 502 past one part per 64 bytes of controlMessageBytes (before: each part kept, up to ~6 MiB for httpResponseMs)', async (t) => {
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const answer = httpRequest(`${relay.url}/open/fragments`);
    const { request } = await listener.next();
    const address = new URL(request.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    assert.equal(leg.status, 101);
    // JSON may start with whitespace: 2,000 one-byte parts of it, then the head itself.
    const head = JSON.stringify({ response: { requestId: request.id, statusCode: 200, responseHeaders: {}, body: false } });
    const fragment = maskedFrame(OP_CONTINUATION, ' ', false);
    leg.socket.write(Buffer.concat([maskedFrame(OP_TEXT, ' ', false), ...Array.from({ length: 2000 }, () => fragment), maskedFrame(OP_CONTINUATION, head)]));
    assert.equal((await answer).status, 502);
  });
});
