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
//
// This module keeps the sessions held here: which checkpoints to write when,
// and letting a session go when another edge claims it. The bucket's reads and
// writes are session-checkpoints.ts; taking a session over, session-take.ts.
import type { PsClaim } from '../bus/messages.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { closeClientSocket, type PubSubConnection } from './pubsub-connection.ts';
import { SessionCatchUps, type CatchUpStream } from './session-catch-up.ts';
import { SessionCheckpoints, type SessionCheckpointsOptions } from './session-checkpoints.ts';
import { SessionTakes, checkpointAnchor, type Holder, type SessionTakeOptions } from './session-take.ts';

/** What the sessions need of the hub's event path (stream-events.ts). */
export type SessionStream = CatchUpStream;

/** What the sessions need: their takes' options (SessionTakeOptions), their checkpoints' (SessionCheckpointsOptions), and these. */
export interface StreamSessionsOptions extends SessionTakeOptions, SessionCheckpointsOptions {
  checkpointIntervalMs: number;
  /** Takes a connection out of its hub without ending its session (it lives on elsewhere). */
  release(connection: PubSubConnection): void;
}

/** The most ackIds an owner letting go hands to the next edge (the latest ones: retries are of recent requests; ~17 KB). */
const MAX_ACK_IDS_HANDED_OVER = 1_000;
/** `releasedBy` of the last write at shutdown: final for any claim (the restarted edge, even under the same node id, never held it). */
const RELEASED_AT_SHUTDOWN = Number.MAX_SAFE_INTEGER;
/** Sessions whose latest claim an edge remembers (~100 bytes each). */
const MAX_HOLDERS_KNOWN = 50_000;

export class StreamSessions {
  /** Sessions whose checkpoint should be written, and those to write whatever the interval. */
  private readonly dirty = new Set<PubSubConnection>();
  private readonly urgent = new Set<PubSubConnection>();
  /** Sessions opened before this edge knew its place in the stream. */
  private readonly awaitingStart = new Set<PubSubConnection>();
  /** The latest claim read per connection id (the edge holding that session), bounded: see noteHolder. */
  private readonly holders = new Map<string, Holder>();
  private readonly timer: NodeJS.Timeout;
  private lastRefreshAt = Date.now();
  private readonly checkpoints: SessionCheckpoints;
  private readonly takes: SessionTakes;
  private readonly catchUps: SessionCatchUps;

  constructor(
    private readonly hub: ClusterHub,
    private readonly stream: SessionStream,
    private readonly options: StreamSessionsOptions,
  ) {
    this.checkpoints = new SessionCheckpoints(hub, options, (connection) => {
      this.dirty.add(connection);
      this.urgent.add(connection);
    });
    this.takes = new SessionTakes(hub, stream, this.checkpoints, options);
    this.catchUps = new SessionCatchUps(hub, stream, options);
    this.timer = setInterval(() => this.tick(), Math.max(50, Math.floor(options.checkpointIntervalMs / 4)));
    this.timer.unref();
  }

  get pendingWrites(): number {
    return this.dirty.size + this.awaitingStart.size + this.checkpoints.pending;
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
    void this.checkpoints.write(connection, first);
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
    // An acknowledgement may leave room for a session behind the live flow to read on (session-catch-up.ts).
    if (connection.session.behindAt !== undefined) this.catchUps.resume(connection);
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
    return (await this.checkpoints.write(connection, session.nextCheckpoint(connection.groups, this.stream.position, checkpointAnchor(this.stream)) ?? session.checkpoint)) === 'stored';
  }

  /** The follower reads the stream again from `seq` (made again, or rewritten): sessions behind the live flow end (SessionCatchUps.streamWentBack). */
  streamWentBack(seq: number): void {
    this.catchUps.streamWentBack(seq);
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
    this.checkpoints.end(connection, checkpoint);
  }

  /** A claim read from the stream: this edge's own resolves its take; another edge's makes this edge let go. */
  claimed(claim: PsClaim, seq: number): void {
    const before = this.holders.get(claim.connectionId);
    this.noteHolder(claim.connectionId, { origin: claim.origin, boot: claim.boot, seq });
    // This process's own claim; one of an earlier process under this node id, still letting go, is another's.
    if (claim.origin === this.options.nodeId && (claim.boot === undefined || claim.boot === this.options.bootId)) {
      this.takes.ownClaimRead(claim.connectionId, { seq, before });
      return;
    }
    this.takes.otherClaimRead(claim.connectionId, claim.origin, seq);
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
    const checkpoint = connection.session!.nextCheckpoint(connection.groups, this.stream.position, checkpointAnchor(this.stream)) ?? connection.session!.checkpoint;
    this.options.release(connection);
    this.dirty.delete(connection);
    this.urgent.delete(connection);
    // A socket still open (its client reconnected elsewhere without closing it) is told and closed, not dropped
    // (session-recovery.ts does the same for a session recovered on the edge holding it); at shutdown it is
    // closing already (1012), and its handshake goes on, bounded.
    if (socket) closeClientSocket(socket, connection.wire, claimSeq === undefined ? 'ShuttingDown' : 'SessionMoved');
    if (checkpoint) {
      const releasedBy = claimSeq ?? RELEASED_AT_SHUTDOWN;
      const ackIds = connection.answeredAckIds().slice(-MAX_ACK_IDS_HANDED_OVER);
      // A write refused (too large for the NATS servers' max_payload, with many groups) goes again without the ackIds.
      if ((await this.checkpoints.write(connection, checkpoint, { releasedBy, ackIds })) === 'failed' && ackIds.length > 0) {
        await this.checkpoints.write(connection, checkpoint, { releasedBy });
      }
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
        if (connection.session?.checkpoint && now - (this.checkpoints.lastWrittenAt(connection) ?? 0) >= this.options.sessionRetainMs / 2) {
          this.urgent.add(connection);
          this.dirty.add(connection);
        }
      }
    }
    for (const connection of this.dirty) {
      if (this.checkpoints.full) break;
      // One write at a time per session: a slow store does not queue one per tick; it stays dirty for a later tick.
      if (this.checkpoints.busy(connection)) continue;
      const urgent = this.urgent.has(connection);
      if (!urgent && now - (this.checkpoints.lastWrittenAt(connection) ?? 0) < this.options.checkpointIntervalMs) continue;
      this.dirty.delete(connection);
      this.urgent.delete(connection);
      const session = connection.session;
      if (!session || connection.ended) continue;
      const checkpoint = session.nextCheckpoint(connection.groups, this.stream.position, checkpointAnchor(this.stream)) ?? (urgent ? session.checkpoint : undefined);
      if (checkpoint) void this.checkpoints.write(connection, checkpoint);
    }
    // Ends the store refused, again: after the live sessions' writes, with the places they left (before: first, and
    // 64 of them failing each tick kept every live checkpoint from being written).
    this.checkpoints.retryEndings(now);
    // (Kept for a take's replay too: it ends with them, session-take.ts.)
    if (!this.takes.replaying) this.catchUps.forgetRecentUnlessBehind();
  }

  // --- taking a session over ----------------------------------------------------------------

  /** Rebuilds a session here from its checkpoint and the hub's stream (SessionTakes.take). */
  take(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    return this.takes.take(connectionId, token, protocol);
  }

  /** Whether the connection's session is kept, held by no edge (SessionTakes.keptUnheld). */
  keptUnheld(connectionId: string): Promise<boolean> {
    return this.takes.keptUnheld(connectionId);
  }

  close(removed = false): void {
    clearInterval(this.timer);
    this.takes.close(removed);
    this.catchUps.close();
  }
}
