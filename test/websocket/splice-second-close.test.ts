// A relayed WebSocket's leg that sends a second close frame (RFC 6455 5.5.1: nothing follows a close): ignored, as
// ws does. Found by review: one from the leg that closed first was taken for the other leg's answer; the relay
// wrote a close to it at once, inside a data frame still being relayed to it, and the other leg's wait for its
// answer lost its closeHandshakeMs bound once the first closer went (a listener leg held for good).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FrameSplice } from '../../src/websocket/frame-splice.ts';
import { maskedFrame, parseServerFrames, tcpPair } from '../helpers/raw-socket.ts';
import { until } from '../helpers/wait.ts';

describe('a second close frame from the leg that closed first', () => {
  it('is ignored: no close frame goes inside a data frame being relayed to that leg', async (t) => {
    const a = await tcpPair(t), b = await tcpPair(t);
    const splice = new FrameSplice(a.accepted, b.accepted, { highWaterMark: 1 << 20, closeHandshakeMs: 500, maxFrameBytes: 0 }, () => {});
    splice.start(Buffer.alloc(0), Buffer.alloc(0));
    const toA: Buffer[] = [];
    a.client.on('data', (d: Buffer) => toA.push(d));
    // b begins a 1000-byte frame to a and sends half of it.
    const frame = maskedFrame(0x2, randomBytes(1000));
    b.client.write(frame.subarray(0, 508));
    await until(() => Buffer.concat(toA).length >= 504, 3000, 'half the frame at a');
    const close = maskedFrame(0x8, Buffer.from([0x03, 0xe8]));
    a.client.write(close);
    await new Promise((r) => setTimeout(r, 50));
    a.client.write(maskedFrame(0x8, Buffer.from([0x03, 0xe8])));
    await new Promise((r) => setTimeout(r, 50));
    b.client.write(frame.subarray(508));
    await new Promise((r) => setTimeout(r, 200));
    const got = Buffer.concat(toA);
    const { frames } = parseServerFrames(got);
    assert.equal(frames[0].opcode, 0x2);
    assert.equal(frames[0].payload.length, 1000, 'the relayed data frame is whole');
  });
});

describe('a second close frame from the leg that closed first, which then goes', () => {
  it('leaves the other leg bounded by closeHandshakeMs, as after one close', async (t) => {
    const a = await tcpPair(t), b = await tcpPair(t);
    let ended = false;
    const splice = new FrameSplice(a.accepted, b.accepted, { highWaterMark: 1 << 20, closeHandshakeMs: 300, maxFrameBytes: 0 }, () => (ended = true));
    splice.start(Buffer.alloc(0), Buffer.alloc(0));
    a.client.resume(); b.client.resume();
    // Without the second close, a going away bounds b (test/hybrid/half-close.test.ts). Here a closes twice, then goes.
    a.client.write(maskedFrame(0x8, Buffer.from([0x03, 0xe8])));
    a.client.write(maskedFrame(0x8, Buffer.from([0x03, 0xe8])));
    await new Promise((r) => setTimeout(r, 100));
    a.client.destroy();
    // b never answers the close it was sent; it stays connected.
    await until(() => b.accepted.destroyed && ended, 5000, 'b dropped (10 x closeHandshakeMs at most) and the splice ended');
  });
});
