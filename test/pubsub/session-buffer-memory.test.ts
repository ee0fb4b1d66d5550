// What a reliable session that never acknowledges makes the relay hold, against what it counts
// (limits.sessionBufferBytes: the message bodies; docs/limits.md), on both reliable subprotocols, in a
// group whose other members are a plain JSON, a plain protobuf and a simple WebSocket client: each of
// those is written a frame of its own, which the held message used to keep until acknowledged (5 times
// what the session counted for a reliable protobuf member, 6 times for a reliable JSON one).
// A held message keeps its body and the parts its reliable copies are made of, about its size again.
// What it holds is counted in buffers and on the JS heap: the data's JSON text, a string as large as the
// data, was kept with the message too (3 times what the session counted, not 2).
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { PLAIN, RELIABLE, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { arrayBuffersAfterGc } from '../helpers/gc.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { decodeDownstream } from '../helpers/protobuf-schema.ts';

const PROTOBUF = 'protobuf.webpubsub.azure.v1';
const PROTOBUF_RELIABLE = 'protobuf.reliable.webpubsub.azure.v1';
const LIMIT = 4 << 20;
/** Sent while the session is under its bound, and measured: 3 MiB of bodies. */
const MEASURED = 48;

/** A member of group g that reads everything (so the relay writes it every message) and keeps none of it. */
async function member(
  t: TestContext,
  url: string,
  protocol: string | undefined,
): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string; last: Buffer | undefined }>; dataRead: () => number }> {
  const ws = new WebSocket(url, protocol ? [protocol] : []);
  cleanupFor(t).after(() => ws.terminate());
  let last: Buffer | undefined;
  /** Data messages read (each carries 64 KiB of data; control messages are small). */
  let dataRead = 0;
  ws.on('message', (data: Buffer) => {
    if (data.length >= 65536) dataRead++;
    last = data.length < 1024 ? data : undefined;
  });
  const closed = new Promise<{ code: number; reason: string; last: Buffer | undefined }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason), last })));
  await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 10_000, `${protocol ?? 'simple'} member to open`);
  return { ws, closed, dataRead: () => dataRead };
}

/** Buffers and the JS heap after full collections: a held message's strings are on the heap. */
async function retainedAfterGc(): Promise<number> {
  const buffers = await arrayBuffersAfterGc();
  return buffers + process.memoryUsage().heapUsed;
}

async function heldBy(t: TestContext, reliable: string): Promise<{ held: number; counted: number; closed: { code: number; reason: string; last: Buffer | undefined } }> {
  const relay = await startPubSubRelay(t, { limits: { sessionBufferBytes: LIMIT, sessionBufferMessages: 10_000 } });
  const url = accessUrl(relay.url, { groups: ['g'] });
  const silent = await member(t, url, reliable);
  const members = [silent];
  for (const protocol of [PLAIN, PROTOBUF, undefined]) members.push(await member(t, url, protocol));
  const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
  await publisher.waitFor((m) => m.event === 'connected');
  const data = 'a'.repeat(65536);
  const send = async () => {
    assert.equal((await publisher.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data })).success, true);
    publisher.messages.length = 0;
  };
  await send();
  const before = await retainedAfterGc();
  for (let i = 1; i < MEASURED; i++) await send();
  // Written to every member and read (acks come after the fan-out, not after the reads).
  await until(() => members.every((m) => m.dataRead() >= MEASURED), 10_000, 'every member to read the messages');
  const held = (await retainedAfterGc()) - before;
  const body = `"type":"message","from":"group","group":"g","fromUserId":null,"dataType":"text","data":"${data}"}`.length;
  // Past the bound the session ends, as on the JSON subprotocol.
  for (let i = MEASURED; i < 2 * LIMIT / body && silent.ws.readyState === WebSocket.OPEN; i++) await send();
  const closed = await withTimeout(silent.closed, 10_000, 'the silent session to end');
  return { held, counted: (MEASURED - 1) * body, closed };
}

describe('a reliable session that never acknowledges', () => {
  for (const reliable of [PROTOBUF_RELIABLE, RELIABLE]) {
    it(`${reliable}: holds about twice what it counts, not the frames of the group's other members, and ends 1008 SessionBufferFull`, async (t) => {
      const { held, counted, closed } = await heldBy(t, reliable);
      t.diagnostic(`${(held / 2 ** 20).toFixed(2)} MiB held for ${(counted / 2 ** 20).toFixed(2)} MiB counted`);
      // Its body and its reliable copies' parts (protobuf: the DataMessage's fields; JSON: the shared head): about 2.
      // Before: 6.0 (JSON) and 5.0 (protobuf), the plain, protobuf and simple members' frames kept with it; then 3.1,
      // the data's JSON text (on the heap) kept for a simple member's frame.
      assert.ok(held < 2.5 * counted, `${(held / 2 ** 20).toFixed(2)} MiB held for ${(counted / 2 ** 20).toFixed(2)} MiB counted`);
      assert.deepEqual([closed.code, closed.reason], [1008, 'SessionBufferFull']);
      if (reliable === PROTOBUF_RELIABLE) assert.ok(decodeDownstream(closed.last!).system_message.disconnected_message.reason.length > 0, 'a disconnected_message first');
      else assert.equal(JSON.parse(String(closed.last)).event, 'disconnected');
    });
  }
});
