// What a kept pub/sub message holds. A message stays in a hub's history and in
// the log of a reliable member that has not acknowledged it; both count its
// data's size against their bounds. Before (found by review): the data text
// was a slice of the client's frame, which V8 keeps as a view into the frame,
// so a 36-byte `data` beside a 900 KiB member nobody reads held the whole
// frame: 100 such messages +88 MiB, counted as about 100 bytes each. So do a
// message still being read and the frames a splice queues towards a listener:
// each piece a copy, not a view of the whole read it came in.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { jsonTextOf } from '../../src/validation/json-text.ts';
import { rawMemberText } from '../../src/validation/bounded-json.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { floodWithoutReading, maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { rawRelayedPair } from '../helpers/raw-listener.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { gc } from '../helpers/gc.ts';

/** Heap in use (or buffer memory) after full collections, bytes. */
async function heapUsed(what: 'heapUsed' | 'arrayBuffers' = 'heapUsed'): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage()[what];
}

const PAD = 'x'.repeat(900 * 1024);
const MESSAGES = 60;
/** 60 frames of 900 KiB are 53 MiB: what the kept messages may hold in all is a small part of one. */
const MAX_GROWTH = 8 << 20;

describe('a kept message holds its own data, not the frame it came in', () => {
  it('rawMemberText and jsonTextOf give copies that outlive their source alone', async () => {
    const kept: string[] = [];
    const before = await heapUsed();
    for (let i = 0; i < MESSAGES; i++) {
      kept.push(rawMemberText(`{"type":"sendToGroup","data":"a small value, number ${i}","pad":"${PAD}"}`, 'data')!);
      kept.push(jsonTextOf(`${' '.repeat(900 * 1024)}"another small value ${i}"${' '.repeat(16)}`)!);
    }
    const growth = (await heapUsed()) - before;
    assert.equal(kept[0], '"a small value, number 0"');
    assert.equal(kept[1], '"another small value 0"');
    assert.ok(growth < MAX_GROWTH, `${kept.length} small values hold ${(growth / 2 ** 20).toFixed(1)} MiB`);
  });

  it('in a hub\'s history and in a reliable member\'s unacknowledged messages', async (t) => {
    const relay = await startPubSubRelay(t, {
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 1000 } }] },
    });
    // A reliable member that never acknowledges: its session keeps every message.
    const member = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'keeper' }), RELIABLE, t);
    assert.equal((await member.request({ type: 'joinGroup', group: 'kept', ackId: 1 })).success, true);
    const sender = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'sender' }), undefined, t);
    const before = await heapUsed();
    for (let i = 0; i < MESSAGES; i++) {
      sender.send(`{"type":"sendToGroup","group":"kept","ackId":${i + 10},"data":"small data ${i} 0123456789","unread":"${PAD}"}`);
      await sender.waitFor((m) => m.type === 'ack' && m.ackId === i + 10, 10000);
    }
    await member.waitFor((m) => m.type === 'message' && m.data === `small data ${MESSAGES - 1} 0123456789`, 10000);
    const growth = (await heapUsed()) - before;
    assert.ok(growth < MAX_GROWTH, `${MESSAGES} kept messages of 26 bytes hold ${(growth / 2 ** 20).toFixed(1)} MiB`);
  });

  it('a message still being read holds its pieces, not the reads they came in', async (t) => {
    // Each write: ~64 KiB of empty pongs (ignored, free) and one 1-byte piece of a message that never ends.
    // Before (found by review): each piece was a view of its read's buffer, charged 65 bytes, holding ~64 KiB:
    // ~512 MiB for one socket within the 1 MiB message cap.
    const relay = await startPubSubRelay(t);
    const url = new URL(accessUrl(relay.url, { userId: 'hoarder' }));
    const client = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
    assert.equal(client.status, 101);
    client.socket.resume();
    const pong = maskedFrame(0xa, '');
    const piece = maskedFrame(0x0, ' ', false);
    const write = Buffer.concat([...Array.from({ length: Math.floor((65536 - piece.length) / pong.length) }, () => pong), piece]);
    const before = await heapUsed('arrayBuffers');
    client.socket.write(maskedFrame(0x1, '{', false));
    for (let i = 0; i < 1000; i++) await new Promise<void>((resolve, reject) => client.socket.write(write, (err) => (err ? reject(err) : resolve())));
    // The relay has read them all once a message after them is answered: a ping, its pong.
    client.socket.write(maskedFrame(0x9, 'sync'));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no pong within 20 s')), 20000);
      client.socket.on('data', (d: Buffer) => {
        if (d.includes(Buffer.from('sync'))) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const growth = (await heapUsed('arrayBuffers')) - before;
    assert.equal(client.socket.destroyed, false, 'within the message cap: the client stays');
    assert.ok(growth < MAX_GROWTH, `1,000 pieces of 1 byte hold ${(growth / 2 ** 20).toFixed(1)} MiB of buffers`);
  });

  it('a relayed WebSocket queues the frames towards a listener that does not read, not the reads they came in', async (t) => {
    // Each write: ~64 KiB of pongs (ignored, free) and one 2 KiB frame, to a listener leg that does not read; the
    // cap is far: what is queued is what came. Before (found by review): each frame was queued as a view of its whole
    // read, ~32 times its bytes (1 MiB of spliceBufferBytes held ~127 MiB with 513-byte frames).
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], limits: { spliceBufferBytes: 64 << 20 } });
    const { sender, leg } = await rawRelayedPair(t, relay);
    assert.equal(sender.status, 101);
    leg.socket.pause();
    const pong = maskedFrame(0xa, Buffer.alloc(125, 0x70));
    const frame = maskedFrame(0x2, Buffer.alloc(2048, 0x61));
    const write = Buffer.concat([...Array.from({ length: Math.floor((65536 - frame.length) / pong.length) }, () => pong), frame]);
    const before = await heapUsed('arrayBuffers');
    const result = await floodWithoutReading(sender.socket, write, 192 << 20, 1500);
    const growth = (await heapUsed('arrayBuffers')) - before;
    t.diagnostic(`wrote ${(result.written / 2 ** 20).toFixed(0)} MiB, buffers +${(growth / 2 ** 20).toFixed(1)} MiB`);
    // 192 MiB of writes carry 6 MiB of frames (part of it in the kernel's buffers).
    assert.ok(growth < MAX_GROWTH * 2, `the queue towards the listener holds ${(growth / 2 ** 20).toFixed(1)} MiB of buffers`);
  });
});
