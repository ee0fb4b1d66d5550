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
  /** On a JetStream hub: the event's position in the hub's stream (0 elsewhere). */
  position: number;
}

/** What a session's client has acknowledged, as a place in the hub's stream (docs/durability.md). */
export interface SessionCheckpoint {
  /** Every sequence id up to this one is acknowledged. */
  sequenceId: number;
  /** The stream position of the event that had `sequenceId` (or the last one read, with nothing unacknowledged). */
  position: number;
  /** The connection's groups at `position`. */
  groups: string[];
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
  /** On a JetStream hub: group changes read from the stream since the last checkpoint, oldest first. */
  private membershipLog: { position: number; group: string; joined: boolean }[] = [];
  /** On a JetStream hub: the checkpoint last computed (what the session bucket should hold). */
  checkpoint: SessionCheckpoint | undefined;
  /** The acknowledged sequence id the last checkpoint stands for; the checkpoint is stale when acknowledgements passed it. */
  private acknowledgedUpTo = 0;

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

  /** Continues a session from its checkpoint (JetStream hubs): the next event gets the id after the acknowledged one. */
  resumeFrom(checkpoint: SessionCheckpoint): void {
    this.nextSequenceId = checkpoint.sequenceId + 1;
    this.acknowledgedUpTo = checkpoint.sequenceId;
    this.checkpoint = checkpoint;
  }

  /**
   * A group change read from the hub's stream at `position` (JetStream hubs
   * keep them until a checkpoint passes them). False when as many changes as
   * messages the session may buffer wait for an acknowledgement: the session must end.
   */
  noteMembership(position: number, group: string, joined: boolean): boolean {
    if (this.membershipLog.length >= this.limits.maxMessages) return false;
    this.membershipLog.push({ position, group, joined });
    return true;
  }

  /**
   * The checkpoint for what the client has acknowledged now: at the stream
   * position of the last acknowledged event with the groups of that moment,
   * or, when nothing is unacknowledged, at `readUpTo` (the last stream
   * position this edge read) with the current groups. Undefined when nothing
   * changed since the last one.
   */
  nextCheckpoint(currentGroups: ReadonlySet<string>, readUpTo: number): SessionCheckpoint | undefined {
    let next: SessionCheckpoint;
    if (this.unacknowledged === 0) {
      next = { sequenceId: this.lastSequenceId, position: readUpTo, groups: [...currentGroups] };
    } else {
      if (this.acknowledgedUpTo === this.checkpoint?.sequenceId) return undefined;
      const position = this.acknowledgedPosition;
      if (position === undefined) return undefined;
      next = { sequenceId: this.acknowledgedUpTo, position, groups: this.groupsAt(currentGroups, position) };
    }
    const last = this.checkpoint;
    if (last && last.sequenceId === next.sequenceId && last.position === next.position && sameGroups(last.groups, next.groups)) return undefined;
    this.checkpoint = next;
    this.membershipLog = this.membershipLog.filter((c) => c.position > next.position);
    return next;
  }

  /** The groups a connection was in at `position`: the current ones with later changes undone. */
  private groupsAt(current: ReadonlySet<string>, position: number): string[] {
    const groups = new Set(current);
    for (let i = this.membershipLog.length - 1; i >= 0; i--) {
      const change = this.membershipLog[i];
      if (change.position <= position) break;
      if (change.joined) groups.delete(change.group);
      else groups.add(change.group);
    }
    return [...groups];
  }

  get unacknowledged(): number {
    return this.entries.length - this.head;
  }

  /** Buffers a message and returns its sequence id, or undefined when the buffer is full. */
  push(body: Buffer, mid: string, position = 0): number | undefined {
    if (this.unacknowledged >= this.limits.maxMessages || this.bytes + body.length > this.limits.maxBytes) {
      return undefined;
    }
    const sequenceId = this.nextSequenceId++;
    this.entries.push({ sequenceId, body, mid, position });
    this.bytes += body.length;
    return sequenceId;
  }

  /** Stream position of the last acknowledged event, when this edge saw it. */
  private acknowledgedPosition: number | undefined;

  /** Drops every message with a sequence id up to `sequenceId` (cumulative). */
  acknowledge(sequenceId: number): void {
    while (this.head < this.entries.length && this.entries[this.head].sequenceId <= sequenceId) {
      const entry = this.entries[this.head];
      this.bytes -= entry.body.length;
      this.acknowledgedUpTo = entry.sequenceId;
      this.acknowledgedPosition = entry.position;
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

function sameGroups(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((g) => set.has(g));
}
