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

  it('gives each socket of a turn its own numbers when their queues differ only in them, and shares frames that are the same', async (t) => {
    const options = { maxMessageBytes: 1024, closeHandshakeMs: 1000, outboundHighWaterMark: 1 << 20 };
    const head = Buffer.from(`{"type":"message","data":"${'x'.repeat(150)}","sequenceId":`);
    const tail = Buffer.from('}');
    const longTail = Buffer.from(',"type":"message","data":"a tail longer than eight bytes"}');
    const shared = encodeTextFrame('shared');
    // Queues of one turn, in the order written: each compared with the one joined last. Alike but for numbers of as
    // many digits (the 2nd and 3rd like the 1st), numbers of other lengths (4th), other frames (5th), the same
    // plain frames (6th and 7th), and the same numbers (8th like the 4th).
    const queues: (number | Buffer)[][] = [
      [shared, 5, 1234, 99999],
      [shared, 7, 9999, 10000],
      [shared, 5, 1234, 99999],
      [shared, 12, 1234, 99999],
      [shared, 13, 2 ** 31, Number.MAX_SAFE_INTEGER],
      [shared, encodeTextFrame('plain')],
      [shared, encodeTextFrame('plain')],
      [shared, 12, 1234, 99999],
    ];
    const pairs = await Promise.all(queues.map(() => tcpPair(t)));
    const received = pairs.map(({ client }) => {
      const chunks: Buffer[] = [];
      client.on('data', (d: Buffer) => chunks.push(d));
      return chunks;
    });
    const sockets = pairs.map(({ accepted }) => new MessageSocket(accepted, null, { onMessage() {}, onClosed() {}, onDrain() {} }, options));
    const expected = queues.map((queue, q) =>
      Buffer.concat(
        queue.map((item, i) => {
          if (typeof item !== 'number') {
            sockets[q].writeFrame(item);
            return item;
          }
          const itemTail = i === queue.length - 1 ? longTail : tail;
          sockets[q].writeNumberedText(head, item, itemTail);
          return encodeFrame(true, OP_TEXT, Buffer.concat([head, Buffer.from(String(item)), itemTail]));
        }),
      ),
    );
    for (const [q, want] of expected.entries()) {
      await until(() => Buffer.concat(received[q]).length >= want.length, 5000, `queue ${q + 1}`);
      assert.deepEqual(Buffer.concat(received[q]), want, `queue ${q + 1}`);
    }
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
