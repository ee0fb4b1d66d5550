// What a stream follower remembers of the last messages it handed on, so that
// a consumer made again (its NATS node died, a leader changed) can tell, for
// each message it reads again, whether it is the one already handed on or
// another one stored in its place. A stream whose servers all stopped at once
// can come back without its last messages and give their sequences to new
// ones (nats-server writes its store behind its acknowledgements); a stream
// that merely changed leader answers for a moment from a state behind what it
// acknowledged. Only the first is a rewrite, and only a message itself tells
// them apart: by its id (the Nats-Msg-Id every edge publishes with), else by
// its store time. Asking where the stream ends (its info) cannot: that answer
// may come from the lagging state, and taking it for a rewrite lost and
// repeated acknowledged events on single failures.
import { TransientMap } from '../collections/transient-map.ts';

/** How many of the messages a follower handed on last it reads again with each new consumer (FollowPosition.rereadFrom). */
export const FOLLOW_REREAD = 64;
/**
 * How many of the messages a follower handed on last it remembers (sequence, id, store time): a message read again
 * under another numbering is known by its id among these, and never handed on twice. More than it reads again: a
 * chaos soak on nats-server 2.9.10 left one copy of a stream 79 acknowledged messages short for good (it was frozen
 * as they were stored, and led the stream later); a follower moving from it to a full copy read 79 it had handed on
 * under sequences 79 higher, and with 64 remembered handed them all on again (each one handed on pushed out the id of
 * the next). About 100 bytes each.
 */
export const FOLLOW_MEMORY = 4096;

/** A message as the follower handed it on. */
export interface HandedOnMessage {
  seq: number;
  /** Its Nats-Msg-Id, when it has one. */
  id: string | undefined;
  /** Its store time (ms since epoch, the server's clock). */
  ms: number;
}

/** How a message read again compares with the one handed on under its sequence. */
export type ReadAgain = 'same' | 'other' | 'unknown';

/** The last `size` messages handed on, oldest first, in a ring. */
export class RecentlyHandedOn {
  private readonly seqs: Float64Array;
  private readonly times: Float64Array;
  private readonly ids: (string | undefined)[];
  /** The sequence each remembered id was handed on under (a TransientMap, not a Map: collections/transient-map.ts says why). */
  private readonly seqById = new TransientMap<number>();
  /** Entries added so far (the newest is at (count - 1) % size). */
  private count = 0;
  /** The oldest entry still held: entries before it were overwritten by the ring, or dropped. */
  private start = 0;

  constructor(private readonly size: number) {
    this.seqs = new Float64Array(size);
    this.times = new Float64Array(size);
    this.ids = new Array<string | undefined>(size);
  }

  get empty(): boolean {
    return this.count === 0;
  }

  private get length(): number {
    return this.count - this.start;
  }

  clear(): void {
    this.count = 0;
    this.start = 0;
    this.seqById.clear();
  }

  /** Forgets the id of the entry in `slot` (dropped or written over). */
  private forget(slot: number): void {
    const id = this.ids[slot];
    if (id !== undefined && this.seqById.get(id) === this.seqs[slot]) this.seqById.delete(id);
  }

  /**
   * Remembers a message handed on. One handed on under a sequence already
   * remembered (the stream was written again from there) replaces it and
   * every later one: they are no longer what the stream holds.
   */
  add(m: HandedOnMessage): void {
    // Only entries still held are dropped: below `start`, the ring has written over them.
    while (this.count > this.start && this.seqs[(this.count - 1) % this.size] >= m.seq) this.forget(--this.count % this.size);
    const at = this.count % this.size;
    // A full ring writes over its oldest entry.
    if (this.count - this.start === this.size) this.forget(at);
    if (m.id !== undefined) this.seqById.set(m.id, m.seq);
    this.seqs[at] = m.seq;
    this.times[at] = m.ms;
    this.ids[at] = m.id;
    this.count++;
    this.start = Math.max(this.start, this.count - this.size);
  }

  /** The latest store time of the messages remembered: anything handed on before them was stored before it too. */
  get latestMs(): number | undefined {
    let latest: number | undefined;
    for (let i = this.start; i < this.count; i++) latest = Math.max(latest ?? 0, this.times[i % this.size]);
    return latest;
  }

  /**
   * The oldest remembered sequence at or after `firstSeq` (what the stream may still hold) among the `last` messages
   * handed on latest (all remembered, without it), if any.
   */
  oldestFrom(firstSeq: number, last = Infinity): number | undefined {
    for (let i = Math.max(this.start, this.count - last); i < this.count; i++) {
      const seq = this.seqs[i % this.size];
      if (seq >= firstSeq) return seq;
    }
    return undefined;
  }

  /** The sequence a message with this id was handed on under, if it is remembered. */
  seqOf(id: string): number | undefined {
    return this.seqById.get(id);
  }

  /** Whether `m`, read again, is the message handed on under its sequence, another one, or one not remembered. */
  compare(m: HandedOnMessage): ReadAgain {
    for (let i = this.count - 1; i >= this.start; i--) {
      const slot = i % this.size;
      if (this.seqs[slot] !== m.seq) continue;
      const id = this.ids[slot];
      if (id !== undefined && m.id !== undefined) return id === m.id ? 'same' : 'other';
      return Math.abs(this.times[slot] - m.ms) <= 1 ? 'same' : 'other';
    }
    return 'unknown';
  }
}

/**
 * A follower's reading of a message below its next sequence, read again by a
 * consumer made again from its oldest remembered message:
 * - `handedOn`: the message handed on under that sequence: skipped;
 * - `notRemembered`: not remembered, or another one than was handed on under
 *   its sequence with nothing matched before it, stored no later than what is
 *   remembered: it was in the stream before the last message handed on (older
 *   than the memory, in a gap of it, or numbered otherwise by this consumer's
 *   server: below): skipped;
 * - `rewritten`: another message in the place of one handed on, after one
 *   that matched in this consumer: the stream was written again from here,
 *   and this message and all after it are new;
 * - `rewrittenBefore`: another message or one not remembered, with nothing
 *   matched before it, stored after everything remembered (a stream that
 *   lost more than is remembered, read again from its end): the rewrite may
 *   begin before what is remembered, so the new messages are found by store
 *   time (after the latest handed on).
 *
 * A stream's copies on its servers can disagree on numbering: nats-server
 * 2.9.10 (Debian 12's) was seen, in a chaos soak under load, to hold the same
 * message under sequence N on one server and N + 1 on another (a repeated
 * publish de-duplicated by some copies and not others, around restarts; fixes
 * to that accounting are in nats-server 2.9.21 and 2.10.14). A consumer made on
 * another server then reads other messages under the sequences handed on.
 * Only a message stored after everything handed on can be new (a rewrite
 * stores its new messages after the loss); one stored before was in the
 * stream already. The follower also knows a message handed on by its id
 * under any sequence (RecentlyHandedOn.seqOf), and never hands it on twice.
 */
export function readAgain(memory: RecentlyHandedOn, m: HandedOnMessage, matchedInThisConsumer: boolean): 'handedOn' | 'notRemembered' | 'rewritten' | 'rewrittenBefore' {
  const seen = memory.compare(m);
  if (seen === 'same') return 'handedOn';
  if (seen === 'other' && matchedInThisConsumer) return 'rewritten';
  return m.ms > (memory.latestMs ?? Infinity) ? 'rewrittenBefore' : 'notRemembered';
}

/** What a follower does with a message its consumer delivered. */
export type FollowStep =
  /** Hand it on; `gapFrom` when sequences from there to before it are gone (the stream's limits dropped them). */
  | { kind: 'handOn'; gapFrom?: number }
  | { kind: 'skip' }
  /** Stop this consumer: the next one starts by store time, from the latest handed on (a rewrite from before what is remembered). */
  | { kind: 'byTime' };

/** What a follower says of a stream it reads (logged by its owner). */
export interface FollowNotes {
  /** A message handed on under one sequence is read under another (said once per consumer). */
  renumbered(note: { id: string; handedOnAs: number; readAs: number }): void;
  /** The stream lost messages it had acknowledged and holds others under their sequences. */
  rewritten(note: { next: number; verdict: 'rewritten' | 'rewrittenBefore'; read: HandedOnMessage; storedAfterMs?: number }): void;
}

/**
 * Where a follower is in a stream, and what it does with each message its
 * consumers deliver: every message once, in order, across consumers made
 * again on other servers (readAgain above).
 */
export class FollowPosition {
  readonly handedOn: RecentlyHandedOn;
  /** Set when the stream was written again past all the follower remembers: the next consumer starts from this store time (ms). */
  private byTime: number | undefined;
  /** Whether a message read again by this consumer was one handed on: a rewrite found after one begins where it is found. */
  private matched = false;
  /** Whether this consumer holds a message handed on under another sequence. */
  private renumbered = false;

  constructor(
    /** The next sequence to hand on. */
    public next: number,
    memory: number,
    private readonly notes: FollowNotes,
  ) {
    this.handedOn = new RecentlyHandedOn(memory);
  }

  /** The store time (ms) of the latest message handed on, from which the next consumer starts when it starts by time. */
  get startFromMs(): number | undefined {
    return this.byTime;
  }

  /** The stream was made again: followed from `first`, nothing remembered of the one before. */
  reset(first: number): void {
    this.next = first;
    this.byTime = undefined;
    this.handedOn.clear();
  }

  /**
   * Where a new consumer of a stream holding `firstSeq` to `lastSeq` starts (by sequence, when it does not start by
   * time): at the oldest of the last FOLLOW_REREAD messages handed on that the stream may hold, so that each is read
   * again and compared; and at the stream's last FOLLOW_REREAD messages whatever it says, as a stream that lost more
   * than is remembered holds its new messages below what is remembered, stored after it (a state behind gives old
   * ones, which are skipped).
   */
  rereadFrom(firstSeq: number, lastSeq: number): number {
    return Math.min(this.next, this.handedOn.oldestFrom(firstSeq, FOLLOW_REREAD) ?? this.next, Math.max(firstSeq, lastSeq + 1 - FOLLOW_REREAD));
  }

  /** A new consumer starts delivering. */
  newConsumer(): void {
    this.matched = false;
    this.renumbered = false;
  }

  /** What to do with `m`, the next message a consumer delivered. */
  take(m: HandedOnMessage): FollowStep {
    // Started by store time: its first message is where the follower is now.
    if (this.byTime !== undefined) {
      this.byTime = undefined;
      this.next = m.seq;
    }
    // Handed on already, under this sequence or another: never twice. Under another, this consumer's server
    // numbers the stream otherwise than the one read before: the messages after it in this numbering are the
    // ones not handed on yet.
    const earlier = m.id === undefined ? undefined : this.handedOn.seqOf(m.id);
    if (earlier !== undefined) {
      this.matched = true;
      if (earlier !== m.seq && !this.renumbered) {
        this.renumbered = true;
        this.notes.renumbered({ id: m.id!, handedOnAs: earlier, readAs: m.seq });
      }
      if (m.seq >= this.next) this.next = m.seq + 1;
      return { kind: 'skip' };
    }
    if (m.seq < this.next) {
      const verdict = readAgain(this.handedOn, m, this.matched);
      if (verdict === 'handedOn') this.matched = true;
      if (verdict === 'handedOn' || verdict === 'notRemembered') return { kind: 'skip' };
      // In a renumbered stream, the first message after the last one handed on takes the place of one: no rewrite.
      if (verdict === 'rewrittenBefore' || !this.renumbered) {
        const storedAfterMs = verdict === 'rewrittenBefore' ? this.handedOn.latestMs : undefined;
        this.notes.rewritten({ next: this.next, verdict, read: m, storedAfterMs });
        if (verdict === 'rewrittenBefore') {
          // Found by store time: every message stored after the latest one handed on.
          this.byTime = storedAfterMs;
          return { kind: 'byTime' };
        }
      }
      this.next = m.seq;
    }
    const gapFrom = m.seq > this.next ? this.next : undefined;
    this.next = m.seq + 1;
    this.handedOn.add(m);
    return gapFrom === undefined ? { kind: 'handOn' } : { kind: 'handOn', gapFrom };
  }
}
