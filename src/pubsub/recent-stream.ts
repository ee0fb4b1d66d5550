// The latest messages a durable hub's follower applied, kept in memory while
// some session of the hub is behind the live flow (session-catch-up.ts). A
// session reading the stream on through JetStream takes a few hundred
// milliseconds a page, by which time the follower has gone on: under a steady
// flow it never reached the follower's position in the turn it read, and
// stayed behind, seconds late and reading again and again (a stall soak: 100
// sessions behind for the whole minute events kept coming, ~400 consumers
// made a second). From here it ends its catch-up in one turn, with what the
// follower applied since it fell behind, or since the window last moved past
// it. Bounded in messages and bytes: past them the oldest go, and a session
// further behind reads the stream until it is within the window.
import { owned } from '../collections/own-bytes.ts';
import type { StoredMessage } from '../bus/stream-reader.ts';

/** The most messages, and bytes of them, the window keeps per hub. */
export const RECENT_MESSAGES = 10_000;
export const RECENT_BYTES = 16 * 1024 * 1024;

export class RecentStream {
  private messages: StoredMessage[] = [];
  private head = 0;
  private bytes = 0;
  /** While keeping: every message applied after this position is in the window. */
  private holdsAfter: number | undefined;

  constructor(
    private readonly maxMessages = RECENT_MESSAGES,
    private readonly maxBytes = RECENT_BYTES,
  ) {}

  get keeping(): boolean {
    return this.holdsAfter !== undefined;
  }

  /** Keeps every message added from now on; the next one added follows `position`. */
  start(position: number): void {
    if (this.holdsAfter === undefined) this.holdsAfter = position;
  }

  /** Keeps nothing any more (no session is behind). */
  stop(): void {
    this.holdsAfter = undefined;
    this.messages = [];
    this.head = 0;
    this.bytes = 0;
  }

  /** A message the follower applied (in stream order); its bytes copied out of the read they came in. */
  add(m: StoredMessage): void {
    if (this.holdsAfter === undefined) return;
    this.messages.push({ seq: m.seq, subject: m.subject, data: owned(m.data) });
    this.bytes += m.data.length;
    while (this.messages.length - this.head > this.maxMessages || (this.bytes > this.maxBytes && this.messages.length - this.head > 1)) {
      const oldest = this.messages[this.head];
      this.messages[this.head++] = undefined as unknown as StoredMessage;
      this.bytes -= oldest.data.length;
      this.holdsAfter = oldest.seq;
    }
    // The space of those gone is given back once it is half the array.
    if (this.head > 1024 && this.head * 2 > this.messages.length) {
      this.messages = this.messages.slice(this.head);
      this.head = 0;
    }
  }

  /** Every message applied after `position`, oldest first, when the window holds them all; undefined otherwise. */
  after(position: number): StoredMessage[] | undefined {
    if (this.holdsAfter === undefined || position < this.holdsAfter) return undefined;
    // Sequences increase: the first after `position` is found by halves.
    let low = this.head;
    let high = this.messages.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.messages[middle].seq <= position) low = middle + 1;
      else high = middle;
    }
    return this.messages.slice(low);
  }
}
