// A relayed WebSocket closed by one side first: the other side may still send
// until it closes too (RFC 6455 7.1.2: an endpoint that received a close frame
// may send before its own). .NET's HybridConnectionStream.ShutdownAsync sends
// its close and reads the answer until the peer's close; before, the relay
// answered the closer at once and forwarded nothing more, so the answer a
// listener wrote after reading the sender's shutdown never reached it.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { rawRelayedPair } from '../helpers/raw-listener.ts';
import { maskedFrame, parseServerFrames, rawUpgrade, readFrames, readToClose, type RawUpgrade, type ServerFrame } from '../helpers/raw-socket.ts';
import { buildConfig } from '../../src/config/load.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { startTestRelay, testConfig } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
const closePayload = (code: number, reason = '') => Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
const described = (frames: ServerFrame[]) => frames.map((f) => (f.opcode === OP_CLOSE ? `close ${f.payload.readUInt16BE(0)}` : `${f.opcode} ${f.payload}`));
const untilClose = (frames: ServerFrame[]) => frames.some((f) => f.opcode === OP_CLOSE);
const untilData = (frames: ServerFrame[]) => frames.some((f) => f.opcode === OP_BINARY);

/** A relay with `closeHandshakeMs`, and a relayed WebSocket between raw sockets: the sender and the listener's leg. */
async function splicedPair(t: TestContext, closeHandshakeMs: number): Promise<{ sender: RawUpgrade; leg: RawUpgrade; relay: RunningRelay }> {
  const overrides = { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], timeouts: { closeHandshakeMs } };
  // A reload takes the entity away (its relayed WebSockets are closed 1001 EntityRemoved).
  const relay = await startTestRelay(t, overrides, { loadConfig: () => buildConfig(testConfig({ ...overrides, hybridConnections: [] })) });
  const { sender, leg } = await rawRelayedPair(t, relay);
  return { sender, leg, relay };
}

describe('a relayed WebSocket closed by one side first', () => {
  for (const first of ['sender', 'listener'] as const) {
    it(`carries what the other side sends after the ${first}'s close, then that side's close`, async (t) => {
      const pair = await splicedPair(t, 5000);
      const [closer, other] = first === 'sender' ? [pair.sender, pair.leg] : [pair.leg, pair.sender];
      closer.socket.write(maskedFrame(OP_BINARY, 'request'));
      closer.socket.write(maskedFrame(OP_CLOSE, closePayload(1000, 'Shutdown')));
      const otherGot = await readFrames(other.socket, untilClose, 5000, 'the close at the other side', other.rest);
      assert.deepEqual(described(otherGot), [`2 request`, 'close 1000']);
      // It read the shutdown; now it answers, then closes (4000: its own code reaches the closer).
      other.socket.write(maskedFrame(OP_BINARY, 'response after the shutdown'));
      other.socket.write(maskedFrame(OP_CLOSE, closePayload(4000, 'done')));
      const otherEnded = readToClose(other.socket, 5000, 'the other connection to end');
      const closerGot = await readFrames(closer.socket, untilClose, 5000, 'the answer and the close at the closer', closer.rest);
      // Before: ['close 1000'] at once, and the response dropped.
      assert.deepEqual(described(closerGot), ['2 response after the shutdown', 'close 4000']);
      // Its reason too (before: dropped, 4000 "").
      assert.equal(closerGot.at(-1)!.payload.subarray(2).toString(), 'done');
      await readToClose(closer.socket, 5000, 'the closer\'s connection to end');
      await otherEnded;
    });
  }

  it('the relay closing it during a half-close (entity removed) answers the first closer with its code at once, and passes nothing more', async (t) => {
    const { sender, leg, relay } = await splicedPair(t, 5000);
    sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000, 'Shutdown')));
    await readFrames(leg.socket, untilClose, 5000, 'the close at the listener', leg.rest);
    leg.socket.write(maskedFrame(OP_BINARY, 'before the removal'));
    const before = await readFrames(sender.socket, untilData, 3000, 'the frame before the removal', sender.rest);
    assert.equal(relay.reload('api').ok, true);
    leg.socket.write(maskedFrame(OP_BINARY, 'after the removal'));
    const after = await readFrames(sender.socket, untilClose, 3000, 'the sender\'s answer');
    // Before: the listener's frames went on reaching the sender until the listener closed or closeHandshakeMs ran out.
    assert.deepEqual(described([...before, ...after]), ['2 before the removal', 'close 1001']);
    assert.notEqual(after.at(-1)!.payload.subarray(2).toString(), '', 'the relay says why');
  });

  it('is not cut by closeHandshakeMs while the other side answers slowly (a tunnel\'s server after its client\'s shutdown)', async (t) => {
    const { sender, leg } = await splicedPair(t, 300);
    sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000, 'Shutdown')));
    await readFrames(leg.socket, untilClose, 5000, 'the close at the listener', leg.rest);
    const senderGot = readFrames(sender.socket, untilClose, 10000, 'the slow answer and the close', sender.rest);
    // Six chunks 250 ms apart: 1.5 s, five times closeHandshakeMs. Before: cut after 300 ms, and the sender answered
    // 1000 as if the answer were whole (azbridge's client got a clean end halfway).
    for (let i = 0; i < 6; i++) {
      leg.socket.write(maskedFrame(OP_BINARY, `chunk ${i}`));
      await new Promise((r) => setTimeout(r, 250));
    }
    leg.socket.write(maskedFrame(OP_CLOSE, closePayload(1000)));
    assert.deepEqual(described(await senderGot), [...Array.from({ length: 6 }, (_, i) => `2 chunk ${i}`), 'close 1000']);
  });

  it('bounds the other side by closeHandshakeMs once the first closer has gone (it gave up waiting), and ends the relayed WebSocket', async (t) => {
    const { sender, leg, relay } = await splicedPair(t, 300);
    sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000)));
    await readFrames(leg.socket, untilClose, 5000, 'the close at the listener', leg.rest);
    sender.socket.end();
    // The listener never answers. Before: its leg was held for good, counted open, untouched by the entity's removal.
    await readToClose(leg.socket, 5000, 'the listener\'s leg to be dropped');
    await until(() => relay.hybrid.openConnections().relayed_websocket === 0, 5000, 'the relayed WebSocket to end');
  });

  it('answers the pings of the side still sending during a half-close (its keep-alive may wait for pongs)', async (t) => {
    const { sender, leg } = await splicedPair(t, 300);
    sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000)));
    const closeSeen = await readFrames(leg.socket, untilClose, 5000, 'the close at the listener', leg.rest);
    leg.socket.write(maskedFrame(OP_PING, 'keep-alive'));
    // Before: no pong while closing.
    const pong = await readFrames(leg.socket, (f) => f.some((x) => x.opcode === OP_PONG), 5000, 'the pong');
    assert.deepEqual(pong.filter((f) => f.opcode === OP_PONG).map((f) => String(f.payload)), ['keep-alive']);
    assert.ok(untilClose(closeSeen));
  });

  it('releases a leg that sent FIN while reading nothing of what is queued for it (open, or after its close)', async (t) => {
    for (const closeFirst of [false, true]) {
      const { sender, leg, relay } = await splicedPair(t, 300);
      // The sender reads nothing; the listener sends it 16 MiB: most of it waits in the relay.
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let i = 0; i < 256; i++) leg.socket.write(maskedFrame(OP_BINARY, chunk));
      await new Promise((r) => setTimeout(r, 500));
      if (closeFirst) sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000)));
      sender.socket.end();
      // Before: held for good, counted open, with its queue (the relay's end() waited for a reader that never came).
      await until(() => relay.hybrid.openConnections().relayed_websocket === 0, 5000, `the relayed WebSocket to end (close first: ${closeFirst})`);
    }
  });

  it('cuts the first closer\'s connection when the other side goes away without its close: no clean end of a cut answer', async (t) => {
    const { sender, leg } = await splicedPair(t, 300);
    sender.socket.write(maskedFrame(OP_CLOSE, closePayload(1000)));
    await readFrames(leg.socket, untilClose, 5000, 'the close at the listener', leg.rest);
    leg.socket.write(maskedFrame(OP_BINARY, 'part of it'));
    const part = await readFrames(sender.socket, untilData, 5000, 'the part at the sender', sender.rest);
    leg.socket.destroy();
    const bytes = await readToClose(sender.socket, 5000, 'the sender\'s connection to end');
    // The part sent, then no close frame: the connection just ends (before: a close 1000, a clean end).
    assert.deepEqual(described([...part, ...parseServerFrames(bytes).frames]), ['2 part of it']);
  });
});
