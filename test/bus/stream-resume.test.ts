// What a stream follower remembers of the messages it handed on, and how it
// reads them again with a new consumer (src/bus/stream-resume.ts): the same
// message is skipped whatever the stream's state said meanwhile (a leader
// answering from behind after a failure), another one in its place is a
// rewrite. Before: a stream info or message lookup answered from a lagging
// state was taken for a rewrite, and a chaos soak lost and repeated
// acknowledged events on single NATS failures.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FOLLOW_MEMORY, FollowPosition, RecentlyHandedOn, readAgain, type FollowNotes, type HandedOnMessage } from '../../src/bus/stream-resume.ts';

const msg = (seq: number, id?: string, ms = 1000 + seq): HandedOnMessage => ({ seq, id, ms });

describe('a follower reading its last messages again', () => {
  it('remembers the last N handed on, oldest first, and where a new consumer starts reading again', () => {
    const memory = new RecentlyHandedOn(4);
    assert.equal(memory.empty, true);
    assert.equal(memory.oldestFrom(1), undefined);
    for (let seq = 1; seq <= 6; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(memory.oldestFrom(1), 3, 'the ring keeps 3 to 6');
    assert.equal(memory.oldestFrom(5), 5, 'those the stream no longer holds are not read again');
    assert.equal(memory.oldestFrom(7), undefined);
    assert.equal(memory.latestMs, 1006);
    assert.equal(memory.compare(msg(2, 'id-2')), 'unknown', 'forgotten');
    assert.equal(memory.compare(msg(4, 'id-4')), 'same');
    assert.equal(memory.compare(msg(4, 'another')), 'other');
  });

  it('skips every message read again that it handed on, matched by id, whatever its order of arrival', () => {
    // A consumer made on a leader that has not applied everything yet delivers the same messages, later.
    const memory = new RecentlyHandedOn(64);
    for (let seq = 10; seq <= 20; seq++) memory.add(msg(seq, `id-${seq}`));
    let matched = false;
    for (let seq = 10; seq <= 20; seq++) {
      const verdict = readAgain(memory, msg(seq, `id-${seq}`, 5000), matched);
      assert.equal(verdict, 'handedOn', `seq ${seq}: the store time differs, the id is the message`);
      matched = true;
    }
    assert.equal(readAgain(memory, msg(5, 'id-5'), matched), 'notRemembered', 'older than remembered: skipped, not handed on twice');
  });

  it('tells a rewrite from where it begins: after a match, or before what it remembers', () => {
    const memory = new RecentlyHandedOn(64);
    for (let seq = 1; seq <= 5; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(readAgain(memory, msg(4, 'new-a'), true), 'rewritten');
    assert.equal(readAgain(memory, msg(1, 'new-a', 9000), false), 'rewrittenBefore', 'stored after everything handed on: new');
    assert.equal(readAgain(memory, msg(1, 'other-a'), false), 'notRemembered', 'stored before the last handed on: in the stream already (a copy numbered otherwise)');
    // Handing on a message under a sequence remembered drops it and every later one.
    memory.add(msg(4, 'new-a', 9000));
    assert.equal(memory.compare(msg(5, 'id-5')), 'unknown');
    assert.equal(memory.compare(msg(4, 'new-a', 9000)), 'same');
    assert.equal(memory.latestMs, 9000);
    assert.equal(memory.oldestFrom(1), 1);
  });

  it('drops only what the ring still holds when a rewrite comes after it wrapped', () => {
    // Found by review: the first version counted back past what the ring had written over, so it "remembered"
    // sequences it had dropped and read nothing again at the next consumer.
    const memory = new RecentlyHandedOn(64);
    for (let seq = 1; seq <= 100; seq++) memory.add(msg(seq, `id-${seq}`));
    memory.add(msg(95, 'new-95'));
    assert.equal(memory.oldestFrom(1), 37);
    assert.equal(memory.compare(msg(94, 'id-94')), 'same');
    assert.equal(memory.compare(msg(95, 'new-95')), 'same');
    assert.equal(memory.compare(msg(96, 'id-96')), 'unknown');
    assert.equal(memory.compare(msg(36, 'id-36')), 'unknown');
  });

  it('takes a message it does not remember, stored after everything it remembers, for a new one', () => {
    // A stream that lost more than is remembered, read again from its end: its new messages are below what is remembered.
    const memory = new RecentlyHandedOn(4);
    for (let seq = 10; seq <= 13; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(memory.latestMs, 1013);
    assert.equal(readAgain(memory, msg(5, 'old-5', 1005), false), 'notRemembered');
    assert.equal(readAgain(memory, msg(4, 'new-4', 2000), false), 'rewrittenBefore');
    assert.equal(readAgain(new RecentlyHandedOn(4), msg(4, 'x', 2000), false), 'notRemembered', 'nothing remembered: nothing to tell');
  });

  it('compares store times when a message has no id (1 ms apart is the same message)', () => {
    const memory = new RecentlyHandedOn(8);
    memory.add(msg(1, undefined, 1000));
    assert.equal(memory.compare(msg(1, undefined, 1001)), 'same');
    assert.equal(memory.compare(msg(1, undefined, 1003)), 'other');
    assert.equal(memory.compare(msg(1, 'id-1', 1000)), 'same');
  });
});

/** A stream's copy on one server, as its consumers deliver it. */
type Copy = HandedOnMessage[];

/** `count` messages from sequence 1, 10 ms apart, ids m1, m2... */
function copyOf(count: number): Copy {
  return Array.from({ length: count }, (_, i) => msg(i + 1, `m${i + 1}`, 10_000 + 10 * i));
}

/** The same messages numbered without the one with id `id` (a server that took it for a repeat). */
function without(copy: Copy, id: string): Copy {
  const at = copy.findIndex((m) => m.id === id);
  return [...copy.slice(0, at), ...copy.slice(at + 1).map((m) => ({ ...m, seq: m.seq - 1 }))];
}

/** The same messages with the one of id `id` held twice (a server that stored a repeat, later). */
function withRepeat(copy: Copy, id: string): Copy {
  const at = copy.findIndex((m) => m.id === id);
  const repeat = { ...copy[at], seq: copy[at].seq + 1, ms: copy[at].ms + 1 };
  return [...copy.slice(0, at + 1), repeat, ...copy.slice(at + 1).map((m) => ({ ...m, seq: m.seq + 1, ms: m.ms + 2 }))];
}

class Follower {
  readonly handedOn: string[] = [];
  readonly notes: string[] = [];
  readonly position: FollowPosition;
  constructor(next: number) {
    const notes: FollowNotes = {
      renumbered: (n) => this.notes.push(`renumbered ${n.id} ${n.handedOnAs}->${n.readAs}`),
      rewritten: (n) => this.notes.push(`rewritten ${n.verdict}`),
    };
    this.position = new FollowPosition(next, FOLLOW_MEMORY, notes);
  }

  /** A consumer made on `copy` as follow() makes it, delivering up to `upTo` messages (all by default). */
  consume(copy: Copy, upTo = Infinity): void {
    for (let consumers = 0; consumers < 3; consumers++) {
      const { position } = this;
      const first = copy[0]?.seq ?? 1;
      const last = copy.at(-1)?.seq ?? 0;
      const from = position.rereadFrom(first, last);
      const byTime = position.startFromMs;
      const delivered = byTime !== undefined ? copy.filter((m) => m.ms >= byTime) : copy.filter((m) => m.seq >= from);
      position.newConsumer();
      let restarted = false;
      for (const m of delivered) {
        if (this.handedOn.length >= upTo) return;
        const step = position.take(m);
        if (step.kind === 'byTime') {
          restarted = true;
          break;
        }
        if (step.kind === 'handOn') this.handedOn.push(m.id!);
      }
      if (!restarted) return;
    }
    throw new Error('still restarting after 3 consumers');
  }
}

const ids = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `m${from + i}`);

describe("a follower whose next consumer is on a server numbering the stream otherwise", () => {
  // A chaos soak under load (nats-server 2.9.10) saw the same message under sequence N on one server and N + 1
  // on another: a follower whose consumer moved took that for a rewrite and restarted by store time, and
  // subscribers lost and got twice acknowledged events. Now every message is handed on once, in order.
  it('hands every message on once when the new server lacks one the first held (its later numbers one lower)', () => {
    const a = copyOf(200);
    const f = new Follower(1);
    f.consume(a, 150);
    f.consume(without(a, 'm120'));
    assert.deepEqual(f.handedOn, ids(1, 200));
    assert.deepEqual(f.notes, ['renumbered m121 121->120']);
  });

  it('hands every message on once when the new server holds a repeat (its later numbers one higher)', () => {
    const a = copyOf(200);
    const f = new Follower(1);
    f.consume(a, 150);
    f.consume(withRepeat(a, 'm140'));
    assert.deepEqual(f.handedOn, ids(1, 200));
    assert.deepEqual(f.notes, ['renumbered m140 140->141']);
  });

  it('skips a repeat the stream holds, on the same server too', () => {
    const f = new Follower(1);
    f.consume(withRepeat(copyOf(100), 'm50'));
    assert.deepEqual(f.handedOn, ids(1, 100));
  });

  it('starts where it should when it remembers only the message before its start, read on another server', () => {
    // A new edge asks the stream leader where the stream ends and which message is last; its consumer is then
    // made on a server numbering otherwise, both ways.
    const a = copyOf(200);
    for (const other of [without(a, 'm150'), withRepeat(a, 'm150')]) {
      const f = new Follower(181);
      f.position.handedOn.add(a[179]);
      f.consume(other);
      assert.deepEqual(f.handedOn, ids(181, 200));
    }
  });

  it('hands every message on once moving between copies 79 messages apart, both ways and back (a soak on 2.9.10)', () => {
    // One copy lacked 79 acknowledged messages for good (its server was frozen as they were stored) and led the
    // stream later. Before: remembering 64 messages, a follower moving from it to a full copy read the 79 it had
    // handed on under sequences 79 higher and handed them all on again (each pushed out the next one's id).
    const full = copyOf(3000);
    const short = [...full.slice(0, 100), ...full.slice(179).map((m) => ({ ...m, seq: m.seq - 79 }))];
    const stored = (copy: Copy, upTo: number) => copy.filter((m) => Number(m.id!.slice(1)) <= upTo);
    const f = new Follower(1);
    f.consume(stored(full, 1500));
    f.consume(stored(short, 1600));
    f.consume(stored(full, 2500));
    f.consume(stored(short, 3000));
    assert.deepEqual(f.handedOn, ids(1, 3000), 'each once, in order');
  });

  it('still finds a rewrite: messages lost and others stored later under their sequences', () => {
    const a = copyOf(200);
    const f = new Follower(1);
    f.consume(a);
    // Every server stopped at once; the stream came back without 191-200, and stored n191... after.
    const rewritten = [...a.slice(0, 190), ...Array.from({ length: 20 }, (_, i) => msg(191 + i, `n${191 + i}`, 50_000 + i))];
    f.consume(rewritten);
    assert.deepEqual(f.handedOn, [...ids(1, 200), ...Array.from({ length: 20 }, (_, i) => `n${191 + i}`)]);
    assert.deepEqual(f.notes, ['rewritten rewritten']);
    // One that lost more than is read again, less than is remembered: the rewrite is found where it begins.
    const g = new Follower(1);
    g.consume(a);
    const lostMore = [...a.slice(0, 100), ...Array.from({ length: 30 }, (_, i) => msg(101 + i, `p${101 + i}`, 60_000 + i))];
    g.consume(lostMore);
    assert.deepEqual(g.handedOn, [...ids(1, 200), ...Array.from({ length: 30 }, (_, i) => `p${101 + i}`)]);
    assert.deepEqual(g.notes, ['rewritten rewritten']);
    // And one that lost more than is remembered: found by store time, every new message once.
    const big = copyOf(FOLLOW_MEMORY + 200);
    const h = new Follower(1);
    h.consume(big);
    const lostMost = [...big.slice(0, 100), ...Array.from({ length: 30 }, (_, i) => msg(101 + i, `p${101 + i}`, 10_000_000 + i))];
    h.consume(lostMost);
    assert.deepEqual(h.handedOn, [...ids(1, FOLLOW_MEMORY + 200), ...Array.from({ length: 30 }, (_, i) => `p${101 + i}`)]);
    assert.deepEqual(h.notes, ['rewritten rewrittenBefore']);
  });
});
