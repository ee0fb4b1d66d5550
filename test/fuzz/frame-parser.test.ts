// Property-based fuzzing of the RFC 6455 frame parser every relay-terminated
// leg shares (websocket/frame-parser.ts): whatever bytes arrive, in whatever
// chunks, it never throws, stops at the first error with a close code from
// RFC 6455 (1002, 1007, 1009), hands on no control payload over 125 bytes and
// no data beyond the lengths frames declared; and valid frames, however they
// are cut, come out exactly as they went in.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { closePayloadProblem } from '../../src/websocket/close-handshake.ts';
import { FrameParser, type FrameHandler } from '../../src/websocket/frame-parser.ts';
import { chunked, fuzzOptions } from './fuzz.ts';

const OP = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

interface Seen {
  frames: { fin: boolean; opcode: number; length: number; payload: Buffer[] }[];
  controls: { opcode: number; payload: Buffer }[];
  errors: number[];
  afterError: number;
}

function parse(chunks: Buffer[], maxFrameBytes = 0): Seen {
  const seen: Seen = { frames: [], controls: [], errors: [], afterError: 0 };
  const handler: FrameHandler = {
    onDataFrame: (fin, opcode, length) => {
      if (seen.errors.length) seen.afterError++;
      seen.frames.push({ fin, opcode, length, payload: [] });
    },
    onDataPayload: (chunk) => seen.frames.at(-1)!.payload.push(Buffer.from(chunk)),
    onDataFrameEnd: () => {},
    onControlFrame: (opcode, payload) => {
      if (seen.errors.length) seen.afterError++;
      seen.controls.push({ opcode, payload: Buffer.from(payload) });
    },
    onFrameError: (code) => seen.errors.push(code),
  };
  const parser = new FrameParser(handler, { masked: true, maxFrameBytes });
  for (const chunk of chunks) parser.push(chunk);
  return seen;
}

function masked(fin: boolean, opcode: number, payload: Uint8Array, rsv = 0): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else if (len >= 65536) {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  head[0] = (fin ? 0x80 : 0) | rsv | opcode;
  const mask = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

/** A valid message: one data frame, or fragments, possibly with control frames between them. */
const message = fc.record({
  binary: fc.boolean(),
  fragments: fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 4 }),
  pings: fc.array(fc.uint8Array({ maxLength: 125 }), { maxLength: 2 }),
});

describe('frame parser (fuzzed)', () => {
  it('passes any sequence of valid frames through unchanged, however the bytes are cut', () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 20 }), (messages, cuts) => {
        const wire: Buffer[] = [];
        const expected: { fin: boolean; opcode: number; payload: Buffer }[] = [];
        const pings: Buffer[] = [];
        for (const m of messages) {
          m.fragments.forEach((fragment, i) => {
            const fin = i === m.fragments.length - 1;
            const opcode = i === 0 ? (m.binary ? OP.binary : OP.text) : OP.continuation;
            wire.push(masked(fin, opcode, fragment));
            expected.push({ fin, opcode, payload: Buffer.from(fragment) });
            const ping = m.pings[i];
            if (ping && !fin) {
              wire.push(masked(true, OP.ping, ping));
              pings.push(Buffer.from(ping));
            }
          });
        }
        const seen = parse(chunked(Buffer.concat(wire), cuts));
        assert.deepEqual(seen.errors, []);
        assert.deepEqual(
          seen.frames.map((f) => ({ fin: f.fin, opcode: f.opcode, payload: Buffer.concat(f.payload) })),
          expected,
        );
        assert.deepEqual(seen.controls.map((c) => c.payload), pings);
      }),
      fuzzOptions(300),
    );
  });

  it('never throws on arbitrary bytes, stops at its first error, and answers with an RFC 6455 close code', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.array(fc.nat(), { maxLength: 16 }), fc.constantFrom(0, 64, 1024), (bytes, cuts, max) => {
        const seen = parse(chunked(bytes, cuts), max);
        assert.ok(seen.errors.length <= 1, 'one error at most');
        assert.equal(seen.afterError, 0, 'nothing after the error');
        for (const code of seen.errors) assert.ok([1002, 1007, 1009].includes(code), `close code ${code}`);
        for (const c of seen.controls) assert.ok(c.payload.length <= 125);
        for (const f of seen.frames) {
          assert.ok(Buffer.concat(f.payload).length <= f.length, 'no payload past the declared length');
          if (max > 0) assert.ok(f.length <= max, 'no frame past maxFrameBytes is started');
        }
      }),
      fuzzOptions(1000),
    );
  });

  it('never throws on mutated valid frames (flipped bits, reserved bits, bad lengths)', () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 3 }), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 6 }), (messages, flips) => {
        const wire = Buffer.concat(messages.flatMap((m) => m.fragments.map((f, i) => masked(i === m.fragments.length - 1, i === 0 ? OP.text : OP.continuation, f))));
        for (const [at, value] of flips) wire[at % wire.length] = value;
        const seen = parse([wire]);
        assert.ok(seen.errors.length <= 1 && seen.afterError === 0);
      }),
      fuzzOptions(500),
    );
  });

  it('takes a close frame exactly when RFC 6455 allows its payload, else fails with 1002 or 1007', () => {
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 125 }),
      fc.tuple(fc.integer({ min: 0, max: 65535 }), fc.string({ maxLength: 40 })).map(([code, reason]) => {
        const text = Buffer.from(reason).subarray(0, 123);
        return Buffer.concat([Buffer.from([code >> 8, code & 0xff]), text]);
      }),
    );
    fc.assert(
      fc.property(payload, (p) => {
        const seen = parse([masked(true, OP.close, p)]);
        const problem = closePayloadProblem(Buffer.from(p));
        if (problem) {
          assert.deepEqual(seen.errors, [problem.code]);
          assert.deepEqual(seen.controls, []);
        } else {
          assert.deepEqual(seen.errors, []);
          assert.deepEqual(seen.controls.map((c) => c.payload), [Buffer.from(p)]);
          if (p.length >= 2) {
            const code = (p[0] << 8) | p[1];
            assert.ok((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999), `code ${code} passed`);
          }
        }
      }),
      fuzzOptions(1000),
    );
  });
});
