import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { FrameParser, type FrameHandler, unmaskInJs, unmaskInPlace } from '../../src/websocket/frame-parser.ts';
import { OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT } from '../../src/websocket/frames.ts';

function maskedFrame(fin: boolean, opcode: number, payload: Buffer, rsv = 0, mask = randomBytes(4)): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65536) { head[1] = 0x80 | 126; head.writeUInt16BE(len, 2); }
  if (len >= 65536) { head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(len), 2); }
  head[0] = (fin ? 0x80 : 0) | rsv | opcode;
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

function recorder() {
  const events: string[] = [];
  const data: Buffer[] = [];
  const handler: FrameHandler = {
    onDataFrame: (fin, op, len) => events.push(`frame ${fin ? 1 : 0} ${op} ${len}`),
    onDataPayload: (c) => data.push(Buffer.from(c)),
    onDataFrameEnd: (fin) => events.push(`end ${fin ? 1 : 0}`),
    onControlFrame: (op, p) => events.push(`control ${op} ${p.toString()}`),
    onFrameError: (code, reason) => events.push(`error ${code} ${reason}`),
  };
  return { events, data, handler };
}

describe('frame parser', () => {
  it('unmasks and hands on payload whatever the chunking', () => {
    const payload = randomBytes(70000);
    const wire = Buffer.concat([
      maskedFrame(false, OP_BINARY, payload.subarray(0, 100)),
      maskedFrame(true, OP_PING, Buffer.from('hi')),
      maskedFrame(true, OP_CONTINUATION, payload.subarray(100)),
      maskedFrame(true, OP_TEXT, Buffer.alloc(0)),
    ]);
    for (const step of [1, 3, 7, 1000, wire.length]) {
      const r = recorder();
      const parser = new FrameParser(r.handler, { masked: true, maxFrameBytes: 0 });
      for (let i = 0; i < wire.length; i += step) parser.push(Buffer.from(wire.subarray(i, i + step)));
      assert.deepEqual(r.events, ['frame 0 2 100', 'end 0', 'control 9 hi', 'frame 1 0 69900', 'end 1', 'frame 1 1 0', 'end 1'], `step ${step}`);
      assert.ok(Buffer.concat(r.data).equals(payload), `step ${step}`);
    }
  });

  it('passes a zero-keyed payload as it is, and unmasks the next frame with its own key', () => {
    const a = randomBytes(3000);
    const b = randomBytes(3000);
    const wire = Buffer.concat([maskedFrame(true, OP_BINARY, a, 0, Buffer.alloc(4)), maskedFrame(true, OP_BINARY, b, 0, Buffer.from([1, 2, 3, 4]))]);
    for (const step of [5, 1000, wire.length]) {
      const r = recorder();
      const parser = new FrameParser(r.handler, { masked: true, maxFrameBytes: 0 });
      for (let i = 0; i < wire.length; i += step) parser.push(Buffer.from(wire.subarray(i, i + step)));
      assert.ok(Buffer.concat(r.data).equals(Buffer.concat([a, b])), `step ${step}`);
    }
  });

  it('refuses what RFC 6455 forbids', () => {
    const cases: [Buffer, RegExp, FrameParserOptionsLike?][] = [
      [maskedFrame(true, OP_TEXT, Buffer.from('x'), 0x40), /1002 reserved bits/],
      [Buffer.from([0x81, 0x01, 0x78]), /1002 unmasked frame/],
      [maskedFrame(true, 0x3, Buffer.from('x')), /1002 unknown opcode/],
      [maskedFrame(true, OP_CONTINUATION, Buffer.from('x')), /1002 unexpected continuation/],
      [Buffer.concat([maskedFrame(false, OP_TEXT, Buffer.from('x')), maskedFrame(true, OP_TEXT, Buffer.from('y'))]), /1002 expected continuation/],
      [maskedFrame(false, OP_PING, Buffer.from('x')), /1002 bad control frame/],
      [maskedFrame(true, OP_BINARY, Buffer.alloc(2000)), /1009 frame too large/, { maxFrameBytes: 1000 }],
      // A 64-bit length must have its top bit clear (before: 1009, as if only too large), and a control frame's fits in 7 bits.
      [Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]), /1002 length with its top bit set/],
      [Buffer.from([0x89, 0xff, 0, 0x40, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), /1002 frame too large/],
    ];
    for (const [wire, pattern, opts] of cases) {
      const r = recorder();
      new FrameParser(r.handler, { masked: true, maxFrameBytes: opts?.maxFrameBytes ?? 0 }).push(wire);
      assert.match(r.events.join('|'), pattern);
    }
  });

  it('unmasks from any offset into the mask', () => {
    const mask = Buffer.from([1, 2, 3, 4]);
    const data = Buffer.alloc(11);
    unmaskInPlace(data, mask, 3);
    assert.deepEqual([...data], [4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2]);
  });

  it('unmasks (native and JavaScript) at every alignment, length and mask offset as byte-wise would', () => {
    const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
    const backing = Buffer.alloc(300);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 7) & 0xff;
    for (let start = 0; start < 4; start++) {
      for (const length of [0, 1, 3, 4, 5, 17, 63, 64, 65, 257]) {
        for (let offset = 0; offset < 4; offset++) {
          for (const unmask of [unmaskInPlace, unmaskInJs]) {
            const data = Buffer.from(backing).subarray(start, start + length);
            const expected = Buffer.from(data).map((b, i) => b ^ mask[(offset + i) & 3]);
            unmask(data, mask, offset);
            assert.deepEqual(data, Buffer.from(expected), `${unmask.name}: start ${start} length ${length} offset ${offset}`);
          }
        }
      }
    }
  });
});

type FrameParserOptionsLike = { maxFrameBytes: number };
