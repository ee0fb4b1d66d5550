// For the protobuf fuzz tests: the Web PubSub protobuf messages read by
// protobufjs (test/helpers/protobuf-schema.ts), and the arbitraries the tests
// share (valid messages of every kind, mutated ones, fields of any number and
// wire type).
import fc from 'fast-check';
import { lengthField, varint, varintField } from '../../src/pubsub/protobuf-wire.ts';

export { Any, Downstream, Upstream, decodeDownstream, encodeUpstream } from '../helpers/protobuf-schema.ts';
import { encodeUpstream } from '../helpers/protobuf-schema.ts';


/** `s` as UTF-8 can carry it (a lone surrogate becomes U+FFFD): what a proto3 string holds. */
export const wellFormed = (s: string) => Buffer.from(s, 'utf8').toString('utf8');
/** Strings of any code points, and of the characters JSON escapes. */
export const anyString = fc.oneof(fc.string({ unit: 'binary', maxLength: 24 }), fc.string({ unit: fc.constantFrom('"', '\\', '\u0000', '\u001f', '\n', '\u2028', 'é', '\u{1F600}', 'a'), maxLength: 12 }));
export const protoString = anyString.map(wellFormed);
export const uint64 = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n));
export const bytes = fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b));
export const anyMessage = fc.record({ type_url: protoString, value: bytes });
/** JSON text: as JSON.stringify writes it, with white space, or nested near the parser's depth bound. */
export const jsonText = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.tuple(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(1, '\t', ' ')).map(([v, space]) => JSON.stringify(v, null, space)),
  fc.integer({ min: 120, max: 130 }).map((d) => '['.repeat(d) + ']'.repeat(d)),
  fc.constantFrom('12345678901234567890', '-0', '1e400', '"\\ud800"'),
);
/** A MessageData, as protobufjs takes it; json_data that may not be JSON. */
export const messageData = fc.oneof(
  protoString.map((text_data) => ({ text_data })),
  bytes.map((binary_data) => ({ binary_data })),
  anyMessage.map((protobuf_data) => ({ protobuf_data })),
  jsonText.map((json_data) => ({ json_data })),
  protoString.map((json_data) => ({ json_data })),
);
export const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
/** A valid UpstreamMessage of every kind, with groups and events from `group` and `event` (uint64 as bigints). */
export function upstreamWith(group: fc.Arbitrary<string>, event: fc.Arbitrary<string> = protoString) {
  return fc.oneof(
    fc.record({ group, ack_id: opt(uint64), data: opt(messageData), no_echo: opt(fc.boolean()) }, { requiredKeys: ['group'] }).map((m) => ({ send_to_group_message: m })),
    fc.record({ event, ack_id: opt(uint64), data: opt(messageData) }, { requiredKeys: ['event'] }).map((m) => ({ event_message: m })),
    fc.record({ group, ack_id: opt(uint64) }, { requiredKeys: ['group'] }).map((m) => ({ join_group_message: m })),
    fc.record({ group, ack_id: opt(uint64) }, { requiredKeys: ['group'] }).map((m) => ({ leave_group_message: m })),
    uint64.map((sequence_id) => ({ sequence_ack_message: { sequence_id } })),
    fc.constant({ ping_message: {} }),
  );
}
export const upstream = upstreamWith(protoString);
/** The message as protobufjs takes it: a uint64 as digits, undefined members left out. */
export function forProtobufjs(message: unknown): any {
  if (typeof message === 'bigint') return String(message);
  if (message === null || typeof message !== 'object' || Buffer.isBuffer(message)) return message;
  return Object.fromEntries(Object.entries(message).filter(([, v]) => v !== undefined).map(([k, v]) => [k, forProtobufjs(v)]));
}

/** A field of any number (small ones most) and wire type, valid or not, nested values made the same way. */
export const fieldSoup: fc.Arbitrary<Buffer> = fc.letrec<{ soup: Buffer; field: Buffer }>((tie) => ({
  soup: fc.array(tie('field'), { maxLength: 5 }).map((fields) => Buffer.concat(fields)),
  field: fc.oneof(
    { depthSize: 'small' },
    fc.tuple(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 7 }), fc.oneof(bytes, tie('soup'))).map(([field, wire, value]) => {
      const key = varint((field << 3) | wire);
      if (wire === 0) return Buffer.concat([key, value.subarray(0, 10)]);
      if (wire === 2) return Buffer.concat([key, varint(value.length), value]);
      return Buffer.concat([key, value]);
    }),
    fc.tuple(fc.constantFrom(1, 2, 3, 4), tie('soup')).map(([field, value]) => lengthField(field, value)),
    fc.tuple(fc.constantFrom(1, 2, 3, 4), uint64).map(([field, value]) => varintField(field, value)),
  ),
})).soup;
/** A valid UpstreamMessage with bytes flipped, cut, inserted or repeated. */
export const mutated = fc
  .tuple(upstream, fc.array(fc.tuple(fc.constantFrom('flip', 'cut', 'insert', 'repeat'), fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 4 })), { minLength: 1, maxLength: 4 }))
  .map(([message, edits]) => {
    let b = encodeUpstream(forProtobufjs(message));
    for (const [edit, at, some] of edits) {
      const i = b.length === 0 ? 0 : at % b.length;
      if (edit === 'flip' && b.length > 0) b = Buffer.concat([b.subarray(0, i), Buffer.from([b[i] ^ (some[0] || 1)]), b.subarray(i + 1)]);
      else if (edit === 'cut') b = b.subarray(0, i);
      else if (edit === 'insert') b = Buffer.concat([b.subarray(0, i), some, b.subarray(i)]);
      else b = Buffer.concat([b, b.subarray(i)]);
    }
    return b;
  });
export const anyBytes = fc.oneof(bytes, mutated, fieldSoup, fieldSoup.map((soup) => lengthField(1, soup)), fieldSoup.map((soup) => lengthField(5, Buffer.concat([lengthField(1, 'e'), lengthField(2, soup)]))));

/** The digits of a top-level number member, written before dataType and data (so no spliced json_data is searched). */
export function digitsOf(text: string, name: string): string | undefined {
  const head = text.split(',"dataType":')[0];
  return new RegExp(`"${name}":(\\d+)`).exec(head)?.[1];
}
