// Property-based fuzzing of messages between edges (the bus is a network
// too): decodeEdgeMessage never throws on any bytes, returns only messages
// that match their schema, and round-trips what encodeEdgeMessage wrote, body
// intact; a truncated, extended or mutated envelope is dropped or decodes to
// a valid message, never to an exception.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeEnvelope, encodeEnvelope } from '../../src/bus/envelope.ts';
import { EDGE_OPS, decodeEdgeMessage, encodeEdgeMessage, isEdgeMessage, type EdgeMessage } from '../../src/bus/messages.ts';
import { fuzzOptions } from './fuzz.ts';

const name = fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/);
const hub = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,10}$/);
const id = fc.uuid({ version: 4 });
const target = fc.oneof(
  fc.constant({ kind: 'all' as const }),
  fc.record({ kind: fc.constantFrom('group' as const, 'user' as const, 'connection' as const), name: fc.string({ minLength: 1, maxLength: 30 }) }),
);

/** Valid messages of a few ops, covering strings, numbers, targets and optional fields. */
const message: fc.Arbitrary<EdgeMessage> = fc.oneof(
  fc.record({ op: fc.constant('hc.routed' as const), ok: fc.boolean(), code: fc.option(fc.constantFrom('NoListener' as const, 'TooManyPending' as const), { nil: undefined }) }, { requiredKeys: ['op', 'ok'] }),
  fc.record({ op: fc.constant('hc.failed' as const), id, code: fc.constantFrom('ListenerGone' as const, 'BadListenerResponse' as const) }),
  fc.record({ op: fc.constant('ps.done' as const), count: fc.nat() }),
  fc.record({ op: fc.constant('ops.status' as const), origin: name }),
  fc.record({ op: fc.constant('ps.exists' as const), origin: name, hub, target }),
  fc.record({ op: fc.constant('ps.close' as const), origin: name, hub, target, reason: fc.option(fc.string({ maxLength: 40 }), { nil: undefined }) }, { requiredKeys: ['op', 'origin', 'hub', 'target'] }),
  fc.record({
    op: fc.constant('hc.accept' as const),
    entity: name,
    node: name,
    accept: fc.record({
      address: fc.string({ maxLength: 60 }),
      id,
      connectHeaders: fc.dictionary(fc.string({ maxLength: 10 }).filter((k) => k !== '__proto__'), fc.string({ maxLength: 20 }), { maxKeys: 4 }),
      remoteEndpoint: fc.record({ address: fc.string({ maxLength: 20 }), port: fc.integer({ min: 0, max: 65535 }) }),
    }),
  }),
);

describe('messages between edges (fuzzed)', () => {
  it('decode any bytes without throwing, to a message that matches its schema or to nothing', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.constantFrom(...EDGE_OPS), (bytes, op) => {
        const any = decodeEdgeMessage(bytes);
        if (any) assert.ok(isEdgeMessage(any.message));
        const one = decodeEdgeMessage(bytes, op);
        if (one) assert.equal(one.message.op, op);
      }),
      fuzzOptions(3000),
    );
  });

  it('decode any JSON header in a well-formed envelope without throwing', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), fc.uint8Array({ maxLength: 32 }), (header, body) => {
        const data = Buffer.concat([Buffer.alloc(4), Buffer.from(JSON.stringify(header) ?? 'null'), body]);
        data.writeUInt32BE(data.length - 4 - body.length, 0);
        const decoded = decodeEdgeMessage(data);
        if (decoded) assert.ok(isEdgeMessage(decoded.message));
      }),
      fuzzOptions(2000),
    );
  });

  it('round-trip: a valid message decodes to itself, body intact', () => {
    fc.assert(
      fc.property(message, fc.uint8Array({ maxLength: 256 }), (m, body) => {
        const decoded = decodeEdgeMessage(encodeEdgeMessage(m, body));
        assert.ok(decoded, JSON.stringify(m));
        assert.deepEqual(decoded.message, JSON.parse(JSON.stringify(m)));
        assert.deepEqual(decoded.body, Buffer.from(body));
      }),
      fuzzOptions(1000),
    );
  });

  it('drops or decodes a cut, extended or mutated envelope, never throwing', () => {
    fc.assert(
      fc.property(message, fc.nat(), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }), fc.uint8Array({ maxLength: 8 }), (m, cut, flips, extra) => {
        const data = Buffer.from(encodeEdgeMessage(m));
        for (const [at, value] of flips) data[at % data.length] = value;
        for (const variant of [data.subarray(0, cut % (data.length + 1)), Buffer.concat([data, extra])]) {
          const decoded = decodeEdgeMessage(variant);
          if (decoded) assert.ok(isEdgeMessage(decoded.message));
          decodeEnvelope(variant);
        }
      }),
      fuzzOptions(2000),
    );
  });

  it('envelopes round-trip any JSON header', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => k !== '__proto__'), fc.jsonValue({ maxDepth: 4 })), fc.uint8Array({ maxLength: 64 }), (header, body) => {
        const decoded = decodeEnvelope(encodeEnvelope(header, body));
        assert.deepEqual(decoded?.header, JSON.parse(JSON.stringify(header)));
        assert.deepEqual(decoded?.body, Buffer.from(body));
      }),
      fuzzOptions(1000),
    );
  });
});
