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
  }

  /**
   * Remembers a message handed on. One handed on under a sequence already
   * remembered (the stream was written again from there) replaces it and
   * every later one: they are no longer what the stream holds.
   */
  add(m: HandedOnMessage): void {
    // Only entries still held are dropped: below `start`, the ring has written over them.
    while (this.count > this.start && this.seqs[(this.count - 1) % this.size] >= m.seq) this.count--;
    const at = this.count % this.size;
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

  /** The oldest remembered sequence at or after `firstSeq` (what the stream may still hold), if any. */
  oldestFrom(firstSeq: number): number | undefined {
    for (let i = this.start; i < this.count; i++) {
      const seq = this.seqs[i % this.size];
      if (seq >= firstSeq) return seq;
    }
    return undefined;
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
 * - `notRemembered`: not remembered, and stored no later than what is
 *   (older than the memory, or in a gap of it): skipped;
 * - `rewritten`: another message in the place of one handed on, after one
 *   that matched in this consumer: the stream was written again from here,
 *   and this message and all after it are new;
 * - `rewrittenBefore`: another message, with nothing matched before it in
 *   this consumer, or one not remembered stored after everything remembered
 *   (a stream that lost more than is remembered, read again from its end):
 *   the rewrite may begin before what is remembered, so the new messages are
 *   found by store time (after the latest handed on).
 */
export function readAgain(memory: RecentlyHandedOn, m: HandedOnMessage, matchedInThisConsumer: boolean): 'handedOn' | 'notRemembered' | 'rewritten' | 'rewrittenBefore' {
  const seen = memory.compare(m);
  if (seen === 'same') return 'handedOn';
  if (seen === 'unknown') return m.ms > (memory.latestMs ?? Infinity) ? 'rewrittenBefore' : 'notRemembered';
  return matchedInThisConsumer ? 'rewritten' : 'rewrittenBefore';
}
