// Property-based fuzzing of the pub/sub client protocol against a running
// relay (in this process, so an exception escaping a handler fails the run):
// any sequence of frames a client sends (protocol messages with fields of any
// type, ackIds of any size, nested data, garbage text, binary frames,
// oversized frames) is answered only with protocol messages, every ack names
// an ackId the client sent and an error from the ack table, every request
// with a usable ackId is acked unless the connection ends, and a connection
// the relay ends is closed with a close code from the table.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { ACK_ERRORS, PUBSUB_ERRORS } from '../../src/pubsub/errors.ts';
import { httpRequest } from '../helpers/http.ts';
import { PLAIN, RELIABLE, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { fuzzOptions } from './fuzz.ts';

const MAX_FRAME = 4096;
/** The ackId of the request that ends each run (generated ackIds stay below it). */
const END_ACK_ID = 1_000_000;
const TYPES = ['joinGroup', 'leaveGroup', 'sendToGroup', 'event', 'sequenceAck', 'ping', 'invoke', 'cancelInvocation'];
const ACKED = new Set(['joinGroup', 'leaveGroup', 'sendToGroup', 'event']);
const RELAY_TYPES = new Set(['system', 'ack', 'pong', 'message', 'invokeResponse']);
/** Close codes a relay-ended connection may carry: the table's, and RFC 6455's for broken frames. */
const CLOSE_CODES = new Set([...Object.values(PUBSUB_ERRORS).flatMap((e) => ('closeCode' in e ? [e.closeCode] : [])), 1002, 1007, 1009]);

const ackId = fc.oneof(
  fc.nat(1000).map(String),
  fc.constantFrom('9007199254740991', '9007199254740993', '18446744073709551615', '-1', '1.5', '1e400', '"7"', 'null', '[1]'),
);
const field = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 2 }));
const frame = fc.oneof(
  { weight: 6, arbitrary: fc.record({
    type: fc.oneof(fc.constantFrom(...TYPES), fc.string({ maxLength: 12 })),
    group: fc.oneof(fc.constantFrom('g', 'a.b', '*'), field),
    ackId: fc.option(ackId, { nil: undefined }),
    data: fc.option(fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.integer({ min: 1, max: 300 }).map((d) => ({ deep: d }))), { nil: undefined }),
    dataType: fc.option(fc.oneof(fc.constantFrom('json', 'text', 'binary'), field), { nil: undefined }),
    extra: fc.option(fc.tuple(fc.constantFrom('noEcho', 'event', 'sequenceId', 'invocationId'), field), { nil: undefined }),
  }).map((m) => {
    const parts = [`"type":${JSON.stringify(m.type)}`, `"group":${JSON.stringify(m.group)}`];
    if (m.ackId !== undefined) parts.push(`"ackId":${m.ackId}`);
    if (m.data !== undefined) {
      const deep = m.data !== null && typeof m.data === 'object' && 'deep' in m.data ? (m.data as { deep: unknown }).deep : undefined;
      parts.push(`"data":${typeof deep === 'number' ? '['.repeat(deep) + ']'.repeat(deep) : JSON.stringify(m.data)}`);
    }
    if (m.dataType !== undefined) parts.push(`"dataType":${JSON.stringify(m.dataType)}`);
    if (m.extra) parts.push(`${JSON.stringify(m.extra[0])}:${JSON.stringify(m.extra[1])}`);
    return { text: `{${parts.join(',')}}`, ackId: m.ackId, type: typeof m.type === 'string' ? m.type : '' };
  }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }).map((text) => ({ text, ackId: undefined, type: '' })) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => ({ text: JSON.stringify(v), ackId: undefined, type: '' })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 20 }).map((b) => ({ binary: Buffer.from(b), ackId: undefined, type: '' })) },
  { weight: 1, arbitrary: fc.constant({ text: `{"type":"event","event":"e","data":"${'x'.repeat(MAX_FRAME)}"}`, ackId: undefined, type: '' }) },
);

describe('pub/sub client protocol (fuzzed)', () => {
  it('answers any frames with protocol messages, acks from the table, and close codes from the table', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { pubsubMessageBytes: MAX_FRAME } });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(PLAIN, RELIABLE), fc.array(frame, { minLength: 1, maxLength: 8 }), async (protocol, frames) => {
        const ws = new WebSocket(accessUrl(relay.url), [protocol]);
        const got: any[] = [];
        let closed: { code: number; reason: string } | undefined;
        ws.on('message', (data, isBinary) => got.push(isBinary ? { binary: true } : JSON.parse(String(data))));
        ws.on('close', (code, reason) => (closed = { code, reason: String(reason) }));
        ws.on('error', () => {});
        try {
          await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'open');
          for (const f of frames) if (ws.readyState === WebSocket.OPEN) ws.send('binary' in f ? f.binary! : f.text!);
          // Frames are handled in order: once the last one's ack is in, every answer is.
          if (ws.readyState === WebSocket.OPEN) ws.send(`{"type":"joinGroup","group":"end","ackId":${END_ACK_ID}}`);
          await until(() => closed !== undefined || got.some((m) => m.type === 'ack' && m.ackId === END_ACK_ID), 5000, 'the last answer');
        } finally {
          ws.terminate();
        }
        const sentAckIds = new Set([END_ACK_ID, ...frames.flatMap((f) => (f.ackId === undefined ? [] : [f.ackId])).map((a) => { try { return JSON.parse(a); } catch { return a; } })]);
        for (const m of got) {
          assert.ok(m && typeof m === 'object' && RELAY_TYPES.has(m.type), `relay sent ${JSON.stringify(m)}`);
          if (m.type === 'ack') {
            assert.ok(sentAckIds.has(m.ackId), `ack for ${m.ackId}, never sent`);
            if (!m.success) assert.ok(m.error.name in ACK_ERRORS, m.error.name);
          }
        }
        if (closed && closed.code !== 1005 && closed.code !== 1006) {
          assert.ok(CLOSE_CODES.has(closed.code), `closed with ${closed.code}`);
          // 1007 is also the socket's own close for a text frame that is not UTF-8; a binary one's says BinaryFrame.
          if (closed.code === 1008) assert.ok(closed.reason in PUBSUB_ERRORS, closed.reason);
        }
        if (!closed) {
          for (const f of frames) {
            if (f.ackId === undefined || !/^-?\d/.test(f.ackId)) continue;
            const usable = /^\d+$/.test(f.ackId) && Number(f.ackId) <= Number.MAX_SAFE_INTEGER;
            // A known type that takes no ackId ignores a usable one; an unusable one is refused whatever the type.
            if (usable && !ACKED.has(f.type) && TYPES.includes(f.type)) continue;
            const ack = got.find((m) => m.type === 'ack' && m.ackId === JSON.parse(f.ackId!));
            assert.ok(ack, `no ack for ${f.text}`);
            if (!usable) assert.equal(ack.error?.name, 'BadRequest', f.text);
          }
        }
      }),
      fuzzOptions(80, 8000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });
});
