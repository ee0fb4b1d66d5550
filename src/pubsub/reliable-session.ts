// The reliable part of a pub/sub connection (docs/protocols/web-pubsub.md, "Reliable sessions"):
// sequence ids 1, 2, 3... over every data message, the buffer of messages not
// yet covered by a cumulative sequenceAck (capped in messages and bytes), and
// how far the current socket has been written, so that a socket that cannot
// take more simply stops being written and catches up from the buffer.
import { randomBytes, timingSafeEqual } from 'node:crypto';

export interface SessionLimits {
  maxMessages: number;
  maxBytes: number;
}

export interface SessionEntry {
  sequenceId: number;
  body: Buffer;
  /** The event's cluster-wide id (see SharedMessage). */
  mid: string;
}

export class ReliableSession {
  readonly reconnectionToken: string;
  private nextSequenceId = 1;
  private entries: SessionEntry[] = [];
  private head = 0;
  private bytes = 0;
  /** Highest sequence id written to the current socket. */
  writtenUpTo = 0;
  /** When the socket went away (ms since epoch); undefined while attached. */
  detachedAt: number | undefined;

  constructor(
    private readonly limits: SessionLimits,
    reconnectionToken?: string,
  ) {
    this.reconnectionToken = reconnectionToken ?? randomBytes(24).toString('base64url');
  }

  /** Sequence id of the oldest unacknowledged message, or of the next one when none is. */
  get firstSequenceId(): number {
    return this.head < this.entries.length ? this.entries[this.head].sequenceId : this.nextSequenceId;
  }

  get lastSequenceId(): number {
    return this.nextSequenceId - 1;
  }

  /**
   * Takes over messages from the node that held this session, keeping their
   * sequence ids; the next push continues after the last. Call on an empty session.
   */
  restore(entries: SessionEntry[], lastSequenceId: number): void {
    for (const entry of entries) {
      this.entries.push(entry);
      this.bytes += entry.body.length;
    }
    this.nextSequenceId = lastSequenceId + 1;
  }

  get unacknowledged(): number {
    return this.entries.length - this.head;
  }

  /** Buffers a message and returns its sequence id, or undefined when the buffer is full. */
  push(body: Buffer, mid: string): number | undefined {
    if (this.unacknowledged >= this.limits.maxMessages || this.bytes + body.length > this.limits.maxBytes) {
      return undefined;
    }
    const sequenceId = this.nextSequenceId++;
    this.entries.push({ sequenceId, body, mid });
    this.bytes += body.length;
    return sequenceId;
  }

  /** Drops every message with a sequence id up to `sequenceId` (cumulative). */
  acknowledge(sequenceId: number): void {
    while (this.head < this.entries.length && this.entries[this.head].sequenceId <= sequenceId) {
      this.bytes -= this.entries[this.head].body.length;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /** Messages after `sequenceId`, oldest first. */
  *after(sequenceId: number): Generator<SessionEntry> {
    if (this.head >= this.entries.length) return;
    // Sequence ids are dense, so the first entry to send is found by arithmetic.
    const skip = Math.max(0, sequenceId - this.entries[this.head].sequenceId + 1);
    for (let i = this.head + skip; i < this.entries.length; i++) yield this.entries[i];
  }

  tokenMatches(token: string): boolean {
    const given = Buffer.from(token);
    const expected = Buffer.from(this.reconnectionToken);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  clear(): void {
    this.entries = [];
    this.head = 0;
    this.bytes = 0;
  }
}
