// Property-based fuzzing of the protobuf subprotocols' messages
// (src/pubsub/protobuf-wire.ts, src/pubsub/protobuf-protocol.ts), checked
// against protobufjs (an implementation of the format that is not ours):
// readFields and readUpstream throw nothing but WireError on any bytes
// (random, mutated messages, random field soup), with output linear in the
// input (time is not asserted: tests assert no performance); an UpstreamMessage protobufjs encoded is read into the JSON
// message it means, every field as encoded; and every DownstreamMessage the
// relay builds (acks, connected, disconnected, data of every type) decodes
// with protobufjs to what was put in.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { WireError, readFields } from '../../src/pubsub/protobuf-wire.ts';
import { protobufAckFrame, protobufConnectedFrame, protobufDataFrame, protobufDisconnectedFrame, protobufNumberedFrame, readUpstream } from '../../src/pubsub/protobuf-protocol.ts';
import { SharedMessage, type DataType } from '../../src/pubsub/downstream.ts';
import { parseJson } from '../../src/validation/bounded-json.ts';
import { parseServerFrames } from '../helpers/raw-socket.ts';
import { Any, anyBytes, anyMessage, anyString, bytes, decodeDownstream, digitsOf, encodeUpstream, fieldSoup, forProtobufjs, jsonText, mutated, opt, uint64, upstream, wellFormed } from './protobuf-types.ts';
import { fuzzOptions } from './fuzz.ts';

/** What the relay gets: a WireError, or a reading. */
function read(frame: Buffer): ReturnType<typeof readUpstream> | 'WireError' {
  try {
    return readUpstream(frame);
  } catch (err) {
    assert.ok(err instanceof WireError, `threw ${(err as Error)?.stack ?? err} for ${frame.toString('hex')}`);
    return 'WireError';
  }
}

/** A server frame's payload. */
function payloadOf(frame: Buffer): Buffer {
  const { frames, rest } = parseServerFrames(frame);
  assert.equal(frames.length, 1);
  assert.equal(rest.length, 0);
  assert.equal(frames[0].opcode, 2, 'a binary frame');
  return frames[0].payload;
}

describe('protobuf messages (fuzzed)', () => {
  it('readFields and readUpstream throw nothing but WireError on any bytes; a message read is JSON the relay parses, at most a few times the input', () => {
    fc.assert(
      fc.property(anyBytes, (frame) => {
        try {
          for (const _ of readFields(frame));
        } catch (err) {
          assert.ok(err instanceof WireError, `readFields threw ${(err as Error)?.stack ?? err} for ${frame.toString('hex')}`);
        }
        const reading = read(frame);
        if (reading === 'WireError' || reading.kind === 'none') return;
        if (reading.kind === 'refused') {
          if (reading.ackId !== undefined) assert.match(reading.ackId, /^\d+$/);
          return;
        }
        // A string's character escaped takes 6 (\u0000); base64 takes 4 for 3; numbers and names are bounded.
        assert.ok(reading.text.length <= 6 * frame.length + 256, `${reading.text.length} characters from ${frame.length} bytes`);
        // handleClientMessage parses it as a JSON client's frame (closing the client InvalidMessage when it cannot).
        assert.doesNotThrow(() => parseJson(reading.text), `not JSON the relay parses: ${reading.text.slice(0, 200)} from ${frame.toString('hex').slice(0, 200)}`);
      }),
      fuzzOptions(3000),
    );
  });

  it('reads an UpstreamMessage protobufjs encoded into the JSON message of the same fields: ackIds to 2^64 - 1 as digits, bytes as base64, json_data only when JSON', () => {
    fc.assert(
      fc.property(upstream, (message) => {
        const frame = encodeUpstream(forProtobufjs(message));
        const reading = readUpstream(frame);
        const [kind, body] = Object.entries(message)[0] as [string, any];
        const type = { send_to_group_message: 'sendToGroup', event_message: 'event', join_group_message: 'joinGroup', leave_group_message: 'leaveGroup', sequence_ack_message: 'sequenceAck', ping_message: 'ping' }[kind];
        const json = body.data?.json_data as string | undefined;
        let jsonValid = true;
        if (json !== undefined) {
          try {
            parseJson(json, 127);
          } catch {
            jsonValid = false;
          }
        }
        if (!jsonValid) {
          // json_data that is not JSON (or too deep to be a message's data): refused, under its ackId.
          assert.equal(reading.kind, 'refused', `${JSON.stringify(reading)} for json_data ${json}`);
          assert.equal(reading.kind === 'refused' && reading.ackId, body.ack_id === undefined ? undefined : String(body.ack_id));
          return;
        }
        assert.equal(reading.kind, 'message', JSON.stringify(reading));
        const text = (reading as { text: string }).text;
        const got = parseJson(text) as any;
        assert.equal(got.type, type);
        if (kind === 'event_message') assert.equal(got.event ?? '', body.event);
        else if (body.group !== undefined) assert.equal(got.group ?? '', body.group);
        if (kind === 'sequence_ack_message') assert.equal(digitsOf(text, 'sequenceId') ?? '0', String(body.sequence_id));
        assert.equal(digitsOf(text, 'ackId'), body.ack_id === undefined ? undefined : String(body.ack_id), text);
        assert.equal(got.noEcho, body.no_echo);
        const data = body.data;
        if (data === undefined) return assert.equal('data' in got || 'dataType' in got, false, text);
        if ('text_data' in data) assert.deepEqual([got.dataType, got.data], ['text', data.text_data]);
        if ('binary_data' in data) assert.deepEqual([got.dataType, got.data], ['binary', data.binary_data.toString('base64')]);
        if ('protobuf_data' in data) assert.deepEqual([got.dataType, got.data], ['protobuf', Buffer.from(Any.encode(Any.fromObject(data.protobuf_data)).finish()).toString('base64')]);
        if ('json_data' in data) {
          assert.equal(got.dataType, 'json');
          assert.deepEqual(got.data, JSON.parse(data.json_data));
          // Spliced as written: the 20 digits of a number past 2^64 are all there.
          assert.ok(text.endsWith(`"data":${data.json_data}}`), text);
        }
      }),
      fuzzOptions(2000),
    );
  });

  it('builds acks, connected and disconnected messages that protobufjs decodes to what was put in', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.nat({ max: Number.MAX_SAFE_INTEGER }), uint64.map(String)),
        opt(fc.record({ name: anyString, message: anyString })),
        fc.tuple(anyString, fc.option(anyString, { nil: null }), opt(anyString), anyString),
        (ackId, error, [connectionId, userId, token, reason]) => {
          const ack = decodeDownstream(payloadOf(protobufAckFrame(ackId, error))).ack_message;
          assert.equal(ack.ack_id ?? '0', String(ackId));
          if (error) {
            assert.equal(ack.success ?? false, false);
            assert.deepEqual([ack.error.name ?? '', ack.error.message ?? ''], [wellFormed(error.name), wellFormed(error.message)]);
          } else assert.deepEqual([ack.success, ack.error], [true, undefined]);

          const connected = decodeDownstream(payloadOf(protobufConnectedFrame(connectionId, userId, token))).system_message.connected_message;
          assert.equal(connected.connection_id ?? '', wellFormed(connectionId));
          assert.equal(connected.user_id ?? '', userId === null ? '' : wellFormed(userId));
          assert.equal(connected.reconnection_token ?? '', token === undefined ? '' : wellFormed(token));

          const disconnected = decodeDownstream(payloadOf(protobufDisconnectedFrame(reason))).system_message.disconnected_message;
          assert.equal(disconnected.reason ?? '', wellFormed(reason));
        },
      ),
      fuzzOptions(2000),
    );
  });

  it('builds data messages of every data type, from JSON bodies with any group and user, that protobufjs decodes to the data sent', () => {
    const data = fc.oneof(
      anyString.map((s) => ({ dataType: 'text' as DataType, dataJson: JSON.stringify(s), expect: { text_data: wellFormed(s) } })),
      bytes.map((b) => ({ dataType: 'binary' as DataType, dataJson: JSON.stringify(b.toString('base64')), expect: { binary_data: b } })),
      anyMessage.map((a) => {
        const b = Buffer.from(Any.encode(Any.fromObject(a)).finish());
        return { dataType: 'protobuf' as DataType, dataJson: JSON.stringify(b.toString('base64')), expect: { protobuf_data: { type_url: a.type_url, value: a.value } } };
      }),
      // Bytes that may not be an Any: binary_data (or, when they are one, protobuf_data).
      fc.oneof(bytes, fieldSoup).map((b) => ({ dataType: 'protobuf' as DataType, dataJson: JSON.stringify(b.toString('base64')), expect: { maybeAny: b } })),
      fc.oneof(jsonText.filter((t) => t.length < 200), fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v))).map((t) => ({ dataType: 'json' as DataType, dataJson: t, expect: { json_data: t } })),
    );
    fc.assert(
      fc.property(
        data,
        fc.constantFrom('group', 'server') as fc.Arbitrary<'group' | 'server'>,
        opt(anyString),
        fc.option(fc.oneof(anyString, fc.constantFrom('"data":1', '","data":"x', '}')), { nil: null }),
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        (d, from, group, fromUserId, sequenceId) => {
          const message = new SharedMessage({ from, group, fromUserId: fromUserId ?? undefined, dataType: d.dataType, dataJson: d.dataJson }, 'n-1');
          const plain = decodeDownstream(payloadOf(protobufDataFrame(message))).data_message;
          const numbered = decodeDownstream(payloadOf(protobufNumberedFrame(message, sequenceId))).data_message;
          assert.equal(numbered.sequence_id ?? '0', String(sequenceId));
          assert.equal(plain.sequence_id, undefined);
          for (const got of [plain, numbered]) {
            assert.equal(got.from, from);
            assert.equal(got.group, group === undefined ? undefined : wellFormed(group));
            const expect = d.expect as any;
            if ('maybeAny' in expect) {
              if (got.data.data === 'binary_data') assert.deepEqual(got.data.binary_data, expect.maybeAny);
              else {
                assert.equal(got.data.data, 'protobuf_data');
                const any = Any.toObject(Any.decode(expect.maybeAny), { bytes: Buffer }) as any;
                assert.deepEqual([got.data.protobuf_data.type_url ?? '', got.data.protobuf_data.value ?? Buffer.alloc(0)], [any.type_url ?? '', any.value ?? Buffer.alloc(0)]);
              }
              continue;
            }
            const [key, value] = Object.entries(expect)[0] as [string, any];
            assert.equal(got.data.data, key);
            if (key === 'protobuf_data') assert.deepEqual([got.data.protobuf_data.type_url ?? '', got.data.protobuf_data.value ?? Buffer.alloc(0)], [value.type_url, value.value]);
            else assert.deepEqual(got.data[key], value);
          }
        },
      ),
      fuzzOptions(2000),
    );
  });
});
