// Reliable sessions of a durable hub (docs/durability.md, "Reliable
// sessions"). A session's sequence ids are a function of the hub's stream: the
// events addressed to the connection, in stream order, numbered after the
// last id its client acknowledged. So the session's state is small: a
// checkpoint (the acknowledged id, the stream position of that event, the
// groups at that position) plus who it is (user, permissions, a hash of its
// reconnection token), kept in the session bucket and written as
// acknowledgements arrive (at most once per bus.jetstream.checkpointIntervalMs)
// and again before half of timeouts.sessionRetainMs passes.
//
// Any edge can then take a session over, whether its edge is alive or was
// killed: it stores a claim in the hub's stream (the latest claim in stream
// order owns the session, and an edge holding it lets go when it reads a
// newer claim), reads the checkpoint, replays the stream from the checkpoint
// to where this edge's follower is, numbering events as the old edge did, and
// joins the live flow there. No lock is needed (JetStream 2.9's compare-and-set
// is not atomic in a cluster): every checkpoint ever written is a valid place to
// start, since ids re-derive the same; an older one only resends what the
// client already has, which it drops by sequence id. Writes and the delete
// when a session ends name a revision (the one this edge wrote last), so that
// an edge that has not read the newer claim yet neither overwrites nor
// removes the checkpoint of the edge that took the session: a checkpoint
// records the claim its owner holds the session by, and a later claim wins.
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { decodeEdgeMessage, encodeEdgeMessage, isEdgeMessage, type PsCheckpoint, type PsClaim, type Target } from '../bus/messages.ts';
import type { JetStreamAccess } from '../bus/jetstream.ts';
import { StoreConflict } from '../bus/jetstream-errors.ts';
import type { StoredMessage } from '../bus/stream-reader.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { filterFromBus, selects } from './connection-filter.ts';
import { sharedMessageOf } from './downstream.ts';
import { SessionUnavailable, type PubSubErrorCode } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, closeClientSocket, type ConnectionLimits } from './pubsub-connection.ts';
import type { SessionCheckpoint } from './reliable-session.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export interface StreamSessionsOptions {
  js: JetStreamAccess;
  subjects: Subjects;
  nodeId: string;
  /** This edge process (ClusterHubDeps.bootId). */
  bootId: string;
  log: Logger;
  limits: ConnectionLimits;
  requestTimeoutMs: number;
  publishTimeoutMs: number;
  checkpointIntervalMs: number;
  sessionRetainMs: number;
  /** The hub keeps history: group messages carry their sequence. */
  history: boolean;
  /** Takes a connection out of its hub without ending its session (it lives on elsewhere). */
  release(connection: PubSubConnection): void;
  endConnection(connection: PubSubConnection, code: PubSubErrorCode): void;
}

/** What the sessions need of the hub's event path (stream-events.ts). */
export interface SessionStream {
  /** The last stream sequence this edge applied. */
  readonly position: number;
  readonly started: boolean;
  readRange(fromExclusive: number, toInclusive: number, timeoutMs: number): Promise<StoredMessage[]>;
  firstSequence(): Promise<number>;
}

/** Connection ids the relay issues (and a reconnecting client must give back). */
const CONNECTION_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** How often, and how far apart, a take looks again for a checkpoint not there yet. */
const MISSING_CHECKPOINT_RETRIES = 4;
const MISSING_CHECKPOINT_WAIT_MS = 250;
/** Checkpoint writes in flight at once, per hub. */
const MAX_WRITES_IN_FLIGHT = 64;
/** The most ackIds an owner letting go hands to the next edge (the latest ones: retries are of recent requests; ~17 KB). */
const MAX_ACK_IDS_HANDED_OVER = 1_000;
/** `releasedBy` of the last write at shutdown: final for any claim (the restarted edge, even under the same node id, never held it). */
const RELEASED_AT_SHUTDOWN = Number.MAX_SAFE_INTEGER;
/** Sessions whose latest claim an edge remembers (~100 bytes each). */
const MAX_HOLDERS_KNOWN = 50_000;
/** How often a take looks for the last write of a live owner letting go. */
const LAST_WRITE_POLL_MS = 20;
/** How far either side of a checkpoint's position a take looks for its event, numbered otherwise on this edge's server (a soak saw 7 apart). */
const RENUMBERING_READ = 64;

/** The edge holding a session by its latest claim (and its process, when it says), and that claim's stream sequence. */
interface Holder {
  origin: string;
  boot?: string;
  seq: number;
  /** When this edge read the claim (performance.now()): noted ones go after twice timeouts.sessionRetainMs. */
  at?: number;
}

/** This edge's claim read back: its sequence, and the claim it displaced (unknown when read before this edge followed). */
interface ClaimRead {
  seq: number;
  before: Holder | undefined;
}

/** What only the owner's last write carries (letGo). */
type LastWrite = Pick<PsCheckpoint, 'releasedBy' | 'ackIds'>;

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

function hashMatches(stored: string, token: string): boolean {
  const a = Buffer.from(stored);
  const b = Buffer.from(tokenHash(token));
  return a.length === b.length && timingSafeEqual(a, b);
}

/** True when an event for `target` (minus `excluded`) reaches `connection`. */
function addresses(target: Target, connection: PubSubConnection, excluded?: string[]): boolean {
  if (excluded?.includes(connection.id)) return false;
  switch (target.kind) {
    case 'all':
      return true;
    case 'group':
      return connection.groups.has(target.name);
    case 'user':
      return connection.userId === target.name;
    case 'connection':
      return connection.id === target.name;
  }
}

/** How long a checkpoint lasts in the session bucket after its last write: twice sessionRetainMs, a minute at least. */
export function sessionBucketTtlMs(sessionRetainMs: number): number {
  return Math.max(60_000, 2 * sessionRetainMs);
}

/** Whether a stored checkpoint is of a session another edge took by a claim later than `claim`: its write stays. */
function takenSince(found: PsCheckpoint | undefined, claim: number): found is PsCheckpoint {
  return found !== undefined && (found.claim ?? 0) > claim;
}

/** Whether `checkpoint` is of a session a client may take over with `token` on `protocol` (not one that ended). */
function opensWith(checkpoint: PsCheckpoint | undefined, protocol: string, token: string): checkpoint is PsCheckpoint {
  return checkpoint !== undefined && !checkpoint.ended && checkpoint.protocol === protocol && hashMatches(checkpoint.tokenHash, token);
}

/** A session's end, to be stored (StreamSessions.ended). */
interface Ending {
  key: string;
  /** Its last checkpoint, with `ended: true`. */
  value: Buffer;
  /** The revision it is written over (what this edge last stored, or found there on a conflict). */
  revision: number | undefined;
  /** The claim by which this edge held the session (a later one's checkpoint is not written over). */
  claim: number;
  /** When the checkpoint it replaces expires from the bucket anyway. */
  giveUpAt: number;
  writing: boolean;
}

/** Ends the store refused, kept to be tried again, at most (the oldest is given up past it). */
const MAX_ENDINGS = 20_000;

/** What a checkpoint write came to: stored, left to a newer claim's checkpoint (another edge took the session), failed. */
type WriteOutcome = 'stored' | 'kept' | 'failed';

export class StreamSessions {
  /** Sessions whose checkpoint should be written, and those to write whatever the interval. */
  private readonly dirty = new Set<PubSubConnection>();
  private readonly urgent = new Set<PubSubConnection>();
  private readonly lastWritten = new WeakMap<PubSubConnection, number>();
  /** The checkpoint revision this edge last stored per session: writing or deleting it expects that one. */
  private readonly revisions = new WeakMap<PubSubConnection, number>();
  /** The stream sequence of the claim by which this edge took a session (absent: it opened here). */
  private readonly claims = new WeakMap<PubSubConnection, number>();
  /** Each session's checkpoint writes and delete, one after another: a delete never lands before a write sent earlier. */
  private readonly queued = new WeakMap<PubSubConnection, Promise<void>>();
  /** Sessions opened before this edge knew its place in the stream. */
  private readonly awaitingStart = new Set<PubSubConnection>();
  /**
   * Sessions ended here whose end is not stored yet (storeEnding), by connection id, oldest first, until the
   * checkpoint they left would have expired from the bucket: none of them is taken here meanwhile, a failed write
   * is tried again at each tick, and the drain waits for them (pendingWrites). What is kept is the write, not the
   * connection.
   */
  private readonly endings = new Map<string, Ending>();
  /** This edge's own claims, waiting to be read back from the stream: connection id -> resolve(seq). */
  private readonly ownClaims = new Map<string, (claim: ClaimRead) => void>();
  /** The latest claim read per connection id (the edge holding that session), bounded: see noteHolder. */
  private readonly holders = new Map<string, Holder>();
  /** The newest claim read per connection id while a take is in progress here. */
  private readonly claimsSeen = new Map<string, { origin: string; seq: number }>();
  private writing = 0;
  /** Set when a reload removed the hub (close): a take under way stops, and ends a session it claimed. */
  private removedByReload = false;
  /** Aborted at close: a take waiting for its claim to be read back stops waiting (the follower has stopped). */
  private readonly closing = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private lastRefreshAt = Date.now();

  constructor(
    private readonly hub: ClusterHub,
    private readonly stream: SessionStream,
    private readonly options: StreamSessionsOptions,
  ) {
    this.timer = setInterval(() => this.tick(), Math.max(50, Math.floor(options.checkpointIntervalMs / 4)));
    this.timer.unref();
    // One listener per take waiting for its claim (claim), each removed as it ends: Node's default of 10 warned of a
    // leak (MaxListenersExceededWarning) when an edge's clients recovered here at once, which is not one.
    setMaxListeners(0, this.closing.signal);
  }

  private key(connectionId: string): string {
    return `${this.hub.key}.${connectionId}`;
  }

  get pendingWrites(): number {
    return this.dirty.size + this.writing + this.awaitingStart.size + this.endings.size;
  }

  // --- this edge's sessions -------------------------------------------------------------

  /** The follower started: sessions opened before now start at its position. */
  started(): void {
    for (const connection of this.awaitingStart) this.begin(connection);
    this.awaitingStart.clear();
  }

  private begin(connection: PubSubConnection): void {
    const session = connection.session!;
    const first = { sequenceId: session.lastSequenceId, position: this.stream.position, groups: [...connection.groups] };
    session.resumeFrom(first);
    // Written at once, not at the next tick: a client may move to another edge right after connecting.
    void this.write(connection, first);
  }

  /**
   * A reliable connection opened, acknowledged, or changed what the
   * checkpoint records; `identity` when what changed is not in the stream
   * (the connection state an event handler set): written at the next tick.
   */
  changed(connection: PubSubConnection, identity = false): void {
    if (!connection.session || connection.ended) return;
    if (!connection.session.checkpoint) {
      if (this.stream.started) this.begin(connection);
      else this.awaitingStart.add(connection);
      return;
    }
    if (identity) this.urgent.add(connection);
    this.dirty.add(connection);
  }

  /**
   * Writes the session's checkpoint now, for a change the stream does not carry and whose answer says it is kept
   * (a REST permission change): true once stored. A session with no checkpoint yet has it written when it begins.
   */
  async storeNow(connection: PubSubConnection): Promise<boolean> {
    const session = connection.session;
    if (!session || connection.ended) return true;
    if (!session.checkpoint) {
      this.changed(connection, true);
      return true;
    }
    this.dirty.delete(connection);
    this.urgent.delete(connection);
    // A checkpoint kept as another edge's (it took the session meanwhile) does not hold the change: not stored.
    return (await this.write(connection, session.nextCheckpoint(connection.groups, this.stream.position) ?? session.checkpoint)) === 'stored';
  }

  membershipChanged(connection: PubSubConnection, position: number, group: string, joined: boolean): void {
    const session = connection.session;
    if (!session?.checkpoint) return;
    if (!session.noteMembership(position, group, joined)) return this.options.endConnection(connection, 'SessionBufferFull');
    this.dirty.add(connection);
  }

  /**
   * The session ended for good (expired, closed by its client or the server): its checkpoint is replaced by one
   * that says so, unless another edge has written it since (it took the session). Before, the checkpoint was
   * deleted: until the delete landed, or for the bucket's TTL when it failed (logged, never tried again), a
   * recovery with the session's token took the ended session back (a client the server had closed for good
   * returned to its groups and buffered messages; found by review).
   */
  ended(connection: PubSubConnection): void {
    this.dirty.delete(connection);
    this.urgent.delete(connection);
    this.awaitingStart.delete(connection);
    const checkpoint = connection.session?.checkpoint;
    if (!checkpoint) return;
    if (this.endings.size >= MAX_ENDINGS) {
      // The store has refused this many ends: the oldest is given up (its checkpoint expires in its own time).
      const [oldest] = this.endings.keys();
      this.endings.delete(oldest);
      this.options.log.warn({ event: 'pubsub.checkpoint_end_dropped', hub: this.hub.name, connectionId: oldest, pending: MAX_ENDINGS });
    }
    const ending: Ending = {
      key: this.key(connection.id),
      value: Buffer.from(JSON.stringify({ ...this.record(connection, checkpoint), ended: true })),
      revision: undefined,
      claim: this.claims.get(connection) ?? 0,
      giveUpAt: (this.lastWritten.get(connection) ?? Date.now()) + sessionBucketTtlMs(this.options.sessionRetainMs),
      writing: true,
    };
    this.endings.set(connection.id, ending);
    // After the session's writes in flight: the revision the last of them stored is the one to write over.
    void this.inTurn(connection, () => {
      ending.revision = this.revisions.get(connection);
      return this.storeEnding(connection.id, ending);
    });
  }

  /** A claim read from the stream: this edge's own resolves its take; another edge's makes this edge let go. */
  claimed(claim: PsClaim, seq: number): void {
    const before = this.holders.get(claim.connectionId);
    this.noteHolder(claim.connectionId, { origin: claim.origin, boot: claim.boot, seq });
    // This process's own claim; one of an earlier process under this node id, still letting go, is another's.
    if (claim.origin === this.options.nodeId && (claim.boot === undefined || claim.boot === this.options.bootId)) {
      this.ownClaims.get(claim.connectionId)?.({ seq, before });
      return;
    }
    if (this.claimsSeen.has(claim.connectionId)) this.claimsSeen.set(claim.connectionId, { origin: claim.origin, seq });
    const connection = this.hub.local.connections.get(claim.connectionId);
    if (!connection?.session || connection.ended) return;
    this.options.log.info({ event: 'pubsub.session_released', hub: this.hub.name, connectionId: connection.id, to: claim.origin });
    void this.letGo(connection, seq);
  }

  /**
   * Remembers who holds a session by the latest claim: until twice timeouts.sessionRetainMs later (the holder has
   * written the session's checkpoint, naming itself and its claim, since: a take finds it there), and the oldest go
   * past MAX_HOLDERS_KNOWN. Before, every session ever claimed stayed on every edge, up to 50,000 per hub (~7 MiB).
   */
  private noteHolder(connectionId: string, holder: Holder): void {
    this.holders.delete(connectionId);
    this.holders.set(connectionId, { ...holder, at: performance.now() });
    if (this.holders.size > MAX_HOLDERS_KNOWN) this.holders.delete(this.holders.keys().next().value as string);
  }

  /** Forgets claims read more than twice timeouts.sessionRetainMs ago (the map is in the order they were read). */
  private forgetOldHolders(now = performance.now()): void {
    const oldest = now - 2 * this.options.sessionRetainMs;
    for (const [connectionId, holder] of this.holders) {
      if ((holder.at ?? 0) >= oldest) return;
      this.holders.delete(connectionId);
    }
  }

  /** Sessions whose latest claim this edge remembers. */
  get holdersKnown(): number {
    return this.holders.size;
  }

  /**
   * Writes the session's last checkpoint, then takes it out of this edge.
   * `claimSeq`: the claim that made it let go, which the edge taking the
   * session waits to see in that write (with what the stream does not carry:
   * permissions, the ackIds answered, the connection state).
   */
  private async letGo(connection: PubSubConnection, claimSeq?: number): Promise<void> {
    const socket = connection.socket;
    const checkpoint = connection.session!.nextCheckpoint(connection.groups, this.stream.position) ?? connection.session!.checkpoint;
    this.options.release(connection);
    this.dirty.delete(connection);
    this.urgent.delete(connection);
    // A socket still open (its client reconnected elsewhere without closing it) is told and closed, not dropped
    // (session-recovery.ts does the same for a session recovered on the edge holding it); at shutdown it is
    // closing already (1012), and its handshake goes on, bounded.
    if (socket) closeClientSocket(socket, connection.simple, claimSeq === undefined ? 'ShuttingDown' : 'SessionMoved');
    if (checkpoint) {
      const releasedBy = claimSeq ?? RELEASED_AT_SHUTDOWN;
      const ackIds = connection.answeredAckIds().slice(-MAX_ACK_IDS_HANDED_OVER);
      // A write refused (too large for the NATS servers' max_payload, with many groups) goes again without the ackIds.
      if ((await this.write(connection, checkpoint, { releasedBy, ackIds })) === 'failed' && ackIds.length > 0) await this.write(connection, checkpoint, { releasedBy });
    }
    connection.session!.clear();
  }

  /** At shutdown: every session's checkpoint is written and the session let go; any edge takes it from there. */
  async releaseAll(): Promise<void> {
    const held = [...this.hub.local.connections.values()].filter((c) => c.session?.checkpoint && !c.ended);
    await Promise.allSettled(held.map((c) => this.letGo(c)));
  }

  // --- checkpoints -------------------------------------------------------------------------

  private tick(): void {
    const now = Date.now();
    if (now - this.lastRefreshAt >= this.options.sessionRetainMs / 4) {
      // Checkpoints expire from the bucket; those not written for a while are written again.
      this.lastRefreshAt = now;
      this.forgetOldHolders();
      for (const connection of this.hub.local.connections.values()) {
        if (connection.session?.checkpoint && now - (this.lastWritten.get(connection) ?? 0) >= this.options.sessionRetainMs / 2) {
          this.urgent.add(connection);
          this.dirty.add(connection);
        }
      }
    }
    for (const connection of this.dirty) {
      if (this.writing >= MAX_WRITES_IN_FLIGHT) break;
      // One write at a time per session: a slow store does not queue one per tick; it stays dirty for a later tick.
      if (this.queued.has(connection)) continue;
      const urgent = this.urgent.has(connection);
      if (!urgent && now - (this.lastWritten.get(connection) ?? 0) < this.options.checkpointIntervalMs) continue;
      this.dirty.delete(connection);
      this.urgent.delete(connection);
      const session = connection.session;
      if (!session || connection.ended) continue;
      const checkpoint = session.nextCheckpoint(connection.groups, this.stream.position) ?? (urgent ? session.checkpoint : undefined);
      if (checkpoint) void this.write(connection, checkpoint);
    }
    // Ends the store refused, again: after the live sessions' writes, with the places they left (before: first, and
    // 64 of them failing each tick kept every live checkpoint from being written).
    for (const [connectionId, ending] of this.endings) {
      if (now >= ending.giveUpAt) {
        // The checkpoint it left has expired from the bucket by now.
        this.endings.delete(connectionId);
        continue;
      }
      if (this.writing >= MAX_WRITES_IN_FLIGHT) break;
      if (ending.writing) continue;
      ending.writing = true;
      this.writing++;
      void this.storeEnding(connectionId, ending).finally(() => this.writing--);
    }
  }

  private record(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): PsCheckpoint {
    return {
      ...last,
      op: 'ps.checkpoint',
      hub: this.hub.name,
      connectionId: connection.id,
      userId: connection.userId,
      protocol: connection.protocol,
      tokenHash: tokenHash(connection.session!.reconnectionToken),
      permissions: connection.permissions.snapshot(),
      owner: this.options.nodeId,
      ownerBoot: this.options.bootId,
      claim: this.claims.get(connection) ?? 0,
      sequenceId: checkpoint.sequenceId,
      position: checkpoint.position,
      ...(checkpoint.mid !== undefined ? { mid: checkpoint.mid } : {}),
      groups: checkpoint.groups,
      states: connection.states,
      at: Date.now(),
    };
  }

  /** Stored, left to a newer claim's checkpoint (another edge took the session), or failed. */
  private async write(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): Promise<WriteOutcome> {
    let outcome: WriteOutcome = 'failed';
    await this.inTurn(connection, async () => {
      outcome = await this.store(connection, checkpoint, last);
    });
    return outcome;
  }

  private inTurn(connection: PubSubConnection, step: () => Promise<void>): Promise<void> {
    this.writing++;
    const next = (this.queued.get(connection) ?? Promise.resolve()).then(step).finally(() => {
      this.writing--;
      if (this.queued.get(connection) === next) this.queued.delete(connection);
    });
    this.queued.set(connection, next);
    return next;
  }

  private async store(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): Promise<WriteOutcome> {
    const key = this.key(connection.id);
    const value = Buffer.from(JSON.stringify(this.record(connection, checkpoint, last)));
    try {
      let previous = this.revisions.get(connection);
      for (let attempt = 0; ; attempt++) {
        try {
          this.revisions.set(connection, await this.options.js.put(key, value, previous));
          this.lastWritten.set(connection, Date.now());
          return 'stored';
        } catch (err) {
          if (!(err instanceof StoreConflict) || attempt > 0) throw err;
        }
        // Written since: by this edge when a write's answer was lost, by the edge this one took the
        // session from (its last write), or by an edge that took it from this one (whose claim this
        // edge has not read yet): that one's checkpoint stays.
        const found = await this.readCheckpointEntry(connection.id);
        const stored = found?.checkpoint;
        if (takenSince(stored, this.claims.get(connection) ?? 0)) {
          this.options.log.info({ event: 'pubsub.checkpoint_kept', hub: this.hub.name, connectionId: connection.id, owner: stored.owner, claim: stored.claim });
          return 'kept';
        }
        previous = found?.revision;
      }
    } catch (err) {
      // Written again at the next tick (JetStream may be electing a leader).
      if (!connection.ended) {
        this.dirty.add(connection);
        this.urgent.add(connection);
      }
      this.options.log.warn({ event: 'pubsub.checkpoint_failed', hub: this.hub.name, connectionId: connection.id, err: (err as Error).message });
      return 'failed';
    }
  }

  /**
   * Stores that the session ended, over its checkpoint unless another edge
   * took the session since (a later claim's checkpoint stays: this edge's
   * copy then expires or is closed here). A failure is tried again at the
   * next tick (endings).
   */
  private async storeEnding(connectionId: string, ending: Ending): Promise<void> {
    try {
      try {
        await this.options.js.put(ending.key, ending.value, ending.revision);
      } catch (err) {
        if (!(err instanceof StoreConflict)) throw err;
        // Written since: by this edge when a write's answer was lost, else by the edge that took the session.
        const found = await this.readCheckpointEntry(connectionId);
        const stored = found?.checkpoint;
        if (takenSince(stored, ending.claim)) {
          this.options.log.info({ event: 'pubsub.checkpoint_kept', hub: this.hub.name, connectionId, owner: stored.owner });
          this.endings.delete(connectionId);
          return;
        }
        ending.revision = found?.revision;
        await this.options.js.put(ending.key, ending.value, ending.revision);
      }
      this.endings.delete(connectionId);
    } catch (err) {
      this.options.log.warn({ event: 'pubsub.checkpoint_end_failed', hub: this.hub.name, connectionId, err: (err as Error).message });
    } finally {
      ending.writing = false;
    }
  }

  private async readCheckpoint(connectionId: string): Promise<PsCheckpoint | undefined> {
    let found: { checkpoint?: PsCheckpoint } | undefined;
    try {
      found = await this.readCheckpointEntry(connectionId);
    } catch (err) {
      throw new SessionUnavailable(`the session store did not answer: ${(err as Error).message}`);
    }
    return found?.checkpoint;
  }

  /** The stored entry for a connection id: its revision, and the checkpoint when it is a valid one for this hub. */
  private async readCheckpointEntry(connectionId: string): Promise<{ revision: number; checkpoint?: PsCheckpoint } | undefined> {
    const entry = await this.options.js.entry(this.key(connectionId));
    if (!entry) return undefined;
    let value: unknown;
    try {
      value = parseJson(Buffer.from(entry.value).toString('utf8'));
    } catch {
      return { revision: entry.revision };
    }
    if (!isEdgeMessage(value) || value.op !== 'ps.checkpoint' || value.connectionId !== connectionId || asciiLowerCase(value.hub) !== this.hub.key) {
      this.options.log.warn({ event: 'bus.invalid_message', hub: this.hub.name, op: 'ps.checkpoint' });
      return { revision: entry.revision };
    }
    return { revision: entry.revision, checkpoint: value };
  }

  // --- taking a session over ----------------------------------------------------------------

  /**
   * Rebuilds a session here from its checkpoint and the hub's stream; the
   * connection is in the hub, not yet attached to a socket. Undefined when no
   * such session is kept (or the token does not match); throws
   * SessionUnavailable when JetStream cannot answer now.
   */
  async take(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    if (!CONNECTION_ID.test(connectionId)) return undefined;
    // Ended here, its end not stored yet: ended all the same.
    if (this.endings.has(connectionId)) return undefined;
    if (!this.stream.started) throw new SessionUnavailable('this edge is not following the hub stream yet');
    // A session that has just opened elsewhere may not have its first checkpoint written yet.
    let found = await this.readCheckpoint(connectionId);
    for (let tries = 0; !found && tries < MISSING_CHECKPOINT_RETRIES; tries++) {
      await new Promise((r) => setTimeout(r, MISSING_CHECKPOINT_WAIT_MS));
      found = await this.readCheckpoint(connectionId);
    }
    if (!opensWith(found, protocol, token)) return undefined;
    // Removed by a reload meanwhile: no claim (the edge holding the session keeps it).
    this.stopIfRemoved();
    const deadline = Date.now() + this.options.publishTimeoutMs + this.options.requestTimeoutMs;
    this.claimsSeen.set(connectionId, { origin: this.options.nodeId, seq: 0 });
    const claimed: { seq?: number } = {};
    let connection: PubSubConnection | undefined;
    try {
      const { seq: claimSeq, before } = await this.claim(connectionId, deadline, claimed);
      // The edge that held it writes its last checkpoint when it reads the claim: what the stream does
      // not carry (permissions a REST call changed, the ackIds it answered) is only there.
      const holder = before ?? { origin: found.owner, boot: found.ownerBoot, seq: found.claim ?? 0 };
      // Gone or ended meanwhile (before: the copy read first was taken, a session ended during the take revived).
      const checkpoint = await this.lastWriteOf(connectionId, holder, claimSeq, deadline);
      this.stopIfRemoved();
      if (!opensWith(checkpoint, protocol, token)) return undefined;
      connection = new PubSubConnection(
        connectionId,
        this.hub.name,
        checkpoint.userId,
        ConnectionPermissions.fromSnapshot(checkpoint.permissions),
        protocol,
        this.options.limits,
        token,
      );
      for (const group of checkpoint.groups) connection.groups.add(group);
      for (const ackId of checkpoint.ackIds ?? []) connection.rememberAckId(ackId);
      connection.states = checkpoint.states;
      connection.session!.resumeFrom({ sequenceId: checkpoint.sequenceId, position: checkpoint.position, groups: checkpoint.groups });
      this.claims.set(connection, claimSeq);
      const from = checkpoint.mid === undefined ? checkpoint.position : await this.positionOf(checkpoint.mid, checkpoint.position, deadline);
      const replayed = await this.replay(connection, from, claimSeq, deadline);
      if (replayed !== 'caught up') {
        this.options.log.info({ event: 'pubsub.session_take_refused', hub: this.hub.name, connectionId, reason: replayed });
        connection.session!.clear();
        return undefined;
      }
      this.options.log.info({
        event: 'pubsub.session_taken',
        hub: this.hub.name,
        connectionId,
        from: checkpoint.owner,
        checkpoint: checkpoint.sequenceId,
        replay: connection.session!.unacknowledged,
      });
      // Written before the client hears `connected`: an edge taking the session from this one
      // next knows by this write that this edge held it (lastWriteOf), and waits for its last.
      const taken = connection.session!.nextCheckpoint(connection.groups, this.stream.position) ?? connection.session!.checkpoint;
      this.stopIfRemoved();
      if (taken) await this.write(connection, taken);
      this.stopIfRemoved();
      return connection;
    } catch (err) {
      // A reload removed the hub during the take, after its claim was stored: the edge that held the session let
      // it go for that claim, and the client is told the hub was removed (1008), as the hub's connections here
      // were. The session ends as theirs did (before: its checkpoint stayed open, and a hub of the same name added
      // again, with another key, took the session back for the old reconnection token).
      if (this.removedByReload && claimed.seq !== undefined) {
        if (connection) {
          this.hub.local.remove(connection);
          connection.session?.clear();
        }
        await this.endClaimed(connectionId, claimed.seq);
      }
      throw err;
    } finally {
      this.claimsSeen.delete(connectionId);
    }
  }

  /** Throws SessionUnavailable once a reload removed the hub: a take under way goes no further (session-recovery.ts says why). */
  private stopIfRemoved(): void {
    if (this.removedByReload) throw new SessionUnavailable('the hub was removed from the configuration');
  }

  /**
   * Stores that a session this edge claimed, and did not take because a reload removed the hub, ended: over the
   * checkpoint there (the holder's last write, or this edge's own), unless a later claim took the session since.
   */
  private async endClaimed(connectionId: string, claimSeq: number): Promise<void> {
    let found: Awaited<ReturnType<StreamSessions['readCheckpointEntry']>>;
    try {
      found = await this.readCheckpointEntry(connectionId);
    } catch (err) {
      this.options.log.warn({ event: 'pubsub.checkpoint_end_failed', hub: this.hub.name, connectionId, err: (err as Error).message });
      return;
    }
    const stored = found?.checkpoint;
    if (!stored || stored.ended || (stored.claim ?? 0) > claimSeq) return;
    const record: PsCheckpoint = { ...stored, owner: this.options.nodeId, ownerBoot: this.options.bootId, claim: claimSeq, at: Date.now(), ended: true };
    delete record.releasedBy;
    delete record.ackIds;
    const ending: Ending = {
      key: this.key(connectionId),
      value: Buffer.from(JSON.stringify(record)),
      revision: found!.revision,
      claim: claimSeq,
      giveUpAt: Date.now() + sessionBucketTtlMs(this.options.sessionRetainMs),
      writing: true,
    };
    await this.storeEnding(connectionId, ending);
  }

  /**
   * The checkpoint after the claim `claimSeq`, once `holder` (the edge whose
   * claim this one displaced, or that opened the session) wrote it on letting
   * go (`releasedBy` this claim); at once when the holder is this edge (its
   * own earlier process let go at shutdown) or is not on the hub's roster
   * (dead or gone: what it wrote last is all there is). A live holder is
   * waited for up to bus.requestTimeoutMs, then the last checkpoint stored is
   * taken (before, it always was: a revoke or grant made just before a move,
   * and the ackIds answered, could be lost).
   */
  private async lastWriteOf(connectionId: string, holder: Holder, claimSeq: number, deadline: number): Promise<PsCheckpoint | undefined> {
    const until = Math.min(deadline, Date.now() + this.options.requestTimeoutMs);
    const waitFor = holder.origin !== this.options.nodeId && this.hub.edgeOnRoster(holder.origin, holder.boot);
    for (;;) {
      const checkpoint = await this.readCheckpoint(connectionId);
      if (!checkpoint || checkpoint.ended || !waitFor || (checkpoint.releasedBy ?? 0) >= claimSeq) return checkpoint;
      // The holder's claim never became a session there (its take failed: an edge that takes a
      // session writes before its client hears `connected`), and the edge before it let go for that claim.
      if (checkpoint.owner !== holder.origin && checkpoint.releasedBy !== undefined && checkpoint.releasedBy >= holder.seq) return checkpoint;
      if (Date.now() >= until || !this.hub.edgeOnRoster(holder.origin, holder.boot)) {
        this.options.log.info({ event: 'pubsub.session_last_write_missing', hub: this.hub.name, connectionId, holder: holder.origin });
        return checkpoint;
      }
      await new Promise((r) => setTimeout(r, LAST_WRITE_POLL_MS));
    }
  }

  /** Stores this edge's claim and waits until this edge read it back: every event before it is applied here. */
  private async claim(connectionId: string, deadline: number, claimed: { seq?: number }): Promise<ClaimRead> {
    let readBack!: (claim: ClaimRead) => void;
    const read = new Promise<ClaimRead>((resolve) => (readBack = resolve));
    this.ownClaims.set(connectionId, readBack);
    let timer: NodeJS.Timeout | undefined;
    let stop: (() => void) | undefined;
    try {
      const claim: PsClaim = { op: 'ps.claim', origin: this.options.nodeId, boot: this.options.bootId, hub: this.hub.name, connectionId };
      try {
        claimed.seq = (await this.options.js.publish(this.options.subjects.hubControl(this.hub.key), encodeEdgeMessage(claim), randomUUID())).seq;
      } catch (err) {
        throw new SessionUnavailable((err as Error).message);
      }
      // Closed (the hub removed by a reload, or the edge stopping): the follower reads no more, the claim never
      // comes back. Before, the take waited for it until its deadline (publishTimeoutMs + requestTimeoutMs).
      const stopped = new Promise<never>((_, reject) => {
        stop = () => reject(new SessionUnavailable(this.removedByReload ? 'the hub was removed from the configuration' : 'the hub stream is no longer read'));
        timer = setTimeout(() => reject(new SessionUnavailable('the hub stream did not come back in time')), Math.max(0, deadline - Date.now()));
        if (this.closing.signal.aborted) stop();
        else this.closing.signal.addEventListener('abort', stop, { once: true });
      });
      return await Promise.race([read, stopped]);
    } finally {
      clearTimeout(timer);
      if (stop) this.closing.signal.removeEventListener('abort', stop);
      this.ownClaims.delete(connectionId);
    }
  }

  /**
   * Where the event `mid`, stored at `position` as the checkpoint's writer read the stream, is as this edge
   * reads it. The copies of a stream on nats-server before 2.10.14 can number it differently (docs/durability.md):
   * replayed from the writer's number, the session's ids moved by the difference, and its client got the event it
   * had last again (the ids one higher) or dropped the next ones as seen (lower). Read around `position`; where
   * the event is not found there, `position`.
   */
  private async positionOf(mid: string, position: number, deadline: number): Promise<number> {
    const to = Math.min(position + RENUMBERING_READ, this.stream.position);
    if (to <= 0) return position;
    const read = async (fromExclusive: number, toInclusive: number) => {
      try {
        return await this.stream.readRange(fromExclusive, toInclusive, Math.max(100, deadline - Date.now()));
      } catch (err) {
        throw new SessionUnavailable(`the hub stream could not be read: ${(err as Error).message}`);
      }
    };
    // Where it was written, as a rule (the copies agree): one message read, not the 129 around it.
    const [at] = position > 0 && position <= to ? await read(position - 1, position) : [];
    if (at?.seq === position && decodeEdgeMessage(at.data, 'ps.send')?.message.mid === mid) return position;
    const messages: StoredMessage[] = await read(Math.max(0, position - RENUMBERING_READ - 1), to);
    for (const m of messages) {
      const decoded = decodeEdgeMessage(m.data, 'ps.send');
      if (decoded?.message.mid === mid) {
        if (m.seq !== position) this.options.log.warn({ event: 'pubsub.checkpoint_renumbered', hub: this.hub.name, mid, writtenAs: position, readAs: m.seq });
        return m.seq;
      }
    }
    return position;
  }

  /**
   * Applies the stream after `from` to the connection alone (its membership
   * changes, and its events numbered in order) until it reaches where this
   * edge's follower is; then, in the same turn, puts the connection into the
   * hub, so the follower's next event reaches it too.
   */
  private async replay(connection: PubSubConnection, from: number, claimSeq: number, deadline: number): Promise<'caught up' | string> {
    if (from < this.stream.position) {
      const first = await this.firstSequence();
      if (first > from + 1) return `the stream no longer holds the events after the checkpoint (it starts at ${first}, the checkpoint is at ${from})`;
    }
    for (let at = from; ; ) {
      const to = this.stream.position;
      if (at >= to) {
        this.hub.local.adopt(connection);
        return 'caught up';
      }
      if (Date.now() > deadline) throw new SessionUnavailable('the replay did not catch up in time');
      let messages: StoredMessage[];
      try {
        messages = await this.stream.readRange(at, to, Math.max(100, deadline - Date.now()));
      } catch (err) {
        throw new SessionUnavailable(`the hub stream could not be read: ${(err as Error).message}`);
      }
      if (messages.length === 0) {
        // Nothing read where the stream says it holds events: a read made while NATS reconnects, or on a server
        // still catching up, can come back empty. Only a stream that starts after them has lost them (1008, the
        // session dropped); otherwise the client tries again (1013). A chaos soak saw a session dropped so.
        const first = await this.firstSequence();
        if (first > at + 1) return `the stream no longer holds the events after the checkpoint (it starts at ${first}, the replay is at ${at})`;
        throw new SessionUnavailable(`a read of the hub stream after ${at} found nothing though it starts at ${first}`);
      }
      for (const m of messages) {
        const outcome = this.replayOne(connection, m, claimSeq);
        if (outcome) return outcome;
        at = m.seq;
      }
      const newer = this.claimsSeen.get(connection.id);
      if (newer && newer.origin !== this.options.nodeId && newer.seq > claimSeq) return 'another edge claimed it since';
    }
  }

  /** Where the hub stream starts now; one that cannot say is a failure to retry (1013), not events gone (1008, the session dropped). */
  private async firstSequence(): Promise<number> {
    try {
      return await this.stream.firstSequence();
    } catch (err) {
      throw new SessionUnavailable(`the hub stream could not say where it starts: ${(err as Error).message}`);
    }
  }

  /** One stream message for the connection being rebuilt; a reason to stop, or undefined. */
  private replayOne(connection: PubSubConnection, m: StoredMessage, claimSeq: number): string | undefined {
    const decoded = decodeEdgeMessage(m.data, 'ps.send', 'ps.member', 'ps.claim');
    const event = decoded?.message;
    if (!event || asciiLowerCase(event.hub) !== this.hub.key) return undefined;
    const session = connection.session!;
    const filter = event.op === 'ps.claim' ? undefined : filterFromBus(event.filter);
    // Skipped here as the follower skipped it on every edge.
    if (filter === null) return undefined;
    switch (event.op) {
      case 'ps.send': {
        if (!addresses(event.target, connection, event.excluded) || (filter && !filter.matches(connection))) return undefined;
        const sequence = this.options.history && event.target.kind === 'group' ? m.seq : undefined;
        const message = sharedMessageOf(event, decoded!.body, m.seq, sequence);
        // One past its time to live is numbered all the same (the edge that held the session did, and the
        // client's ids must go on matching theirs), and never sent (PubSubConnection.flush).
        if (message && session.push(message) === undefined) return 'the session buffer is full';
        return undefined;
      }
      case 'ps.member': {
        const t = event.target;
        const membership = filter ?? event.terms;
        const matched = (t.kind === 'all' || addresses(t, connection)) && (!membership || selects(membership, connection));
        if (!matched) return undefined;
        const groups = event.action === 'removeAll' ? [...connection.groups] : event.groups;
        for (const group of groups) {
          const joined = event.action === 'add';
          if (connection.groups.has(group) === joined) continue;
          // As the live edges apply it (hub-cluster.ts, applyGroups).
          if (joined && !connection.mayJoin(group)) break;
          if (joined) connection.groups.add(group);
          else connection.groups.delete(group);
          if (!session.noteMembership(m.seq, group, joined)) return 'the session buffer is full';
        }
        return undefined;
      }
      case 'ps.claim':
        if (event.connectionId === connection.id && event.origin !== this.options.nodeId && m.seq > claimSeq) return 'another edge claimed it since';
        return undefined;
    }
  }

  close(removed = false): void {
    this.removedByReload = removed;
    clearInterval(this.timer);
    this.closing.abort();
  }
}
