// A reliable session's buffer (src/pubsub/reliable-session.ts): dense
// sequence ids, cumulative acknowledgements, limits in messages and bytes,
// re-sending from any point, taking over another edge's messages, and
// continuing from a checkpoint, across many acknowledgement cycles.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ReliableSession, type SessionEntry } from '../../src/pubsub/reliable-session.ts';

const body = (n: number) => Buffer.from(`m${n}`);
const ids = (entries: Iterable<SessionEntry>) => [...entries].map((e) => e.sequenceId);

describe('ReliableSession', () => {
  it('numbers messages densely, drops what is acknowledged and re-sends the rest from any point', () => {
    const s = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    for (let i = 1; i <= 5; i++) assert.equal(s.push({ body: body(i), mid: `mid${i}`, position: 10 + i }), i);
    assert.deepEqual(ids(s.after(0)), [1, 2, 3, 4, 5]);
    assert.deepEqual(ids(s.after(3)), [4, 5]);
    s.acknowledge(2);
    assert.equal(s.unacknowledged, 3);
    assert.equal(s.firstSequenceId, 3);
    assert.deepEqual(ids(s.after(0)), [3, 4, 5]);
    const [third] = s.after(2);
    assert.deepEqual({ ...third, body: third.body.toString() }, { sequenceId: 3, body: 'm3', mid: 'mid3', position: 13 });
    // An old or repeated acknowledgement changes nothing; one past the end drops everything.
    s.acknowledge(1);
    assert.equal(s.unacknowledged, 3);
    s.acknowledge(99);
    assert.equal(s.unacknowledged, 0);
    assert.equal(s.firstSequenceId, 6);
    assert.deepEqual(ids(s.after(0)), []);
    assert.equal(s.push({ body: body(6), mid: 'mid6', position: 0 }), 6);
    assert.deepEqual(ids(s.after(5)), [6]);
  });

  it('lets go of the oldest messages whose time to live passed, as if acknowledged, and of none behind a live one', () => {
    const s = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    const now = 1_000_000;
    s.push({ body: body(1), mid: 'mid1', position: 0, expiresAt: now - 1 });
    s.push({ body: body(2), mid: 'mid2', position: 0, expiresAt: now });
    s.push({ body: body(3), mid: 'mid3', position: 0 });
    s.push({ body: body(4), mid: 'mid4', position: 0, expiresAt: now - 5 });
    s.push({ body: body(5), mid: 'mid5', position: 0, expiresAt: now + 1 });
    assert.equal(s.dropExpired(now), 2);
    assert.equal(s.firstSequenceId, 3);
    assert.deepEqual([...s.after(0)].map((e) => [e.sequenceId, e.expiresAt]), [[3, undefined], [4, now - 5], [5, now + 1]]);
    assert.equal(s.dropExpired(now), 0, 'one behind a message without a time to live waits');
    s.acknowledge(3);
    assert.equal(s.dropExpired(now), 1);
    assert.equal(s.dropExpired(now + 1), 1);
    assert.equal(s.unacknowledged, 0);
    assert.equal(s.push({ body: body(6), mid: 'mid6', position: 0 }), 6);
  });

  it('finds a held message by its sequence id, and none that is acknowledged or not yet pushed', () => {
    const s = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    for (let i = 1; i <= 5; i++) s.push({ body: body(i), mid: `mid${i}`, position: 0 });
    s.acknowledge(2);
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((id) => s.messageAt(id)?.body.toString()), [undefined, undefined, 'm3', 'm4', 'm5', undefined]);
    s.acknowledge(5);
    assert.equal(s.messageAt(5), undefined);
    // Acknowledged ahead of what was written: nothing before them is owed to the socket.
    assert.equal(s.writtenUpTo, 5);
    s.push({ body: body(6), mid: 'mid6', position: 0 });
    assert.equal(s.messageAt(6)?.mid, 'mid6');
  });

  it('refuses past its limits in messages and in bytes, and takes more once acknowledged', () => {
    const byCount = new ReliableSession({ maxMessages: 3, maxBytes: 1 << 20 });
    for (let i = 1; i <= 3; i++) assert.equal(byCount.push({ body: body(i), mid: 'm', position: 0 }), i);
    assert.equal(byCount.push({ body: body(4), mid: 'm', position: 0 }), undefined);
    byCount.acknowledge(1);
    assert.equal(byCount.push({ body: body(4), mid: 'm', position: 0 }), 4);
    const byBytes = new ReliableSession({ maxMessages: 100, maxBytes: 10 });
    assert.equal(byBytes.push({ body: Buffer.alloc(6), mid: 'm', position: 0 }), 1);
    assert.equal(byBytes.push({ body: Buffer.alloc(6), mid: 'm', position: 0 }), undefined);
    byBytes.acknowledge(1);
    assert.equal(byBytes.push({ body: Buffer.alloc(6), mid: 'm', position: 0 }), 2);
    // An empty buffer takes a message larger than the limit; nothing more until it is acknowledged.
    byBytes.acknowledge(2);
    assert.equal(byBytes.push({ body: Buffer.alloc(25), mid: 'm', position: 0 }), 3);
    assert.equal(byBytes.push({ body: Buffer.alloc(1), mid: 'm', position: 0 }), undefined);
    byBytes.acknowledge(3);
    assert.equal(byBytes.push({ body: Buffer.alloc(1), mid: 'm', position: 0 }), 4);
  });

  it('keeps ids and contents right over many cycles of pushes and partial acknowledgements', () => {
    const s = new ReliableSession({ maxMessages: 10_000, maxBytes: 1 << 30 });
    let acked = 0;
    for (let n = 1; n <= 50_000; n++) {
      assert.equal(s.push({ body: body(n), mid: `mid${n}`, position: n }), n);
      // Acknowledge in uneven steps, sometimes everything, so the buffer empties, refills and is cut down.
      if (n % 1500 === 0) acked = n - (n % 4500 === 0 ? 0 : 700);
      if (n % 1500 === 0) s.acknowledge(acked);
    }
    assert.equal(s.firstSequenceId, acked + 1);
    const rest = [...s.after(acked)];
    assert.equal(rest.length, 50_000 - acked);
    rest.forEach((e, i) => {
      assert.equal(e.sequenceId, acked + 1 + i);
      assert.equal(e.body.toString(), `m${e.sequenceId}`);
      assert.equal(e.position, e.sequenceId);
    });
  });

  it('takes over another edge’s messages with their ids, and continues from a checkpoint', () => {
    const taken = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    taken.restore([{ sequenceId: 41, body: body(41), mid: 'a', position: 0 }, { sequenceId: 42, body: body(42), mid: 'b', position: 0 }], 42);
    assert.equal(taken.firstSequenceId, 41);
    assert.equal(taken.push({ body: body(43), mid: 'c', position: 0 }), 43);
    assert.deepEqual(ids(taken.after(41)), [42, 43]);
    taken.acknowledge(42);
    assert.deepEqual(ids(taken.after(0)), [43]);

    const empty = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    empty.restore([], 7);
    assert.equal(empty.push({ body: body(8), mid: 'x', position: 0 }), 8);

    const resumed = new ReliableSession({ maxMessages: 100, maxBytes: 1 << 20 });
    resumed.resumeFrom({ sequenceId: 100, position: 5000, groups: ['g'] });
    assert.equal(resumed.firstSequenceId, 101);
    assert.equal(resumed.push({ body: body(101), mid: 'x', position: 5001 }), 101);
    assert.equal(resumed.push({ body: body(102), mid: 'y', position: 5002 }), 102);
    resumed.acknowledge(101);
    assert.deepEqual(ids(resumed.after(0)), [102]);
    // With everything acknowledged, the checkpoint is at the last position read.
    resumed.acknowledge(102);
    assert.deepEqual(resumed.nextCheckpoint(new Set(['g']), 5010), { sequenceId: 102, position: 5010, groups: ['g'] });
  });

  it('behind the live flow with everything acknowledged, checkpoints where it is behind, with its groups there', () => {
    // A durable hub's session whose buffer filled at stream position 5003 (session-catch-up.ts): the events after
    // 5002 are not numbered yet. Before, its checkpoint jumped to the edge's position (5010), with the groups of
    // then, and an edge taking the session over started there: the events between were never sent.
    const s = new ReliableSession({ maxMessages: 2, maxBytes: 1 << 20 });
    s.resumeFrom({ sequenceId: 100, position: 5000, groups: ['g'] });
    assert.equal(s.push({ body: body(101), mid: 'x', position: 5001 }), 101);
    assert.equal(s.push({ body: body(102), mid: 'y', position: 5002 }), 102);
    assert.equal(s.push({ body: body(103), mid: 'z', position: 5003 }), undefined);
    s.behindAt = 5002;
    // Group changes the live flow read meanwhile: left g at 5005, joined h at 5007.
    assert.equal(s.noteMembership(5005, 'g', false), true);
    assert.equal(s.noteMembership(5007, 'h', true), true);
    assert.equal(s.roomToCatchUp, false);
    s.acknowledge(101);
    assert.equal(s.roomToCatchUp, true);
    assert.deepEqual(s.nextCheckpoint(new Set(['h']), 5010), { sequenceId: 101, position: 5001, groups: ['g'], mid: 'x' });
    s.acknowledge(102);
    assert.deepEqual(s.nextCheckpoint(new Set(['h']), 5010), { sequenceId: 102, position: 5002, groups: ['g'] });
    // The changes after where it is behind stay, for the catch-up and later checkpoints.
    assert.deepEqual(s.membershipChangesAfter(5002), [
      { position: 5005, group: 'g', joined: false },
      { position: 5007, group: 'h', joined: true },
    ]);
    assert.deepEqual(s.membershipChangesAfter(5005), [{ position: 5007, group: 'h', joined: true }]);
    assert.deepEqual(s.groupsAt(new Set(['h']), 5006), []);
  });
});
