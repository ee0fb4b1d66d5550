// The reliable part of a pub/sub connection (docs/protocols/web-pubsub.md, "Reliable sessions"):
// sequence ids 1, 2, 3... over every data message, the buffer of messages not
// yet covered by a cumulative sequenceAck (capped in messages and bytes), and
// how far the current socket has been written, so that a socket that cannot
// take more simply stops being written and catches up from the buffer.
// The buffered messages themselves are in the edge's message log, once for
// all sessions; a session keeps their indices (message-log.ts).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { owned } from '../collections/own-bytes.ts';
import { MessageLog, hasExpired, type LoggedMessage } from './message-log.ts';

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
  /** A REST send's messageTtlSeconds as a time (ms since epoch). */
  expiresAt?: number;
}

/** What a session's client has acknowledged, as a place in the hub's stream (docs/durability.md). */
export interface SessionCheckpoint {
  /** Every sequence id up to this one is acknowledged. */
  sequenceId: number;
  /** The stream position of the event that had `sequenceId` (or the last one read, with nothing unacknowledged). */
  position: number;
  /** The connection's groups at `position`. */
  groups: string[];
  /**
   * The cluster-wide id of the event that had `sequenceId`, when `position` is its: another edge's server may
   * number the stream otherwise (nats-server before 2.10.14, docs/durability.md), and finds the event by it.
   */
  mid?: string;
}

/** Every session's messages, once per edge. */
const messageLog = new MessageLog();

const NO_INDICES = new Float64Array(0);

/**
 * The longest reconnection token any edge may hold: what the bus carries in a hand-over (schemas/bus-message.schema.json).
 * An edge issues 32 characters (24 random bytes); a recovery naming a longer one cannot be of any session.
 */
export const MAX_RECONNECTION_TOKEN = 256;

/** The log indices of a session's unacknowledged messages, oldest first, at [head, tail). */
class HeldIndices {
  /** Allocated at the first message (an idle session costs no buffer). */
  indices = NO_INDICES;
  head = 0;
  tail = 0;

  get length(): number {
    return this.tail - this.head;
  }

  push(index: number): void {
    if (this.tail === this.indices.length) this.makeRoom();
    this.indices[this.tail++] = index;
  }

  /**
   * Room for one more at the tail. Apart from push, which runs for every delivery, so that the JIT inlines push
   * (and what calls it) without this.
   */
  private makeRoom(): void {
    const count = this.length;
    // Reuse the space of acknowledged entries when they are at least half; otherwise grow.
    const into = this.head * 2 >= this.indices.length && this.head > 0 ? this.indices : new Float64Array(Math.max(16, this.indices.length * 2));
    into.set(this.indices.subarray(this.head, this.tail));
    this.indices = into;
    this.head = 0;
    this.tail = count;
  }

  /** Lets go of every index still held. */
  releaseAll(): void {
    for (let i = this.head; i < this.tail; i++) messageLog.release(this.indices[i]);
    this.head = 0;
    this.tail = 0;
    if (this.indices.length > 16) this.indices = NO_INDICES;
  }
}

/** A session dropped without clear() still lets go of its messages once collected. */
const unreleased = new FinalizationRegistry<HeldIndices>((held) => held.releaseAll());

export class ReliableSession {
  readonly reconnectionToken: string;
  private nextSequenceId = 1;
  private readonly held = new HeldIndices();
  /** Sequence id of the message at held.head. */
  private firstHeldSequenceId = 1;
  private bytes = 0;
  /** Highest sequence id written to the current socket; never below the last acknowledged one (acknowledge, PubSubConnection.attach). */
  writtenUpTo = 0;
  /** When the socket went away (ms since epoch); undefined while attached. */
  detachedAt: number | undefined;
  /** On a JetStream hub: group changes read from the stream since the last checkpoint, oldest first. */
  private membershipLog: { position: number; group: string; joined: boolean }[] = [];
  /**
   * On a JetStream hub: set while the session is behind the live flow (its buffer was full when an event for it
   * came): every event for it up to this stream position is numbered and held; those after it are not, and are
   * read from the stream as acknowledgements make room (session-catch-up.ts). Undefined while it takes live events.
   */
  behindAt: number | undefined;
  /** On a JetStream hub: the checkpoint last computed (what the session bucket should hold). */
  checkpoint: SessionCheckpoint | undefined;
  /** The acknowledged sequence id the last checkpoint stands for; the checkpoint is stale when acknowledgements passed it. */
  private acknowledgedUpTo = 0;
  /** The highest id counted as not sent for its time to live (noteExpiredUnsent): each is counted once. */
  private expiredCountedUpTo = 0;
  /** Messages not sent for their time to live since takeExpiredUnsent last read it. */
  private expiredUnsent = 0;

  constructor(
    private readonly limits: SessionLimits,
    reconnectionToken?: string,
  ) {
    this.reconnectionToken = reconnectionToken ?? randomBytes(24).toString('base64url');
    unreleased.register(this, this.held);
  }

  /** Sequence id of the oldest unacknowledged message, or of the next one when none is. */
  get firstSequenceId(): number {
    return this.held.length > 0 ? this.firstHeldSequenceId : this.nextSequenceId;
  }

  get lastSequenceId(): number {
    return this.nextSequenceId - 1;
  }

  /**
   * Takes over messages from the node that held this session, keeping their
   * sequence ids; the next push continues after the last. Call on an empty session.
   */
  restore(entries: SessionEntry[], lastSequenceId: number): void {
    if (entries.length > 0 && this.held.length === 0) this.firstHeldSequenceId = entries[0].sequenceId;
    for (const entry of entries) {
      // Its body is a view into the bus message it came in (a 64 KiB read): copied out (own-bytes.ts).
      this.held.push(messageLog.hold({ body: owned(entry.body), mid: entry.mid, position: entry.position, expiresAt: entry.expiresAt }));
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
   * position this edge read) with the current groups; or at `lastSend` (the
   * last send event this edge read, near enough to `readUpTo` for a take to
   * find it by its id) with the groups then, so that an edge whose server
   * numbers the stream otherwise goes on from where this one was. Undefined
   * when nothing changed since the last one.
   */
  nextCheckpoint(currentGroups: ReadonlySet<string>, readUpTo: number, lastSend?: { seq: number; mid: string }): SessionCheckpoint | undefined {
    let next: SessionCheckpoint;
    if (this.unacknowledged === 0) {
      // Behind the live flow, everything numbered acknowledged: the events after behindAt are not this session's yet.
      const behindAt = this.behindAt;
      next =
        behindAt === undefined
          ? lastSend !== undefined && lastSend.seq <= readUpTo
            ? { sequenceId: this.lastSequenceId, position: lastSend.seq, groups: this.groupsAt(currentGroups, lastSend.seq), mid: lastSend.mid }
            : { sequenceId: this.lastSequenceId, position: readUpTo, groups: [...currentGroups] }
          : { sequenceId: this.lastSequenceId, position: behindAt, groups: this.groupsAt(currentGroups, behindAt) };
    } else {
      if (this.acknowledgedUpTo === this.checkpoint?.sequenceId) return undefined;
      const position = this.acknowledgedPosition;
      if (position === undefined) return undefined;
      next = { sequenceId: this.acknowledgedUpTo, position, groups: this.groupsAt(currentGroups, position), ...(this.acknowledgedMid !== undefined ? { mid: this.acknowledgedMid } : {}) };
    }
    const last = this.checkpoint;
    if (last && last.sequenceId === next.sequenceId && last.position === next.position && sameGroups(last.groups, next.groups)) return undefined;
    this.checkpoint = next;
    this.membershipLog = this.membershipLog.filter((c) => c.position > next.position);
    return next;
  }

  /**
   * The groups a connection was in at `position`: the current ones with later changes undone. Known for any
   * position since the last checkpoint's (the changes after it are kept).
   */
  groupsAt(current: ReadonlySet<string>, position: number): string[] {
    const groups = new Set(current);
    for (let i = this.membershipLog.length - 1; i >= 0; i--) {
      const change = this.membershipLog[i];
      if (change.position <= position) break;
      if (change.joined) groups.delete(change.group);
      else groups.add(change.group);
    }
    return [...groups];
  }

  /** The group changes read after `position` (since the last checkpoint's at most), oldest first. */
  membershipChangesAfter(position: number): readonly { position: number; group: string; joined: boolean }[] {
    const log = this.membershipLog;
    let i = log.length;
    while (i > 0 && log[i - 1].position > position) i--;
    return log.slice(i);
  }

  get unacknowledged(): number {
    return this.held.length;
  }

  /**
   * Acknowledgements left room for a session behind the live flow to read on from the stream: half its buffer
   * (in messages and in bytes) is free, so that it reads pages, not one event per acknowledgement.
   */
  get roomToCatchUp(): boolean {
    return this.held.length <= this.limits.maxMessages / 2 && this.bytes <= this.limits.maxBytes / 2;
  }

  /**
   * Buffers a message and returns its sequence id, or undefined when the
   * buffer is full. An empty buffer takes a message of any size (base64 and
   * the envelope can make one delivery larger than maxBytes when
   * pubsubMessageBytes is near it): a full buffer means a client that does
   * not acknowledge, not a large message.
   */
  push(message: LoggedMessage): number | undefined {
    const length = message.body.length;
    // Messages whose time to live passed make room first: they would never be sent again.
    if (this.wouldOverflow(length) && (this.dropExpired(Date.now()) === 0 || this.wouldOverflow(length))) return undefined;
    const sequenceId = this.nextSequenceId++;
    if (this.held.length === 0) this.firstHeldSequenceId = sequenceId;
    this.held.push(messageLog.hold(message));
    this.bytes += length;
    return sequenceId;
  }

  private wouldOverflow(length: number): boolean {
    const held = this.held.length;
    return held >= this.limits.maxMessages || (held > 0 && this.bytes + length > this.limits.maxBytes);
  }

  /**
   * Lets go of the oldest held messages whose time to live has passed, as if
   * acknowledged (they are never sent again, so nothing is owed for them);
   * how many. One behind a message without a passed time to live waits for
   * that one's acknowledgement (PubSubConnection.flush skips it meanwhile).
   */
  dropExpired(now: number): number {
    let dropped = 0;
    while (this.held.length > 0) {
      const id = this.firstHeldSequenceId;
      const oldest = this.messageAt(id);
      if (!oldest || !hasExpired(oldest, now)) break;
      // One the current socket has (sent, not yet acknowledged) was sent.
      if (id > this.writtenUpTo) this.noteExpiredUnsent(id);
      this.acknowledge(id);
      dropped++;
    }
    return dropped;
  }

  /** The held message `sequenceId` is not sent, its time to live past: counted once, however often it is skipped. */
  noteExpiredUnsent(sequenceId: number): void {
    if (sequenceId <= this.expiredCountedUpTo) return;
    this.expiredCountedUpTo = sequenceId;
    this.expiredUnsent++;
  }

  /** How many held messages were not sent for their time to live since the last call (edge_relay_pubsub_expired_total). */
  takeExpiredUnsent(): number {
    const count = this.expiredUnsent;
    this.expiredUnsent = 0;
    return count;
  }

  /** Stream position of the last acknowledged event, when this edge saw it. */
  private acknowledgedPosition: number | undefined;
  /** The cluster-wide id of that event. */
  private acknowledgedMid: string | undefined;

  /** Drops every message with a sequence id up to `sequenceId` (cumulative). */
  acknowledge(sequenceId: number): void {
    const held = this.held;
    const head = held.head;
    // Ids are dense: the run to let go of is found by arithmetic, and the session's fields are written once for it
    // (per message they were a third of the reliable path's instructions for acknowledgements, callgrind).
    const end = Math.min(held.tail, head + (sequenceId - this.firstHeldSequenceId + 1));
    if (end > head) {
      this.bytes -= messageLog.releaseRun(held.indices, head, end);
      const last = messageLog.lastReleased;
      messageLog.lastReleased = undefined;
      this.firstHeldSequenceId += end - head;
      held.head = end;
      this.acknowledgedUpTo = this.firstHeldSequenceId - 1;
      if (last !== undefined) {
        this.acknowledgedPosition = last.position;
        this.acknowledgedMid = last.mid;
      }
    }
    if (held.head === held.tail) held.head = held.tail = 0;
    // Ids acknowledged without being written (a client may acknowledge ahead) are owed to no socket.
    const acknowledged = this.firstSequenceId - 1;
    if (this.writtenUpTo < acknowledged) this.writtenUpTo = acknowledged;
  }

  /** The unacknowledged message with `sequenceId`, if it is held (ids are dense, so found by arithmetic). */
  messageAt(sequenceId: number): LoggedMessage | undefined {
    const held = this.held;
    const i = held.head + (sequenceId - this.firstHeldSequenceId);
    return i >= held.head && i < held.tail ? messageLog.at(held.indices[i]) : undefined;
  }

  /** Messages after `sequenceId`, oldest first. */
  *after(sequenceId: number): Generator<SessionEntry> {
    // Sequence ids are dense, so the first entry to send is found by arithmetic.
    const held = this.held;
    for (let i = held.head + Math.max(0, sequenceId - this.firstHeldSequenceId + 1); i < held.tail; i++) {
      const message = messageLog.at(held.indices[i])!;
      const entry: SessionEntry = { sequenceId: this.firstHeldSequenceId + (i - held.head), body: message.body, mid: message.mid, position: message.position };
      if (message.expiresAt !== undefined) entry.expiresAt = message.expiresAt;
      yield entry;
    }
  }

  tokenMatches(token: string): boolean {
    const given = Buffer.from(token);
    const expected = Buffer.from(this.reconnectionToken);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  clear(): void {
    this.held.releaseAll();
    this.bytes = 0;
  }
}

function sameGroups(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((g) => set.has(g));
}
