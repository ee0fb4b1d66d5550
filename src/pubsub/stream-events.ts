// A durable hub's event path on NATS JetStream (docs/durability.md): the
// hub's stream is the truth, edges are views. A send or a membership change
// is stored in the hub's stream first (the publisher is acknowledged only
// then), and every edge, the publishing one included, applies what it reads
// from the stream, in stream order: so every edge sees the same order, and a
// reliable session's sequence ids are a function of the stream that any edge
// can compute again (stream-sessions.ts). Session claims travel the same way.
import { createHash, randomUUID } from 'node:crypto';
import { BusError } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type GroupAction, type PsClose, type PsMember, type PsSend, type Target } from '../bus/messages.ts';
import type { JetStreamAccess } from '../bus/jetstream.ts';
import { StoreError } from '../bus/jetstream-errors.ts';
import type { Follower, StoredMessage } from '../bus/stream-reader.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { Logger } from '../telemetry/logger.ts';
import { filterFromBus, type ConnectionFilter } from './connection-filter.ts';
import { isDataOfType, streamMessageOf, type DataMessage } from './downstream.ts';
import { HISTORY_PAGE_BYTES, type HistoryEntry, type HistoryPage, type HubHistory } from './history.ts';
import type { StreamPosition } from './cluster-calls.ts';
import type { ClusterHub, DurableEvents, SendResult } from './hub-cluster.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { RecentStream } from './recent-stream.ts';
import { StreamSessions, type StreamSessionsOptions } from './stream-sessions.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { TimedWaits } from '../collections/timed-waits.ts';

/** A session's replay reads the hub stream in pages of at most this many messages (readRange)... */
const REPLAY_PAGE_MESSAGES = 1000;
/** ...and of about this many bytes (a page ends after the message that passes it). */
const REPLAY_PAGE_BYTES = 8 * 1024 * 1024;

/** Joins refused for the group limit remembered until their requester asks (joinTookEffect). */
const REFUSED_JOINS_KEPT = 1024;

/** Stored closes remembered for the ask that follows each (appliedClose); asks come within bus.requestTimeoutMs. */
const CLOSES_KEPT = 1024;

function closeKey(target: Target): string {
  return `${target.kind}\n${target.kind === 'all' ? '' : target.name}`;
}

function refusedJoinKey(seq: number, connectionId: string, group: string): string {
  return `${seq} ${connectionId} ${group}`;
}

export interface StreamEventsOptions extends StreamSessionsOptions {
  js: JetStreamAccess;
  subjects: Subjects;
  /** The hub's stream. */
  stream: string;
  nodeId: string;
  log: Logger;
  /** The hub keeps history: group messages carry their sequence. */
  history: boolean;
}

export class StreamEvents implements DurableEvents, HubHistory {
  private follower: Follower | undefined;
  /** The last stream sequence applied here; 0 until the follower starts. */
  private applied = 0;
  /** Questions waiting for this edge to apply the stream up to `at` (reached()). */
  private waiters: { at: number; done: (reached: boolean) => void }[] = [];
  /** Writes waiting for the follower to start (whenFollowing()). */
  private readonly startWaiters = new TimedWaits();
  private readonly sessions: StreamSessions;
  /** The latest messages applied, kept while a session is behind the live flow (recent-stream.ts). */
  private readonly recent = new RecentStream();
  /** True while a message is being applied (applied is its sequence). */
  private applying = false;

  /** `relay.ev.{hub}.g.`: what group events' subjects start with, the group's token after it. */
  private readonly groupSubjectPrefix: string;

  constructor(
    private readonly hub: ClusterHub,
    private readonly options: StreamEventsOptions,
  ) {
    this.groupSubjectPrefix = options.subjects.hubEvent(hub.key, 'group', '').slice(0, -'_e'.length);
    this.sessions = new StreamSessions(hub, this, options);
  }

  /** Where this edge is in the hub's stream: the last sequence applied. */
  get position(): number {
    return this.applied;
  }

  /**
   * The last send event applied, skipped or not (a checkpoint is anchored by its id: session-take.ts,
   * checkpointAnchor): every event a session here was given is at or before it. One skipped (a group with no member
   * here) is kept as read and its id decoded when asked.
   */
  get lastSend(): { seq: number; mid: string; appliedAt: number } | undefined {
    const skipped = this.lastSkippedSend;
    if (skipped !== undefined) {
      this.lastSkippedSend = undefined;
      const mid = decodeEdgeMessage(skipped.data, 'ps.send')?.message.mid;
      this.lastSendApplied = mid === undefined ? undefined : { seq: skipped.seq, mid, appliedAt: this.lastSkippedAt };
    }
    return this.lastSendApplied;
  }

  private lastSendApplied: { seq: number; mid: string; appliedAt: number } | undefined;
  private lastSkippedSend: StoredMessage | undefined;
  private lastSkippedAt = 0;

  private closed = false;

  get started(): boolean {
    return this.follower !== undefined;
  }

  /** Starts reading the stream after what it holds now (called once JetStream is ready). */
  async start(): Promise<void> {
    const { last } = await this.options.js.bounds(this.options.stream);
    // Closed meanwhile (its hub removed by a reload): no reader that nothing would stop.
    if (this.closed) return;
    this.applied = last;
    this.follower = this.options.js.follow(
      this.options.stream,
      last + 1,
      (m) => this.apply(m),
      (expected, got) => this.missed(expected, got),
    );
    this.sessions.started();
    this.options.log.info({ event: 'pubsub.stream_following', hub: this.hub.name, from: last + 1 });
    this.startWaiters.wakeAll();
  }

  /**
   * The stream no longer holds events this edge had not read yet (its limits dropped them while this edge lagged
   * behind: paused, cut off, too slow): what they carried never reaches this edge's connections, and their
   * sessions' sequence ids would show no hole. Every connection of the hub here is ended (1008 StreamGap), so its
   * client knows and starts afresh (the SDK opens a new connection and joins its groups again), with membership
   * read from the stream from here on. Before, they stayed and lost the events silently.
   */
  missed(expected: number, got: number): void {
    const ended = this.hub.endLocalConnections('StreamGap');
    this.options.log.warn({ event: 'jetstream.gap', hub: this.hub.name, expected, got, connectionsEnded: ended });
  }

  /**
   * Waits (up to publishTimeoutMs) until this edge reads the stream. A write
   * stored before the follower asked where the stream ends would be acknowledged
   * and never applied here: a client's join lost, its sends missing here.
   */
  private async whenFollowing(): Promise<void> {
    if (this.follower) return;
    await this.startWaiters.wait(this.options.publishTimeoutMs);
    if (!this.follower) throw new StoreError('not stored: this edge is not reading the hub stream yet');
  }

  // --- writing ------------------------------------------------------------------------

  private subjectFor(target: Target): string {
    return this.options.subjects.hubEvent(this.hub.key, target.kind, target.kind === 'all' ? '' : target.name);
  }

  async send(
    target: Target,
    message: DataMessage,
    excluded: ReadonlySet<string> | undefined,
    msgId: string | undefined,
    filter?: ConnectionFilter,
  ): Promise<SendResult> {
    await this.whenFollowing();
    const { dataJson, ...head } = message;
    const id = msgId ?? randomUUID();
    // The filter is stored with the event: every edge applies it where the stream orders it.
    const event: PsSend = {
      op: 'ps.send',
      ...this.hub.from,
      mid: id,
      at: Date.now(),
      target,
      excluded: excluded && [...excluded],
      filter: filter?.text,
      message: head,
    };
    const stored = await this.options.js.publish(this.subjectFor(target), encodeEdgeMessage(event, Buffer.from(dataJson, 'utf8')), id);
    return stored.duplicate ? 'duplicate' : 'sent';
  }

  async changeGroups(target: Target, action: GroupAction, groups: string[], filter: ConnectionFilter | undefined, msgId?: string): Promise<number> {
    await this.whenFollowing();
    const change: PsMember = { op: 'ps.member', ...this.hub.from, target, action, groups, filter: filter?.text };
    return (await this.options.js.publish(this.options.subjects.hubControl(this.hub.key), encodeEdgeMessage(change), msgId ?? randomUUID())).seq;
  }

  /**
   * Stores a REST close of a user's, a group's or the hub's connections (or of one connection whose session no edge
   * holds), on the control subject (read by every edge
   * whatever groups it has members of): every edge ends its connections it names as it reads it (applyEvent), and a
   * take of a session whose replay passes it ends the session (session-take.ts). Resolves with its sequence.
   */
  async storeClose(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): Promise<number> {
    await this.whenFollowing();
    const close: PsClose = { op: 'ps.close', ...this.hub.from, target, ...(excluded && { excluded: [...excluded] }), ...(reason !== undefined && { reason }) };
    return (await this.options.js.publish(this.options.subjects.hubControl(this.hub.key), encodeEdgeMessage(close), randomUUID())).seq;
  }

  /**
   * Whether a connection's join stored at `seq` took effect where the stream applied it: every edge skips a join
   * past limits.groupsPerConnection there (the limit holds in the stream's order, whoever asked). True as well
   * when this edge has not applied `seq` within bus.requestTimeoutMs (stored, it takes effect in that order).
   */
  async joinTookEffect(connectionId: string, group: string, seq: number): Promise<boolean> {
    await this.reached(seq, this.options.requestTimeoutMs);
    return !this.refusedJoins.has(refusedJoinKey(seq, connectionId, group));
  }

  // --- reading ------------------------------------------------------------------------

  /** One message of the hub's stream, in order: delivered, applied or handed to the sessions. */
  private apply(m: StoredMessage): void {
    // Read again from an earlier sequence: the stream was made again, or rewritten (stream-reader.ts). What sessions
    // behind the live flow had still to read is not where they would read it.
    if (m.seq <= this.applied) {
      this.lastSendApplied = this.lastSkippedSend = undefined;
      this.recent.stop();
      this.sessions.streamWentBack(m.seq);
    }
    this.applied = m.seq;
    this.applying = true;
    try {
      this.applyEvent(m);
    } finally {
      this.applying = false;
    }
    this.recent.add(m);
    if (this.waiters.length > 0) this.wakeWaiters();
  }

  private applyEvent(m: StoredMessage): void {
    // A group event for a group with no member here changes nothing here: not even decoded.
    if (m.subject.startsWith(this.groupSubjectPrefix) && !this.hub.localGroupTokens.has(m.subject.slice(this.groupSubjectPrefix.length))) {
      this.lastSkippedSend = m;
      this.lastSkippedAt = Date.now();
      return;
    }
    const decoded = decodeEdgeMessage(m.data, 'ps.send', 'ps.member', 'ps.claim', 'ps.close');
    const event = decoded?.message;
    const filter = event && (event.op === 'ps.send' || event.op === 'ps.member') ? filterFromBus(event.filter) : undefined;
    if (!event || asciiLowerCase(event.hub) !== this.hub.key || filter === null) {
      this.options.log.warn({ event: 'bus.invalid_message', hub: this.hub.name, seq: m.seq });
      return;
    }
    switch (event.op) {
      case 'ps.send': {
        const message = streamMessageOf(event, decoded!.body, m.seq, this.options.history);
        if (!message) return void this.options.log.warn({ event: 'bus.invalid_message', hub: this.hub.name, seq: m.seq });
        this.lastSendApplied = { seq: m.seq, mid: event.mid, appliedAt: Date.now() };
        this.lastSkippedSend = undefined;
        // One past its time to live is still handed to the hub: a reliable session numbers it, as every edge
        // reading the stream does (a session rebuilt elsewhere must number it alike), and sends it to nobody.
        this.hub.expired(message);
        const recipients = this.hub.local.deliver(event.target, message, event.excluded && new Set(event.excluded), filter);
        this.hub.delivered(recipients, event.at, event.origin === this.options.nodeId ? 'local' : 'bus');
        if (message.leftBehind) this.keepRecent();
        return;
      }
      case 'ps.member':
        this.hub.applyGroups(
          event.target,
          event.action,
          event.groups,
          filter ?? event.terms,
          (connection, group, joined) => this.sessions.membershipChanged(connection, m.seq, group, joined),
          (connection, group) => this.noteRefusedJoin(refusedJoinKey(m.seq, connection.id, group)),
        );
        return;
      case 'ps.claim':
        return this.sessions.claimed(event, m.seq);
      case 'ps.close':
        // A REST close (storeClose): the connections here it names end, in stream order.
        this.hub.applyStoredClose(event.target, event.excluded, event.reason);
        this.noteAppliedClose(m.seq, event.target);
        return;
    }
  }

  /** Stored closes applied here (seq -> its target), the latest CLOSES_KEPT: appliedClose. */
  private readonly appliedCloses = new Map<number, string>();

  private noteAppliedClose(seq: number, target: Target): void {
    this.appliedCloses.set(seq, closeKey(target));
    if (this.appliedCloses.size > CLOSES_KEPT) this.appliedCloses.delete(this.appliedCloses.keys().next().value!);
  }

  /**
   * Whether this edge applied, as its follower read it, the close of `target` stored at `seq` (storeClose): the
   * edges are asked at that position, and what it names here has ended then. Applied again when asked, it also ended
   * connections that came after it in the stream (a member that joined the group, or a connection opened here, after
   * this edge read the close and before the ask came; found by review).
   */
  appliedClose(seq: number, target: Target): boolean {
    return this.appliedCloses.get(seq) === closeKey(target);
  }

  /** Joins skipped here for the group limit, for joinTookEffect: the latest REFUSED_JOINS_KEPT (they are rare). */
  private readonly refusedJoins = new Set<string>();

  private noteRefusedJoin(key: string): void {
    this.refusedJoins.add(key);
    if (this.refusedJoins.size > REFUSED_JOINS_KEPT) this.refusedJoins.delete(this.refusedJoins.values().next().value!);
  }

  // --- reading your writes -----------------------------------------------------------

  /**
   * Resolves once this edge has applied the stream up to `at`, or after
   * `timeoutMs` (then false: the answer that follows may miss the latest changes).
   */
  reached(at: number, timeoutMs: number): Promise<boolean> {
    if (this.applied >= at) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        at,
        done: (reached: boolean) => {
          clearTimeout(timer);
          resolve(reached);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        this.options.log.warn({ event: 'pubsub.stream_behind', hub: this.hub.name, at, applied: this.applied });
        resolve(false);
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  private wakeWaiters(): void {
    const ready = this.waiters.filter((w) => w.at <= this.applied);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.at > this.applied);
    for (const w of ready) w.done(true);
  }

  /**
   * The stream's last sequence now (`at`), once this edge has applied it: a
   * question asked at it sees every change stored before it, on any edge.
   * `reached` is false when this edge had not applied that far within
   * bus.requestTimeoutMs (what it holds may miss the latest changes). When the
   * stream cannot say (JetStream away), this edge's own position.
   */
  async catchUp(): Promise<StreamPosition> {
    let last: number;
    try {
      last = (await this.options.js.bounds(this.options.stream)).last;
    } catch (err) {
      this.options.log.warn({ event: 'pubsub.stream_position_unknown', hub: this.hub.name, err: (err as Error).message });
      return { at: this.applied, reached: true };
    }
    return { at: last, reached: await this.reached(last, this.options.requestTimeoutMs) };
  }

  /**
   * Reads the first page of `(from, to]` of the stream for one session being rebuilt (session-take.ts, which
   * reads on from the last message it got): at most REPLAY_PAGE_MESSAGES, and no more once REPLAY_PAGE_BYTES are
   * read. The range holds every group's events since the session's checkpoint, which a client that withholds
   * its acknowledgements can keep far behind: read at once, it was held in memory whole, once per session moving.
   */
  readRange(fromExclusive: number, toInclusive: number, timeoutMs: number): Promise<StoredMessage[]> {
    return this.options.js.read(this.options.stream, {
      fromSeq: fromExclusive + 1,
      toSeq: toInclusive,
      limit: Math.min(toInclusive - fromExclusive, REPLAY_PAGE_MESSAGES),
      maxBytes: REPLAY_PAGE_BYTES,
      timeoutMs,
    });
  }

  /** Keeps the messages applied from now on (this one included, while one is applied), for sessions behind the live flow. */
  keepRecent(): void {
    this.recent.start(this.applying ? this.applied - 1 : this.applied);
  }

  get keepingRecent(): boolean {
    return this.recent.keeping;
  }

  /** No session is behind the live flow any more: nothing is kept. */
  forgetRecent(): void {
    this.recent.stop();
  }

  /** Every message applied after `position`, when they are kept (RecentStream.after). */
  recentAfter(position: number): StoredMessage[] | undefined {
    return this.recent.after(position);
  }

  /** The oldest sequence the stream still holds. */
  async firstSequence(): Promise<number> {
    return (await this.options.js.bounds(this.options.stream)).first;
  }

  // --- history ------------------------------------------------------------------------

  /**
   * A page of the group's history, named by its stream (`historyId`, the same
   * on every edge): a stream lost and made again numbers from 1 again under
   * another id. The stream is asked when it was made before and after the
   * read, so a page never mixes one stream's messages with the other's id.
   */
  async read(group: string, after: number, limit: number): Promise<HistoryPage> {
    try {
      return await this.readWhole(group, after, limit);
    } catch (err) {
      // NATS not answering (a timeout of the stream's info, of a consumer made or asked) is the store's failure.
      if (err instanceof StoreError || err instanceof BusError) throw err;
      throw new StoreError(`JetStream did not answer the read: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async readWhole(group: string, after: number, limit: number): Promise<HistoryPage> {
    for (let attempt = 1; ; attempt++) {
      const madeBefore = (await this.options.js.bounds(this.options.stream)).madeAs;
      const page = await this.readPage(group, after, limit);
      const { madeAs: madeAfter, last } = await this.options.js.bounds(this.options.stream);
      if (madeAfter === madeBefore) return { ...page, historyId: streamHistoryId(this.options.stream, madeAfter), last: Math.max(last, page.next) };
      if (attempt === 2) throw new StoreError('the stream was made again twice while its history was read');
    }
  }

  private async readPage(group: string, after: number, limit: number): Promise<Omit<HistoryPage, 'last'>> {
    const stored = await this.options.js.read(this.options.stream, {
      fromSeq: after + 1,
      subject: this.options.subjects.hubEvent(this.hub.key, 'group', group),
      limit,
      maxBytes: HISTORY_PAGE_BYTES,
      timeoutMs: this.options.requestTimeoutMs,
    });
    const messages: HistoryEntry[] = [];
    for (const m of stored) {
      const decoded = decodeEdgeMessage(m.data, 'ps.send');
      const event = decoded?.message;
      // Long names share a hashed subject token: only the exact group counts.
      if (!event || event.target.kind !== 'group' || event.target.name !== group || asciiLowerCase(event.hub) !== this.hub.key) continue;
      const dataJson = decoded!.body.toString('utf8');
      if (!isDataOfType(event.message.dataType, dataJson)) continue;
      messages.push({
        sequence: m.seq,
        dataType: event.message.dataType,
        dataJson,
        fromUserId: event.message.fromUserId ?? null,
        at: event.at ?? 0,
      });
    }
    return { messages, next: stored.length > 0 ? stored[stored.length - 1].seq : after };
  }

  // --- sessions -----------------------------------------------------------------------

  takeSession(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    return this.sessions.take(connectionId, token, protocol);
  }

  sessionChanged(connection: PubSubConnection, identity?: boolean): void {
    this.sessions.changed(connection, identity);
  }

  storeSession(connection: PubSubConnection): Promise<boolean> {
    return this.sessions.storeNow(connection);
  }

  sessionEnded(connection: PubSubConnection): void {
    this.sessions.ended(connection);
  }

  sessionKeptUnheld(connectionId: string): Promise<boolean> {
    return this.sessions.keptUnheld(connectionId);
  }

  releaseAll(): Promise<void> {
    return this.sessions.releaseAll();
  }

  get pendingWrites(): number {
    return this.sessions.pendingWrites;
  }

  close(removed = false): void {
    this.closed = true;
    this.follower?.stop();
    this.sessions.close(removed);
    for (const w of this.waiters) w.done(false);
    this.waiters = [];
    this.startWaiters.wakeAll();
  }
}

/** A JetStream history's id: its stream's name and which making of it this is, hashed (opaque to readers). */
function streamHistoryId(stream: string, madeAs: string): string {
  return createHash('sha256').update(`${stream}\0${madeAs}`).digest('base64url').slice(0, 12);
}
