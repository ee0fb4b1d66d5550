// The latest messages of a durable hub's stream kept while a session is behind
// the live flow (src/pubsub/recent-stream.ts): everything after the position
// it started from, bounded in messages and bytes, oldest going first, and the
// messages' bytes their own.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecentStream } from '../../src/pubsub/recent-stream.ts';

const message = (seq: number, bytes = 10) => ({ seq, subject: 's', data: new Uint8Array(bytes).fill(seq % 256) });
const seqs = (messages: { seq: number }[] | undefined) => messages?.map((m) => m.seq);

describe('RecentStream', () => {
  it('keeps nothing until started, then every message after the position it started from', () => {
    const recent = new RecentStream(100, 1 << 20);
    recent.add(message(1));
    assert.equal(recent.keeping, false);
    assert.equal(recent.after(0), undefined);
    recent.start(1);
    // Started again while keeping: the first start stands.
    recent.start(5);
    for (const seq of [2, 3, 5, 8]) recent.add(message(seq));
    assert.deepEqual(seqs(recent.after(1)), [2, 3, 5, 8]);
    assert.deepEqual(seqs(recent.after(4)), [5, 8]);
    assert.deepEqual(seqs(recent.after(8)), []);
    // Before where it started: not all of it is here.
    assert.equal(recent.after(0), undefined);
    recent.stop();
    assert.equal(recent.keeping, false);
    assert.equal(recent.after(8), undefined);
  });

  it('lets the oldest go past its bounds in messages and in bytes, and then holds only what follows them', () => {
    const byCount = new RecentStream(3, 1 << 20);
    byCount.start(0);
    for (let seq = 1; seq <= 5; seq++) byCount.add(message(seq));
    assert.equal(byCount.after(1), undefined);
    assert.deepEqual(seqs(byCount.after(2)), [3, 4, 5]);

    const byBytes = new RecentStream(100, 25);
    byBytes.start(0);
    for (let seq = 1; seq <= 4; seq++) byBytes.add(message(seq, 10));
    assert.deepEqual(seqs(byBytes.after(2)), [3, 4]);
    // One message larger than the bound is kept alone.
    byBytes.add(message(5, 100));
    assert.deepEqual(seqs(byBytes.after(4)), [5]);
    assert.equal(byBytes.after(3), undefined);
  });

  it('copies a message out of the larger read it came in', () => {
    const recent = new RecentStream(10, 1 << 20);
    recent.start(0);
    const read = new Uint8Array(65536);
    recent.add({ seq: 1, subject: 's', data: read.subarray(100, 110) });
    const [kept] = recent.after(0)!;
    assert.equal(kept.data.length, 10);
    assert.equal(kept.data.buffer.byteLength, 10);
  });

  it('stays bounded over many messages, and finds the first after a position at any point', () => {
    const recent = new RecentStream(1000, 1 << 20);
    recent.start(0);
    for (let seq = 1; seq <= 50_000; seq++) recent.add(message(seq, 1));
    assert.deepEqual(seqs(recent.after(49_997)), [49_998, 49_999, 50_000]);
    assert.equal(recent.after(48_999), undefined);
    assert.equal(recent.after(49_000)!.length, 1000);
  });
});
