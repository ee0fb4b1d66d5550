// A message socket's queue: frames of one turn leave in one write, and text
// frames given as a per-socket number between shared buffers come out as
// whole frames, whatever their size.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageSocket, encodeTextFrame } from '../../src/websocket/message-socket.ts';
import { OP_TEXT, encodeFrame } from '../../src/websocket/frames.ts';
import { maskedFrame, readUntil, tcpPair } from '../helpers/raw-socket.ts';
import { until } from '../helpers/wait.ts';

describe('message socket queue', () => {
  it('writes plain frames and numbered frames of every length class as whole frames, in order', async (t) => {
    const { client: peer, accepted: relaySide } = await tcpPair(t);
    const received: Buffer[] = [];
    peer.on('data', (d: Buffer) => received.push(d));
    const socket = new MessageSocket(relaySide, null, { onMessage() {}, onClosed() {}, onDrain() {} }, { maxMessageBytes: 1024, closeHandshakeMs: 1000, outboundHighWaterMark: 1 << 20 });
    // Heads of every frame length class, short and long tails (a buffer of up to 8 bytes is copied byte by byte).
    const member = (bytes: number) => Buffer.concat([Buffer.from('{"a":"'), Buffer.alloc(bytes, 0x61), Buffer.from('","sequenceId":')]);
    const parts: [Buffer, Buffer][] = [
      [member(1), Buffer.from('}')],
      [member(200), Buffer.from('}')],
      [member(70000), Buffer.from('}')],
      [Buffer.from('{"sequenceId":'), Buffer.from(',"type":"message","data":"long tail"}')],
    ];
    const expected: Buffer[] = [];
    socket.writeFrame(encodeTextFrame('plain'));
    expected.push(encodeTextFrame('plain'));
    // Numbers of one digit and of many, past 31 bits, up to the largest exact integer.
    const numbers = [1, 0, 90210, 2 ** 31 - 1, 2 ** 31, Number.MAX_SAFE_INTEGER];
    for (const [i, [head, tail]] of parts.entries()) {
      for (const n of i === 0 ? numbers : [i + 1]) {
        socket.writeNumberedText(head, n, tail);
        expected.push(encodeFrame(true, OP_TEXT, Buffer.concat([head, Buffer.from(String(n)), tail])));
      }
    }
    const want = Buffer.concat(expected);
    assert.ok(socket.bufferedBytes >= want.length - 4);
    await until(() => Buffer.concat(received).length >= want.length, 5000, 'the queued frames');
    assert.deepEqual(Buffer.concat(received), want);
  });

  it('holds frames to the message cap as it is now: one a reload raised takes frames past the cap at open', async (t) => {
    const { client: peer, accepted: relaySide } = await tcpPair(t);
    const messages: Buffer[] = [];
    let closed = false;
    const options = { maxMessageBytes: 1024, closeHandshakeMs: 1000, outboundHighWaterMark: 1 << 20 };
    new MessageSocket(relaySide, null, { onMessage: (_s, _b, data) => void messages.push(data), onClosed: () => void (closed = true), onDrain() {} }, options);
    options.maxMessageBytes = 4096;
    peer.write(maskedFrame(OP_TEXT, 'x'.repeat(2000)));
    await until(() => messages.length === 1 || closed, 5000, 'the message');
    assert.equal(messages[0]?.length, 2000, 'a 2,000-byte frame under the raised cap');
    // Past the cap now: 1009, as before.
    options.maxMessageBytes = 1024;
    peer.write(maskedFrame(OP_TEXT, 'x'.repeat(2000)));
    const closing = await readUntil(peer, (b) => b.includes(Buffer.from([0x88])), 5000, 'the close');
    assert.equal(closing.readUInt16BE(closing.indexOf(Buffer.from([0x88])) + 2), 1009);
  });
});
