// The edge's log of messages held by reliable sessions (src/pubsub/message-log.ts):
// a message delivered to many sessions is kept once, let go when the last
// session releases it, and chunks of the log go once nothing in them is held.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageLog, type LoggedMessage } from '../../src/pubsub/message-log.ts';
import { ReliableSession } from '../../src/pubsub/reliable-session.ts';
import { gc } from '../helpers/gc.ts';

const message = (n: number): LoggedMessage => ({ body: Buffer.from(`m${n}`), mid: `mid${n}`, position: n });

describe('MessageLog', () => {
  it('keeps a message held by several sessions once, until the last lets go', () => {
    const log = new MessageLog();
    const m = message(1);
    const a = log.hold(m);
    const b = log.hold(m);
    assert.equal(a, b, 'one index for every holder');
    assert.equal(log.at(a), m);
    log.release(a);
    assert.equal(log.at(a), m, 'still held by one');
    log.release(b);
    assert.equal(log.at(a), undefined);
    // Released more often than held: nothing happens.
    log.release(a);
    const again = log.hold(m);
    assert.notEqual(again, a, 'held again after it was let go: a new place in the log');
    assert.equal(log.at(again), m);
  });

  it('drops chunks once nothing in them is held, whether released before or after they fill', () => {
    const log = new MessageLog();
    // Released at once: each chunk is empty when the next one starts.
    for (let n = 0; n < 20_000; n++) log.release(log.hold(message(n)));
    assert.equal(log.chunkCount, 1, 'only the chunk being filled');
    // Held across chunks, released later, oldest first and newest first.
    const held = Array.from({ length: 20_000 }, (_, n) => log.hold(message(n)));
    assert.ok(log.chunkCount >= 5);
    for (const index of held.slice(0, 10_000)) log.release(index);
    for (const index of held.slice(10_000).reverse()) log.release(index);
    assert.equal(log.chunkCount, 1);
    // One message held keeps its own chunk (and the current one) only.
    const kept = log.hold(message(-1));
    for (let n = 0; n < 10_000; n++) log.release(log.hold(message(n)));
    assert.equal(log.chunkCount, 2);
    assert.equal(log.at(kept)?.mid, 'mid-1');
    log.release(kept);
    assert.equal(log.chunkCount, 1);
  });

  it('keeps little besides a message held alone among many let go (before: its 4096-slot chunk, 48 KiB, for one 100-byte message)', async () => {
    const heap = async () => {
      for (let i = 0; i < 3; i++) {
        gc();
        await new Promise((r) => setImmediate(r));
      }
      return process.memoryUsage().heapUsed;
    };
    const log = new MessageLog();
    const before = await heap();
    // A session that never acknowledges gets one message in 4096; every other is let go at once.
    const kept: number[] = [];
    for (let n = 0; n < 300 * 4096; n++) {
      const index = log.hold(message(n % 4096 === 0 ? n : -1));
      if (n % 4096 === 0) kept.push(index);
      else log.release(index);
    }
    const perHeld = ((await heap()) - before) / kept.length;
    assert.equal(log.at(kept[0])?.mid, 'mid0');
    assert.ok(perHeld < 8 * 1024, `${Math.round(perHeld)} bytes kept per held message`);
    for (const index of kept) log.release(index);
    assert.equal(log.chunkCount, 1);
  });

  it('lets go of a run of indices at once, as a release of each would: the bytes of those held, the last of them, chunks dropped', () => {
    const log = new MessageLog();
    const messages = Array.from({ length: 700 }, (_, n) => ({ body: Buffer.alloc(n % 7), mid: `mid${n}`, position: n }) as LoggedMessage);
    // Two sessions hold every message (of 0 to 6 bytes, over three chunks).
    const first = new Float64Array(messages.map((m) => log.hold(m)));
    const second = new Float64Array(messages.map((m) => log.hold(m)));
    // Let go of the first run by one session: every message is still held by the other.
    const bodyBytes = (from: number, to: number) => messages.slice(from, to).reduce((n, m) => n + m.body.length, 0);
    assert.equal(log.releaseRun(first, 0, 300), bodyBytes(0, 300));
    assert.equal(log.lastReleased, messages[299]);
    assert.equal(log.at(first[299]), messages[299], 'still held by the other session');
    // The other lets go of the same run: the messages go, and their chunk with them.
    const chunksBefore = log.chunkCount;
    assert.equal(log.releaseRun(second, 0, 300), bodyBytes(0, 300));
    assert.equal(log.lastReleased, messages[299]);
    assert.equal(log.at(first[0]), undefined);
    assert.ok(log.chunkCount < chunksBefore, 'the first chunk, now holding nothing, is dropped');
    // A run over indices already let go counts nothing and names no message.
    assert.equal(log.releaseRun(second, 0, 300), 0);
    assert.equal(log.lastReleased, undefined);
    // A run whose last index was let go before counts up to the last one held.
    assert.equal(log.releaseRun(first, 300, 700), bodyBytes(300, 700));
    assert.equal(log.releaseRun(second, 300, 699), bodyBytes(300, 699));
    assert.equal(log.lastReleased, messages[698]);
    assert.equal(log.releaseRun(second, 695, 700), bodyBytes(699, 700));
    assert.equal(log.lastReleased, messages[699]);
    assert.equal(log.chunkCount, 1, 'only the chunk being filled');
  });

  it('gives sessions the same message by index: each reads its own sequence ids and the shared body', () => {
    const limits = { maxMessages: 100, maxBytes: 1 << 20 };
    const [a, b] = [new ReliableSession(limits), new ReliableSession(limits)];
    a.push(message(0));
    const shared = message(1);
    a.push(shared);
    b.push(shared);
    assert.equal(shared.logIndex !== undefined, true);
    assert.deepEqual([...a.after(0)].map((e) => [e.sequenceId, e.mid]), [[1, 'mid0'], [2, 'mid1']]);
    assert.deepEqual([...b.after(0)].map((e) => [e.sequenceId, e.mid]), [[1, 'mid1']]);
    a.acknowledge(2);
    assert.equal([...b.after(0)][0].body, shared.body, 'b still holds it after a acknowledged it');
    b.clear();
    assert.equal(b.unacknowledged, 0);
  });
});
