// The proto3 wire format as src/pubsub/protobuf-wire.ts reads and writes it, against protobufjs
// (an implementation that is not ours): varints of numbers and bigints up to 2^64 - 1, fields of
// every wire type read back, and input that is not a message refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import protobuf from 'protobufjs';
import { WireError, lengthField, readFields, stringOf, varint, varintField, varintOf } from '../../src/pubsub/protobuf-wire.ts';

describe('the protobuf wire format', () => {
  it('writes varints as protobufjs does, from numbers and bigints', () => {
    for (const n of [0, 1, 127, 128, 255, 300, 16383, 16384, 2 ** 31, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
      const w = protobuf.Writer.create();
      w.uint64(n);
      const expected = Buffer.from(w.finish());
      assert.deepEqual(varint(n), expected, String(n));
      assert.deepEqual(varint(BigInt(n)), expected, String(n));
    }
    const w = protobuf.Writer.create();
    w.uint64('18446744073709551615');
    assert.deepEqual(varint(2n ** 64n - 1n), Buffer.from(w.finish()));
  });

  it('reads back fields of every wire type that protobufjs wrote, and what it writes itself', () => {
    const w = protobuf.Writer.create();
    w.uint32((1 << 3) | 0).uint64('18446744073709551615');
    w.uint32((2 << 3) | 1).fixed64(7);
    w.uint32((3 << 3) | 2).string('héllo');
    w.uint32((4 << 3) | 5).fixed32(9);
    w.uint32((536870911 << 3) | 0).uint32(1);
    const fields = [...readFields(Buffer.from(w.finish()))];
    assert.deepEqual(fields.map((f) => [f.field, f.wire]), [[1, 0], [2, 1], [3, 2], [4, 5], [536870911, 0]]);
    assert.equal(varintOf(fields[0]), 2n ** 64n - 1n);
    assert.equal(stringOf(fields[2]), 'héllo');
    const ours = Buffer.concat([varintField(1, 5), lengthField(2, 'x')]);
    const r = protobuf.Reader.create(ours);
    assert.deepEqual([r.uint32(), r.uint32(), r.uint32(), r.string()], [8, 5, 18, 'x']);
  });

  it('refuses input that is not a message: lengths and varints past the end, varints over 10 bytes or 64 bits, groups, field 0', () => {
    for (const bad of [
      [0x0a, 0x05, 0x61],
      [0x08, 0x80],
      [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
      [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
      [0x0b],
      [0x0c],
      [0x00, 0x01],
      [0x09, 0x01, 0x02],
    ]) {
      assert.throws(() => [...readFields(Buffer.from(bad))], WireError, Buffer.from(bad).toString('hex'));
    }
    assert.throws(() => stringOf([...readFields(Buffer.from([0x0a, 0x01, 0xff]))][0]), WireError);
  });
});
