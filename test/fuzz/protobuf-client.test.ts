// Property-based fuzzing of the protobuf subprotocols against a running relay
// (in this process, so an exception escaping a handler fails the run): a
// client on protobuf.webpubsub.azure.v1 or its reliable twin sends any frames
// (valid UpstreamMessages of every kind, the same mutated, fields of any
// number and wire type) and is answered only with DownstreamMessages that
// protobufjs decodes, acks for the ackIds it sent (every one, unless it is
// closed) with errors from the table, or is closed 1008 InvalidMessage after a
// DisconnectedMessage; meanwhile a well-behaved protobuf client and a JSON
// client in the group it sends to read everything they get, and the
// well-behaved one's own sends keep being acked and delivered.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { ACK_ERRORS } from '../../src/pubsub/errors.ts';
import { WireError, lengthField } from '../../src/pubsub/protobuf-wire.ts';
import { readUpstream } from '../../src/pubsub/protobuf-protocol.ts';
import { httpRequest } from '../helpers/http.ts';
import { PLAIN, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { anyBytes, decodeDownstream, digitsOf, encodeUpstream, forProtobufjs, protoString, upstreamWith } from './protobuf-types.ts';
import { fuzzOptions } from './fuzz.ts';

const PROTOBUF = 'protobuf.webpubsub.azure.v1';
const PROTOBUF_RELIABLE = 'protobuf.reliable.webpubsub.azure.v1';
/** The ackId of the request that ends each run. */
const END_ACK_ID = '999999999';
const ACKED_TYPES = new Set(['sendToGroup', 'joinGroup', 'leaveGroup', 'event']);

/** Valid messages (to the watched group mostly), mutated ones, and field soup. */
const frame = fc.oneof(
  { weight: 3, arbitrary: upstreamWith(fc.oneof(fc.constantFrom('g', 'g', 'h'), protoString), fc.oneof(fc.constant('e'), protoString)).map((m) => encodeUpstream(forProtobufjs(m))) },
  { weight: 2, arbitrary: anyBytes },
  // Messages to the watched group whose data is anything at all: what reaches the group's members must still decode.
  { weight: 1, arbitrary: anyBytes.map((data) => lengthField(1, Buffer.concat([lengthField(1, 'g'), lengthField(3, data)]))) },
);

/** A protobuf client: every frame decoded by protobufjs (a frame it cannot decode is kept as an error). */
class Client {
  readonly messages: any[] = [];
  readonly undecodable: string[] = [];
  closed: { code: number; reason: string } | undefined;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary) => {
      try {
        assert.ok(isBinary, 'a text frame');
        this.messages.push(decodeDownstream(data));
      } catch (err) {
        this.undecodable.push(`${(err as Error).message}: ${data.toString('hex').slice(0, 200)}`);
      }
    });
    ws.on('close', (code, reason) => (this.closed = { code, reason: String(reason) }));
    ws.on('error', () => {});
  }

  static async open(url: string, protocol: string): Promise<Client> {
    const client = new Client(new WebSocket(url, [protocol]));
    await withTimeout(new Promise((resolve, reject) => client.ws.once('open', resolve).once('error', reject)), 5000, 'the protobuf client to open');
    return client;
  }

  acks(): any[] {
    return this.messages.filter((m) => m.ack_message).map((m) => m.ack_message);
  }
}

/** The ackId the relay reads from a frame and answers under, if any, and whether the request must be acked. */
function ackOf(frame: Buffer): { ackId: string; acked: boolean } | undefined {
  try {
    const reading = readUpstream(frame);
    if (reading.kind === 'refused') return reading.ackId === undefined ? undefined : { ackId: reading.ackId, acked: true };
    if (reading.kind !== 'message') return undefined;
    const ackId = digitsOf(reading.text, 'ackId');
    // The type is the message's first member.
    return ackId === undefined ? undefined : { ackId, acked: ACKED_TYPES.has(/^\{"type":"(\w+)"/.exec(reading.text)![1]) };
  } catch (err) {
    if (err instanceof WireError) return undefined;
    throw err;
  }
}

describe('protobuf subprotocol clients (fuzzed)', () => {
  it('answers any frames with DownstreamMessages, acks for what was sent, or a close 1008 InvalidMessage; other members of the group read everything and keep working', async (t) => {
    // A connection per run from one address (hundreds with FUZZ_RUNS): not refused 429 for their rate.
    const relay = await startPubSubRelay(t, { limits: { connectRatePerAddress: 1_000_000, connectBurstPerAddress: 1_000_000 } });
    t.after(() => {
      witness.ws.terminate();
      member.ws.terminate();
    });
    const witness = await Client.open(accessUrl(relay.url, { groups: ['g'] }), PROTOBUF);
    const member = await RawPubSubClient.connect(accessUrl(relay.url, { groups: ['g'] }), PLAIN, t);
    await until(() => witness.messages.length > 0, 5000, 'the witness connected');
    let round = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(PROTOBUF, PROTOBUF_RELIABLE), fc.array(frame, { minLength: 1, maxLength: 6 }), async (protocol, frames) => {
        const client = await Client.open(accessUrl(relay.url), protocol);
        try {
          for (const f of frames) if (client.ws.readyState === WebSocket.OPEN) client.ws.send(f);
          if (client.ws.readyState === WebSocket.OPEN) client.ws.send(encodeUpstream({ join_group_message: { group: 'end', ack_id: END_ACK_ID } }));
          await until(() => client.closed !== undefined || client.acks().some((a) => a.ack_id === END_ACK_ID), 5000, 'the last answer');
        } finally {
          client.ws.terminate();
        }
        const hex = frames.map((f) => f.toString('hex')).join(' ');
        assert.deepEqual(client.undecodable, [], hex);
        const sent = frames.map(ackOf).filter((a) => a !== undefined);
        const sentIds = new Set([END_ACK_ID, ...sent.map((a) => a.ackId)]);
        for (const ack of client.acks()) {
          assert.ok(sentIds.has(ack.ack_id ?? '0'), `an ack for ${ack.ack_id}, never sent: ${hex}`);
          if (!ack.success) assert.ok(ack.error?.name in ACK_ERRORS, `${ack.error?.name}: ${hex}`);
        }
        if (client.closed && client.closed.code !== 1005 && client.closed.code !== 1006) {
          assert.deepEqual(client.closed, { code: 1008, reason: 'InvalidMessage' }, hex);
          assert.ok(client.messages.at(-1)?.system_message?.disconnected_message, `no DisconnectedMessage before the close: ${hex}`);
        } else {
          for (const { ackId, acked } of sent) if (acked) assert.ok(client.acks().some((a) => (a.ack_id ?? '0') === ackId), `no ack ${ackId}: ${hex}`);
        }

        // The group's members read everything they were sent, and the well-behaved one is still served.
        const n = ++round;
        witness.ws.send(encodeUpstream({ send_to_group_message: { group: 'g', ack_id: n, data: { text_data: `w${n}` } } }));
        await until(() => witness.acks().some((a) => a.ack_id === String(n)), 5000, `the witness's ack ${n}`);
        assert.equal(witness.acks().find((a) => a.ack_id === String(n)).success, true);
        await until(() => witness.messages.some((m) => m.data_message?.data?.text_data === `w${n}`), 5000, `the witness's message ${n}`);
        await member.waitFor((m) => m.type === 'message' && m.data === `w${n}`, 5000, `the witness's message ${n} at the JSON member`);
        assert.deepEqual(witness.undecodable, [], hex);
        assert.equal(witness.closed, undefined);
      }),
      fuzzOptions(80, 8000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });
});
