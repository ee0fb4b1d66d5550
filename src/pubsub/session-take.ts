// Taking a durable hub's session over from another edge, alive or killed
// (docs/durability.md, "Reliable sessions"): this edge stores a claim in the
// hub's stream and waits to read it back (every event before it is then
// applied here), reads the checkpoint the holder wrote last (waiting a while
// for a live holder's last write, which carries what the stream does not),
// and replays the stream from it to where this edge's follower is, numbering
// events as the old edge did, before the connection joins the hub. Claims read
// from the stream reach the takes under way through stream-sessions.ts.
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { decodeEdgeMessage, encodeEdgeMessage, type PsCheckpoint, type PsClaim, type PsClose, type PsSend, type Target } from '../bus/messages.ts';
import type { JetStreamAccess } from '../bus/jetstream.ts';
import { StoreError } from '../bus/jetstream-errors.ts';
import type { StoredMessage } from '../bus/stream-reader.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { Logger } from '../telemetry/logger.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { filterFromBus, selects, type ConnectionFilter, type FilterSubject } from './connection-filter.ts';
import { streamMessageOf, type SharedMessage } from './downstream.ts';
import { SessionClosedByServer, SessionUnavailable, type PubSubErrorCode } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, type ConnectionLimits } from './pubsub-connection.ts';
import { opensWith, type SessionCheckpoints } from './session-checkpoints.ts';

/** What a take needs of the hub's sessions (part of StreamSessionsOptions). */
export interface SessionTakeOptions {
  js: JetStreamAccess;
  subjects: Subjects;
  nodeId: string;
  /** This edge process (ClusterHubDeps.bootId). */
  bootId: string;
  log: Logger;
  limits: ConnectionLimits;
  requestTimeoutMs: number;
  publishTimeoutMs: number;
  /** The hub keeps history: group messages carry their sequence. */
  history: boolean;
  /** Ends a connection for good (ConnectionLifecycle.end): its session's end stored, its `disconnected` event sent. */
  endConnection(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void;
}

/** What the sessions and their takes need of the hub's event path (stream-events.ts). */
export interface SessionStream {
  /** The last stream sequence this edge applied. */
  readonly position: number;
  readonly started: boolean;
  readRange(fromExclusive: number, toInclusive: number, timeoutMs: number): Promise<StoredMessage[]>;
  firstSequence(): Promise<number>;
  /** The last send event this edge applied (its sequence, id, and when: Date.now()), when it read one since it began reading. */
  readonly lastSend?: { seq: number; mid: string; appliedAt: number };
  /** Keeps the messages applied from now on in memory, for sessions behind the live flow and takes' replays (recent-stream.ts). */
  keepRecent(): void;
  /** Every message applied after `position`, when they are kept; undefined when not all of them are. */
  recentAfter(position: number): StoredMessage[] | undefined;
}

/** A REST close stored in the hub's stream that a take's replay found naming the session: the take ends it. */
interface ClosedAt {
  close: PsClose;
  seq: number;
}

/** Connection ids the relay issues (and a reconnecting client must give back). */
const CONNECTION_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** How often, and how far apart, a take looks again for a checkpoint not there yet. */
const MISSING_CHECKPOINT_RETRIES = 4;
const MISSING_CHECKPOINT_WAIT_MS = 250;
/** How often a take looks for the last write of a live owner letting go. */
const LAST_WRITE_POLL_MS = 20;
/**
 * Why a take stops when another edge claimed the session after this one: the session lives there (or is being taken
 * there), so the client is told to try again (1013), and its next try finds it. Before, 1008 SessionNotFound: a
 * client whose current try met the later claim of a take left over from an earlier try elsewhere (one still waiting
 * on the store when its client was told to try again) gave the session up (found by review).
 */
const CLAIMED_SINCE = 'another edge claimed it since';
/** How far either side of a checkpoint's position a take looks for its event, numbered otherwise on this edge's server (a soak saw 7 apart). */
const RENUMBERING_READ = 64;
/**
 * The longest a take whose replay goes on reading goes on, from its start (each page read gives it the take's bound
 * again): its client has had its 101 and waits for `connected` (`edge-relay sub` waits 30 s, then reconnects).
 */
const REPLAY_MOST_MS = 20_000;

/**
 * Where a checkpoint with nothing unacknowledged is anchored (ReliableSession.nextCheckpoint): the last send event
 * this edge read, by its id, when it is within a take's search of the stream's end here (RENUMBERING_READ); else
 * none (the checkpoint is at the position alone). Before, such a checkpoint was at the last position read, without
 * an id: an edge whose server numbers the stream otherwise (nats-server before 2.10.14) took the session up from
 * another place, and its client lost or had again the events between (a chaos soak on 2.9.10: 8 lost, 16 twice).
 */
export function checkpointAnchor(stream: SessionStream, now = Date.now()): { seq: number; mid: string } | undefined {
  const last = stream.lastSend;
  if (last === undefined || stream.position - last.seq > RENUMBERING_READ || now - last.appliedAt > ANCHOR_FRESH_MS) return undefined;
  return { seq: last.seq, mid: last.mid };
}

/**
 * The oldest send a checkpoint is anchored at: a hub's stream keeps events at least max(120 s, 2 x
 * timeouts.sessionRetainMs), and a session is taken within timeouts.sessionRetainMs of its last write, so its anchor
 * is still there. Anchored at one aged out (a quiet hub, a member change after it), the take would find the stream
 * starting after the checkpoint and refuse the session (1008).
 */
const ANCHOR_FRESH_MS = 50_000;

/** The edge holding a session by its latest claim (and its process, when it says), and that claim's stream sequence. */
export interface Holder {
  origin: string;
  boot?: string;
  seq: number;
  /** When this edge read the claim (performance.now()): noted ones go after twice timeouts.sessionRetainMs. */
  at?: number;
}

/** This edge's claim read back: its sequence, and the claim it displaced (unknown when read before this edge followed). */
export interface ClaimRead {
  seq: number;
  before: Holder | undefined;
}

/**
 * The message a send stored at `seq` in the hub's stream is for `connection` (as it was there: its groups then),
 * as the live flow delivers it; undefined when the send is not for it, or its data is not its type. For a session
 * rebuilt here (a take's replay) and one reading on behind the live flow (session-catch-up.ts).
 */
export function storedSendFor(event: PsSend, body: Buffer, seq: number, filter: ConnectionFilter | undefined, connection: FilterSubject, history: boolean): SharedMessage | undefined {
  if (!addresses(event.target, connection, event.excluded) || (filter && !filter.matches(connection))) return undefined;
  return streamMessageOf(event, body, seq, history);
}

/**
 * A page of the hub's stream (readRange) up to its first hole: sequences missing between two of its messages. The
 * stream's limits can drop events while a page is read (a slow read: a pull given up and read again from where it
 * was, stream-reader.ts `read`), and the page then goes on after them. Whoever reads on reads from the hole next, and
 * asks, as for a page that starts after where it read from, whether the stream starts after the hole (the events
 * are gone: the session cannot go on) or holds messages deleted one by one (gone on past).
 */
export function untilHole(messages: StoredMessage[]): StoredMessage[] {
  for (let i = 1; i < messages.length; i++) if (messages[i].seq !== messages[i - 1].seq + 1) return messages.slice(0, i);
  return messages;
}

/** True when an event for `target` (minus `excluded`) reaches `connection`. */
function addresses(target: Target, connection: FilterSubject, excluded?: string[]): boolean {
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

/** The takes of sessions under way on this edge, one hub's. */
export class SessionTakes {
  /** This edge's own claims, waiting to be read back from the stream: connection id -> resolve(seq). */
  private readonly ownClaims = new Map<string, (claim: ClaimRead) => void>();
  /** The newest claim read per connection id while a take is in progress here. */
  private readonly claimsSeen = new Map<string, { origin: string; seq: number }>();
  /** Replays under way: while any is, the hub keeps the messages its follower applies (recent-stream.ts). */
  private replays = 0;
  /** Set when a reload removed the hub (close): a take under way stops, and ends a session it claimed. */
  private removedByReload = false;
  /** Aborted at close: a take waiting for its claim to be read back stops waiting (the follower has stopped). */
  private readonly closing = new AbortController();

  constructor(
    private readonly hub: ClusterHub,
    private readonly stream: SessionStream,
    private readonly checkpoints: SessionCheckpoints,
    private readonly options: SessionTakeOptions,
  ) {
    // One listener per take waiting for its claim (claim), each removed as it ends: Node's default of 10 warned of a
    // leak (MaxListenersExceededWarning) when an edge's clients recovered here at once, which is not one.
    setMaxListeners(0, this.closing.signal);
  }

  /** Whether a take is replaying the stream now (the follower's latest messages are kept for it). */
  get replaying(): boolean {
    return this.replays > 0;
  }

  /** This edge's claim read back from the stream: the take waiting for it goes on. */
  ownClaimRead(connectionId: string, claim: ClaimRead): void {
    this.ownClaims.get(connectionId)?.(claim);
  }

  /** Another edge's claim read: a take of that session under way here stops at it (replay). */
  otherClaimRead(connectionId: string, origin: string, seq: number): void {
    if (this.claimsSeen.has(connectionId)) this.claimsSeen.set(connectionId, { origin, seq });
  }

  /** The hub's sessions closed (`removed`: by a reload): takes under way stop. */
  close(removed: boolean): void {
    this.removedByReload = removed;
    this.closing.abort();
  }

  /**
   * Rebuilds a session here from its checkpoint and the hub's stream; the
   * connection is in the hub, not yet attached to a socket. Undefined when no
   * such session is kept (or the token does not match); throws
   * SessionUnavailable when JetStream cannot answer now.
   */
  async take(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    if (!CONNECTION_ID.test(connectionId)) return undefined;
    // Ended here, its end not stored yet: ended all the same.
    if (this.checkpoints.ending(connectionId)) return undefined;
    if (!this.stream.started) throw new SessionUnavailable('this edge is not following the hub stream yet');
    // A session that has just opened elsewhere may not have its first checkpoint written yet.
    let found = await this.checkpoints.read(connectionId);
    for (let tries = 0; !found && tries < MISSING_CHECKPOINT_RETRIES; tries++) {
      await new Promise((r) => setTimeout(r, MISSING_CHECKPOINT_WAIT_MS));
      found = await this.checkpoints.read(connectionId);
    }
    if (!opensWith(found, protocol, token)) return undefined;
    // Removed by a reload meanwhile: no claim (the edge holding the session keeps it).
    this.stopIfRemoved();
    const startedAt = Date.now();
    const deadline = startedAt + this.budgetMs;
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
      // Written by an edge that claimed the session after this one and took it while this edge's follower was behind
      // that claim: that edge holds it. Before, the take went on from that checkpoint, ahead of this edge's position,
      // and adopted at once: the session was held on both edges, and this edge numbered again, after its ids, events
      // it counted already.
      if ((checkpoint.claim ?? 0) > claimSeq) {
        this.options.log.info({ event: 'pubsub.session_take_refused', hub: this.hub.name, connectionId, reason: CLAIMED_SINCE });
        throw new SessionUnavailable(CLAIMED_SINCE);
      }
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
      this.checkpoints.heldBy(connection, claimSeq);
      const from = checkpoint.mid === undefined ? checkpoint.position : await this.positionOf(checkpoint.mid, checkpoint.position, deadline);
      const replayed = await this.replay(connection, from, claimSeq, deadline, startedAt + REPLAY_MOST_MS);
      if (typeof replayed === 'object') {
        // A REST close of it, or of its user's, group's or the hub's connections, came after its checkpoint, while no edge held
        // it: it ends here, as it would have where it was held (its checkpoint written ended under this edge's claim;
        // should that write fail, a later take replays the same close). Before, it was resumed, groups and all.
        this.options.log.info({ event: 'pubsub.session_take_refused', hub: this.hub.name, connectionId, reason: 'closed by a REST call after its checkpoint', closeSeq: replayed.seq });
        connection.session!.clear();
        await this.checkpoints.endClaimed(connectionId, claimSeq);
        // Then ended as a connection the close found held (ConnectionLifecycle.end), its end stored above (no
        // checkpoint left to write again): the event handler is told `disconnected` with the close's reason, as the
        // edge where a session ends tells it. Before, it was not: told `connected` by the edge that was killed, it
        // never heard the connection end (found by review).
        connection.session!.checkpoint = undefined;
        this.options.endConnection(connection, 'ClosedByServer', replayed.close.reason);
        throw new SessionClosedByServer(replayed.close.reason);
      }
      if (replayed !== 'caught up') {
        this.options.log.info({ event: 'pubsub.session_take_refused', hub: this.hub.name, connectionId, reason: replayed });
        connection.session!.clear();
        if (replayed === CLAIMED_SINCE) throw new SessionUnavailable(CLAIMED_SINCE);
        return undefined;
      }
      this.options.log.info({
        event: 'pubsub.session_taken',
        hub: this.hub.name,
        connectionId,
        from: checkpoint.owner,
        checkpoint: checkpoint.sequenceId,
        replay: connection.session!.unacknowledged,
        // Set when more was for it than its buffer holds: it reads on from there as its client acknowledges.
        behindAt: connection.session!.behindAt,
      });
      // Written before the client hears `connected`: an edge taking the session from this one
      // next knows by this write that this edge held it (lastWriteOf), and waits for its last.
      const taken = connection.session!.nextCheckpoint(connection.groups, this.stream.position, checkpointAnchor(this.stream)) ?? connection.session!.checkpoint;
      this.stopIfRemoved();
      if (taken) await this.checkpoints.write(connection, taken);
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
        await this.checkpoints.endClaimed(connectionId, claimed.seq);
      }
      throw err;
    } finally {
      this.claimsSeen.delete(connectionId);
    }
  }

  /**
   * True when the connection's reliable session is kept only as its checkpoint (its edge went away, and its client
   * has not recovered it yet): no edge holds it, and any edge may take it. A REST permission change cannot be made
   * to it (what it would change travels in the checkpoint, which the edge that takes the session reads), nor a check
   * answered (a close stored after the checkpoint may have ended it, which only a take's replay finds). Throws
   * StoreError when the store does not answer.
   */
  async keptUnheld(connectionId: string): Promise<boolean> {
    if (!CONNECTION_ID.test(connectionId) || this.checkpoints.ending(connectionId)) return false;
    try {
      const found = await this.checkpoints.read(connectionId);
      return found !== undefined && !found.ended;
    } catch (err) {
      if (!(err instanceof SessionUnavailable)) throw err;
      throw new StoreError(`not read: whether the connection's session is kept could not be told (${err.message})`);
    }
  }

  /** Throws SessionUnavailable once a reload removed the hub: a take under way goes no further (session-recovery.ts says why). */
  private stopIfRemoved(): void {
    if (this.removedByReload) throw new SessionUnavailable('the hub was removed from the configuration');
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
      const checkpoint = await this.checkpoints.read(connectionId);
      // (Or one written by a later claim: take() refuses it.)
      if (!checkpoint || checkpoint.ended || !waitFor || (checkpoint.releasedBy ?? 0) >= claimSeq || (checkpoint.claim ?? 0) > claimSeq) return checkpoint;
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

  /** A take's bound: publishTimeoutMs (its claim stored) + requestTimeoutMs (the holder's last write). */
  private get budgetMs(): number {
    return this.options.publishTimeoutMs + this.options.requestTimeoutMs;
  }

  /**
   * Applies the stream after `from` to the connection alone (its membership
   * changes, and its events numbered in order) until it reaches where this
   * edge's follower is; then, in the same turn, puts the connection into the
   * hub, so the follower's next event reaches it too. What the follower
   * applies meanwhile is kept in memory (recent-stream.ts): once the replay
   * has read the stream up to where the follower was as it began, it ends
   * with those, in one turn. Each page read gives it the take's bound again
   * from then, up to `latest`.
   */
  private async replay(connection: PubSubConnection, from: number, claimSeq: number, deadline: number, latest: number): Promise<'caught up' | string | ClosedAt> {
    if (from < this.stream.position) {
      const first = await this.firstSequence();
      if (first > from + 1) return `the stream no longer holds the events after the checkpoint (it starts at ${first}, the checkpoint is at ${from})`;
    }
    // Before, a replay read the stream until a page ended where the follower was when it came back, which under a
    // steady flow it seldom did (the follower had gone on during the read), and was cut off at the take's deadline
    // however near it was: its pages thrown away, the client's next try had more to read, what was published
    // meanwhile. A chaos soak (150-200 events a second, 24 SDK clients behind haproxy) saw the sessions of an edge
    // shut down (SIGTERM) or killed deferred 1013 for 20-76 s, try after try cut off at 7 s. Past 120 s the released
    // checkpoint expires from the bucket and the next try is refused (as an earlier soak's five sessions were).
    this.stream.keepRecent();
    this.replays++;
    try {
      return await this.replayFrom(connection, from, claimSeq, deadline, latest);
    } finally {
      this.replays--;
    }
  }

  private async replayFrom(connection: PubSubConnection, from: number, claimSeq: number, deadline: number, latest: number): Promise<'caught up' | string | ClosedAt> {
    for (let at = from; ; ) {
      // Within what the follower applied since the replay began (and kept): the rest at once, in this turn.
      const recent = at < this.stream.position ? this.stream.recentAfter(at) : undefined;
      if (recent) {
        for (const m of recent) {
          const outcome = this.replayOne(connection, m, claimSeq);
          if (outcome) return outcome;
          at = m.seq;
        }
      }
      const to = this.stream.position;
      if (at >= to) {
        // A later claim read meanwhile (also one before where this replay began) owns the session.
        const newer = this.claimsSeen.get(connection.id);
        if (newer && newer.origin !== this.options.nodeId && newer.seq > claimSeq) return CLAIMED_SINCE;
        this.hub.local.adopt(connection);
        // Behind the live flow from here: what the follower applies next is kept for its catch-up.
        if (connection.session!.behindAt !== undefined) this.stream.keepRecent();
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
      // A page that starts after where the replay is: the stream dropped events since the last page (a slow replay
      // of a stream at its limits), or messages were deleted one by one. Only a stream that starts after them has
      // lost them, as at the start. Before, the replay went on after them and numbered what came next in their place
      // (found by review). A hole further in is read from next (untilHole).
      if (messages[0].seq > at + 1) {
        const first = await this.firstSequence();
        if (first > at + 1) return `the stream no longer holds the events after the checkpoint (it starts at ${first}, the replay is at ${at})`;
      }
      for (const m of untilHole(messages)) {
        const outcome = this.replayOne(connection, m, claimSeq);
        if (outcome) return outcome;
        at = m.seq;
      }
      // Read on: the take's bound again from here (a page read and applied), within `latest`.
      deadline = Math.max(deadline, Math.min(Date.now() + this.budgetMs, latest));
      const newer = this.claimsSeen.get(connection.id);
      if (newer && newer.origin !== this.options.nodeId && newer.seq > claimSeq) return CLAIMED_SINCE;
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

  /** One stream message for the connection being rebuilt; a reason to stop (or the close that ends it), or undefined. */
  private replayOne(connection: PubSubConnection, m: StoredMessage, claimSeq: number): string | ClosedAt | undefined {
    const decoded = decodeEdgeMessage(m.data, 'ps.send', 'ps.member', 'ps.claim', 'ps.close');
    const event = decoded?.message;
    if (!event || asciiLowerCase(event.hub) !== this.hub.key) return undefined;
    const session = connection.session!;
    const filter = event.op === 'ps.send' || event.op === 'ps.member' ? filterFromBus(event.filter) : undefined;
    // Skipped here as the follower skipped it on every edge.
    if (filter === null) return undefined;
    switch (event.op) {
      case 'ps.send': {
        // Its buffer filled during this replay: the session is behind, and reads its later events from the stream
        // as its client acknowledges (session-catch-up.ts); the replay goes on for group changes and claims.
        // Before, the take was refused and the session lost (its client started afresh without the rest).
        if (session.behindAt !== undefined) return undefined;
        const message = storedSendFor(event, decoded!.body, m.seq, filter, connection, this.options.history);
        // One past its time to live is numbered all the same (the edge that held the session did, and the
        // client's ids must go on matching theirs), and never sent (PubSubConnection.flush).
        if (message && session.push(message) === undefined) session.behindAt = m.seq - 1;
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
          // As the live edges apply it (local-operations.ts, applyGroups).
          if (joined && !connection.mayJoin(group)) break;
          if (joined) connection.groups.add(group);
          else connection.groups.delete(group);
          if (!session.noteMembership(m.seq, group, joined)) return 'the session buffer is full';
        }
        return undefined;
      }
      case 'ps.claim':
        if (event.connectionId === connection.id && event.origin !== this.options.nodeId && m.seq > claimSeq) return CLAIMED_SINCE;
        return undefined;
      case 'ps.close':
        // A REST close (StreamEvents.storeClose) of it (no edge held it then), its user's, a group it was in there, or the hub's connections,
        // and it not excluded: every edge ended the connections it names as it read it; this one ends too.
        return addresses(event.target, connection, event.excluded) ? { close: event, seq: m.seq } : undefined;
    }
  }
}
