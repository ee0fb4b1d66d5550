// The protocol buffers wire format (proto3), as much of it as the Web PubSub
// protobuf subprotocols need (protobuf-protocol.ts): reading a message's
// fields one by one, hostile input in mind (every length checked against
// what is there, varints of at most 10 bytes, groups and unknown wire types
// refused), and writing varints, strings, bytes and nested messages.
//
// A message is a run of fields: a key (varint: field number << 3 | wire type)
// and a value: a varint (wire type 0), 8 bytes (1), a length and that many
// bytes (2: strings, bytes, nested messages) or 4 bytes (5).
import { isUtf8 } from 'node:buffer';

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LENGTH = 2;
export const WIRE_FIXED32 = 5;

/** Input that is not a protocol buffers message of the expected shape. */
export class WireError extends Error {}

/** One field as read: its number, wire type and value (a varint as a bigint, a length-delimited value as bytes). */
export type WireField = { field: number; wire: typeof WIRE_VARINT; value: bigint } | { field: number; wire: typeof WIRE_LENGTH; value: Buffer } | { field: number; wire: typeof WIRE_FIXED64 | typeof WIRE_FIXED32 };

const MAX_VARINT_BYTES = 10;

/** Reads a varint at `at`: its value and where the next byte is. */
function readVarint(buf: Buffer, at: number): [bigint, number] {
  let value = 0n;
  let shift = 0n;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (at >= buf.length) throw new WireError('a varint runs past the end');
    const byte = buf[at++];
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) {
      if (value >= 1n << 64n) throw new WireError('a varint longer than 64 bits');
      return [value, at];
    }
    shift += 7n;
  }
  throw new WireError('a varint longer than 10 bytes');
}

/** The fields of a message, in order (a field repeated is there as often as it came). */
export function* readFields(buf: Buffer): Generator<WireField> {
  let at = 0;
  while (at < buf.length) {
    const [key, afterKey] = readVarint(buf, at);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field < 1 || field > 536_870_911) throw new WireError(`field number ${field} out of range`);
    at = afterKey;
    if (wire === WIRE_VARINT) {
      const [value, next] = readVarint(buf, at);
      at = next;
      yield { field, wire, value };
    } else if (wire === WIRE_LENGTH) {
      const [length, next] = readVarint(buf, at);
      if (length > BigInt(buf.length - next)) throw new WireError('a length runs past the end');
      at = next + Number(length);
      yield { field, wire, value: buf.subarray(next, at) };
    } else if (wire === WIRE_FIXED64 || wire === WIRE_FIXED32) {
      const size = wire === WIRE_FIXED64 ? 8 : 4;
      if (at + size > buf.length) throw new WireError('a fixed-size value runs past the end');
      at += size;
      yield { field, wire };
    } else {
      // 3 and 4 (groups, deprecated since proto2) and 6, 7 (none): nothing proto3 writes.
      throw new WireError(`wire type ${wire}`);
    }
  }
}

/** A proto3 string field's value: UTF-8, as the format requires. */
export function stringOf(f: WireField): string {
  if (f.wire !== WIRE_LENGTH) throw new WireError(`field ${f.field} is not a string`);
  if (!isUtf8(f.value)) throw new WireError(`field ${f.field} is not UTF-8`);
  return f.value.toString('utf8');
}

export function bytesOf(f: WireField): Buffer {
  if (f.wire !== WIRE_LENGTH) throw new WireError(`field ${f.field} is not bytes`);
  return f.value;
}

export function varintOf(f: WireField): bigint {
  if (f.wire !== WIRE_VARINT) throw new WireError(`field ${f.field} is not a varint`);
  return f.value;
}

/** Bytes of a varint holding `value` (0 to 2^64 - 1). */
export function varint(value: number | bigint): Buffer {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    // Numbers (sequence ids, lengths) without BigInt: a reliable recipient's frame writes two per delivery.
    const out: number[] = [];
    let n = value;
    while (n >= 0x80) {
      out.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    out.push(n);
    return Buffer.from(out);
  }
  let v = BigInt(value);
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return Buffer.from(out);
}

function key(field: number, wire: number): Buffer {
  return varint((field << 3) | wire);
}

/** A varint field (proto3 leaves a zero out; callers write what must be there). */
export function varintField(field: number, value: number | bigint): Buffer {
  return Buffer.concat([key(field, WIRE_VARINT), varint(value)]);
}

/** A length-delimited field: a string (as UTF-8), bytes, or a nested message's bytes. */
export function lengthField(field: number, value: string | Buffer): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([key(field, WIRE_LENGTH), varint(bytes.length), bytes]);
}

/** A message of `parts` (its fields, already written) nested as field `field`. */
export function messageField(field: number, ...parts: Buffer[]): Buffer {
  return lengthField(field, Buffer.concat(parts));
}
