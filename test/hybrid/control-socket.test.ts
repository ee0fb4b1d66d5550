// The relay's end of a control channel (src/hybrid/control-socket.ts) on a
// stand-in socket, each push one read: its limits, each refused with the code
// `ws` sent (1009 over the bytes, 1008 past the frames of a message or the
// reads of a frame), and its closing handshake as `ws` had it: the listener's
// close echoed with its code and reason and reported with its code, a close
// of the relay's that goes unanswered reported 1006, messages that come while
// the relay's close waits for the answer still delivered.
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { ControlSocket, type ControlMessageLimits } from '../../src/hybrid/control-socket.ts';
import { maskedFrame, parseServerFrames } from '../helpers/raw-socket.ts';
import { until } from '../helpers/wait.ts';

const LIMITS: ControlMessageLimits = { bytes: 1000, frames: 10, frameReads: 5 };

function channel(limits = LIMITS, closeHandshakeMs = 1000) {
  const written: Buffer[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) {
      written.push(chunk);
      done();
    },
  });
  const seen = { messages: [] as { text: string; isBinary: boolean }[], refused: [] as { code: number; overLimit: boolean }[], closed: undefined as number | undefined };
  const wire = new ControlSocket(socket, Buffer.alloc(0), limits, closeHandshakeMs, {
    message: (data, isBinary) => seen.messages.push({ text: data.toString(), isBinary }),
    heard: () => {},
    refused: (code, _reason, overLimit) => seen.refused.push({ code, overLimit }),
    closed: (code) => (seen.closed = code),
  });
  /** The frames the relay wrote. */
  const frames = () => parseServerFrames(Buffer.concat(written)).frames;
  const closeSent = () => frames().find((f) => f.opcode === 0x8)?.payload;
  /** Each buffer arrives in a read of its own. */
  const read = async (...reads: Buffer[]) => {
    for (const r of reads) {
      socket.push(r);
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  return { socket, wire, seen, frames, closeSent, read };
}

const closePayload = (code: number, reason = '') => Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);

describe('control socket', () => {
  it('delivers a message that comes in pieces, within its limits', async () => {
    const c = channel();
    const frame = maskedFrame(0x1, 'hello');
    await c.read(frame.subarray(0, 3), frame.subarray(3, 8), frame.subarray(8), Buffer.concat([maskedFrame(0x2, 'a', false), maskedFrame(0x0, 'b')]));
    assert.deepEqual(c.seen.messages, [{ text: 'hello', isBinary: false }, { text: 'ab', isBinary: true }]);
    assert.equal(c.closeSent(), undefined);
  });

  for (const [what, reads, code] of [
    ['a message over its bytes', [maskedFrame(0x1, 'x'.repeat(600), false), maskedFrame(0x0, 'x'.repeat(401))], 1009],
    ['a message in more frames than allowed', [Buffer.concat([maskedFrame(0x1, '{', false), ...Array.from({ length: 10 }, () => maskedFrame(0x0, '', false))])], 1008],
    ['a frame in more reads than allowed', (() => {
      const frame = maskedFrame(0x1, 'x'.repeat(20));
      return [frame.subarray(0, 8), ...Array.from({ length: 6 }, (_, i) => frame.subarray(8 + i * 2, 10 + i * 2))];
    })(), 1008],
  ] as const) {
    it(`refuses ${what} with ${code}, as over its limits`, async () => {
      const c = channel();
      await c.read(...reads);
      assert.deepEqual(c.seen.refused, [{ code, overLimit: true }]);
      assert.deepEqual(c.closeSent(), closePayload(code));
      assert.equal(c.wire.isOpen, false);
      assert.deepEqual(c.seen.messages, []);
    });
  }

  it('refuses text that is not UTF-8 with 1007, not as over its limits, and reads nothing after', async () => {
    const c = channel();
    await c.read(Buffer.concat([maskedFrame(0x1, Buffer.from([0x7b, 0xff])), maskedFrame(0x1, '{}')]));
    assert.deepEqual(c.seen.refused, [{ code: 1007, overLimit: false }]);
    assert.deepEqual(c.seen.messages, []);
  });

  it('echoes the listener\'s close with its code and reason, and reports its code', async () => {
    const c = channel();
    await c.read(maskedFrame(0x8, closePayload(4000, 'bye')));
    assert.deepEqual(c.closeSent(), closePayload(4000, 'bye'));
    assert.equal(c.wire.isOpen, false);
    c.socket.push(null);
    await until(() => c.seen.closed !== undefined, 2000, 'closed');
    assert.equal(c.seen.closed, 4000);
  });

  it('counts the channel closed at the listener\'s close frame, or at a refusal, not when its socket ends (RFC 6455 5.5.1)', async () => {
    const closing = channel();
    await closing.read(maskedFrame(0x8, closePayload(4000, 'bye')));
    assert.equal(closing.seen.closed, 4000, 'before the socket has ended');
    assert.equal(closing.socket.destroyed, false);

    const refused = channel();
    await refused.read(Buffer.from([0x81, 0x00]));
    assert.deepEqual(refused.seen.refused, [{ code: 1002, overLimit: false }]);
    assert.equal(refused.seen.closed, 1006, 'before the socket has ended');
    assert.equal(refused.socket.destroyed, false);
  });

  it('delivers what the listener sends while the relay\'s close waits, reports the listener\'s answer, or 1006 without one', async () => {
    const answered = channel();
    answered.wire.close(1001, 'going');
    assert.deepEqual(answered.closeSent(), closePayload(1001, 'going'));
    await answered.read(maskedFrame(0x1, '{"late":1}'), maskedFrame(0x8, closePayload(1000)));
    assert.deepEqual(answered.seen.messages, [{ text: '{"late":1}', isBinary: false }]);
    answered.socket.push(null);
    await until(() => answered.seen.closed !== undefined, 2000, 'closed');
    assert.equal(answered.seen.closed, 1000);

    const silent = channel(LIMITS, 20);
    silent.wire.close(1008, 'TokenExpired');
    await until(() => silent.seen.closed !== undefined, 2000, 'dropped');
    assert.equal(silent.seen.closed, 1006);
  });

  it('answers pings with their payload', async () => {
    const c = channel();
    await c.read(maskedFrame(0x9, 'p1'));
    const pong = c.frames().find((f) => f.opcode === 0xa);
    assert.equal(pong?.payload.toString(), 'p1');
  });
});
