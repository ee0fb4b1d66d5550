// Reliable sessions of a durable hub that fell behind the live flow
// (docs/durability.md, "Reliable sessions"). A session whose buffer is full
// when an event for it comes is not closed: it stops taking live events
// (PubSubConnection.deliver notes where, `behindAt`), and as its client's
// acknowledgements free half its buffer it reads the hub's stream on from
// there (from the latest messages the edge keeps while a session is behind,
// recent-stream.ts, when it is within them; else through JetStream, a few
// sessions of a hub at a time): each event that was for the connection at its
// place in the stream
// (its groups then, from the group changes the session keeps since its
// checkpoint) is numbered as the live flow would have numbered it, until the
// buffer is full again or it reaches this edge's follower, where, in the same
// turn, it takes live events again. Its checkpoint meanwhile stands at what it
// numbered (ReliableSession.nextCheckpoint), so an edge taking the session
// over reads on from there too. Only when neither holds the events it has
// still to read (the hub's limits dropped them), or the stream was made again,
// does it end, 1008 StreamGap, as every connection of an edge that missed them
// does.
import { decodeEdgeMessage } from '../bus/messages.ts';
import type { StoredMessage } from '../bus/stream-reader.ts';
import type { Logger } from '../telemetry/logger.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { filterFromBus } from './connection-filter.ts';
import type { PubSubErrorCode } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { storedSendFor, untilHole, type SessionStream } from './session-take.ts';

/** What catching up needs of the hub's event path (stream-events.ts): its reads, and the recent messages it keeps. */
export interface CatchUpStream extends SessionStream {
  readonly keepingRecent: boolean;
  forgetRecent(): void;
}

/** What catching up needs besides the hub and its stream (part of StreamSessionsOptions). */
export interface SessionCatchUpOptions {
  log: Logger;
  requestTimeoutMs: number;
  /** The hub keeps history: group messages carry their sequence. */
  history: boolean;
  endConnection(connection: PubSubConnection, code: PubSubErrorCode): void;
}

/** After a read of the stream failed (JetStream away), a session behind tries again this much later. */
const RETRY_MS = 1000;
/**
 * Sessions of one hub reading the stream at once; the others wait their turn. Each read makes a consumer on the
 * stream's leader: a stall soak's 100 sessions behind at once made ~400 a second, NATS's CPU went from 10% to 50%,
 * and reads timed out.
 */
const READS_AT_ONCE = 4;

/** The sessions of one durable hub reading on from its stream, one read at a time each. */
export class SessionCatchUps {
  /** Sessions reading now; `askedAgain`: room was made meanwhile (an acknowledgement), looked at once the read ends. */
  private readonly reading = new Map<PubSubConnection, { askedAgain: boolean }>();
  private readonly retries = new Set<NodeJS.Timeout>();
  private closed = false;
  private readsUnderWay = 0;
  private readonly waitingToRead: (() => void)[] = [];

  constructor(
    private readonly hub: ClusterHub,
    private readonly stream: CatchUpStream,
    private readonly options: SessionCatchUpOptions,
  ) {}

  /** Reads on for a session behind the live flow once its acknowledgements left room; nothing otherwise. */
  resume(connection: PubSubConnection): void {
    const session = connection.session;
    if (this.closed || !session || session.behindAt === undefined || !session.roomToCatchUp || !this.holds(connection)) return;
    const underWay = this.reading.get(connection);
    if (underWay) {
      underWay.askedAgain = true;
      return;
    }
    const read = { askedAgain: false };
    this.reading.set(connection, read);
    void this.readOn(connection).then(
      (retry) => {
        this.reading.delete(connection);
        if (retry) this.retryLater(connection);
        // Room made while it read would otherwise wait for the next acknowledgement, which may never come (held
        // events let go for their time to live leave nothing to acknowledge). Only then: a read that ended with room
        // left (a message too large for what is free of sessionBufferBytes) is not read again at once, and again.
        else if (read.askedAgain) this.resume(connection);
      },
      (err: unknown) => {
        this.reading.delete(connection);
        this.options.log.error({ event: 'pubsub.session_catch_up_failed', hub: this.hub.name, connectionId: connection.id, err: String(err) });
        this.retryLater(connection);
      },
    );
  }

  /**
   * The follower reads the stream again from `seq`: it was made again (its numbering starts over) or rewritten (it
   * lost events it had stored). Every session behind the live flow ends, 1008 StreamGap: the events it had still to
   * read, which the live flow gave the others, are gone, and the positions it would read on from name others. Before,
   * it read on in the new stream from its old position (or, the new one shorter, went live at once), its ids
   * without a hole for what it never had.
   */
  streamWentBack(seq: number): void {
    for (const connection of [...this.hub.local.connections.values()]) {
      const behindAt = connection.session?.behindAt;
      if (behindAt === undefined || connection.ended) continue;
      this.endAtGap(connection, behindAt, seq);
    }
  }

  /** A session behind whose next events are gone ends, 1008 StreamGap; `streamFrom`: where the stream starts over. */
  private endAtGap(connection: PubSubConnection, at: number, streamFrom?: number): void {
    this.options.log.warn({ event: 'pubsub.session_catch_up_gap', hub: this.hub.name, connectionId: connection.id, at, streamFrom });
    if (this.holds(connection)) this.options.endConnection(connection, 'StreamGap');
  }

  /**
   * The hub keeps its latest messages while some session of it is behind (recent-stream.ts): once none is (caught
   * up, ended, let go), it keeps none. Called on the sessions' tick.
   */
  forgetRecentUnlessBehind(): void {
    if (!this.stream.keepingRecent) return;
    for (const connection of this.hub.local.connections.values()) if (connection.session?.behindAt !== undefined && !connection.ended) return;
    this.stream.forgetRecent();
  }

  close(): void {
    this.closed = true;
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
    // Reads waiting their turn go on, and stop: their connections are no longer held.
    for (const next of this.waitingToRead.splice(0)) next();
  }

  /** The connection is still this edge's (not ended, not let go to another edge). */
  private holds(connection: PubSubConnection): boolean {
    return !connection.ended && this.hub.local.connections.get(connection.id) === connection;
  }

  private retryLater(connection: PubSubConnection): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      this.resume(connection);
    }, RETRY_MS);
    timer.unref();
    this.retries.add(timer);
  }

  /**
   * Reads pages of the stream from where the session is behind, numbering its events, until its buffer is full
   * again (its acknowledgements resume it) or it reaches this edge's follower (it takes live events again). True
   * when the stream could not be read now: to try again later.
   */
  private async readOn(connection: PubSubConnection): Promise<boolean> {
    const session = connection.session!;
    for (;;) {
      const at = session.behindAt;
      if (at === undefined || this.closed || !this.holds(connection)) return false;
      const to = this.stream.position;
      if (at >= to) {
        // Caught up, in the same turn as the check: the follower's next event reaches the session live.
        session.behindAt = undefined;
        this.options.log.info({ event: 'pubsub.session_caught_up', hub: this.hub.name, connectionId: connection.id, at, lastSequenceId: session.lastSequenceId });
        return false;
      }
      // Within what the hub keeps of its latest messages: the rest at once, and live again in this turn when it fits.
      const recent = this.stream.recentAfter(at);
      // (Empty only if a message applied was not kept, which no path does: the stream is read then, not this again.)
      if (recent && recent.length > 0) {
        const full = this.take(connection, at, recent);
        this.hub.flushSession(connection);
        if (full) return false;
        continue;
      }
      let messages: StoredMessage[];
      await this.readTurn();
      try {
        if (!this.holds(connection) || session.behindAt !== at) return false;
        messages = await this.stream.readRange(at, this.stream.position, this.options.requestTimeoutMs);
      } catch (err) {
        this.options.log.warn({ event: 'pubsub.session_catch_up_delayed', hub: this.hub.name, connectionId: connection.id, at, err: (err as Error).message });
        return true;
      } finally {
        this.readDone();
      }
      if (!this.holds(connection) || session.behindAt !== at) return false;
      if (messages.length === 0 || messages[0].seq > at + 1) {
        const gone = await this.lostAfter(at);
        if (gone === undefined) return true;
        if (gone) {
          this.endAtGap(connection, at);
          return false;
        }
        // A read of a stream with a hole in it (messages deleted one by one) goes on after the hole.
        if (messages.length === 0) return true;
      }
      // Up to a hole further in (the stream dropped events while the page was read): the next read starts there,
      // and asks as above. Before, the events after it were numbered in the place of those dropped (found by review).
      const full = this.take(connection, at, untilHole(messages));
      this.hub.flushSession(connection);
      if (full) return false;
    }
  }

  /** Waits until fewer than READS_AT_ONCE of this hub's sessions read the stream. */
  private readTurn(): Promise<void> {
    if (this.readsUnderWay < READS_AT_ONCE) {
      this.readsUnderWay++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waitingToRead.push(resolve));
  }

  /** A read ended: the next session waiting reads (its turn handed on, so the count stays). */
  private readDone(): void {
    const next = this.waitingToRead.shift();
    if (next) next();
    else this.readsUnderWay--;
  }

  /** Whether the stream no longer holds the events after `at` (it starts after them); undefined when it cannot say. */
  private async lostAfter(at: number): Promise<boolean | undefined> {
    try {
      return (await this.stream.firstSequence()) > at + 1;
    } catch {
      return undefined;
    }
  }

  /**
   * Numbers the events of `messages` (the stream after `at`, in order) that were for the connection where the
   * stream has them, up to the first that does not fit its buffer; true when one did not. `behindAt` follows.
   */
  private take(connection: PubSubConnection, at: number, messages: StoredMessage[]): boolean {
    const session = connection.session!;
    // The connection as it was at each message: its groups at `at`, then the changes after it as the stream passes them.
    const groups = new Set(session.groupsAt(connection.groups, at));
    const then = { id: connection.id, userId: connection.userId, groups };
    const changes = session.membershipChangesAfter(at);
    let next = 0;
    for (const m of messages) {
      for (; next < changes.length && changes[next].position <= m.seq; next++) {
        const change = changes[next];
        if (change.joined) groups.add(change.group);
        else groups.delete(change.group);
      }
      const decoded = decodeEdgeMessage(m.data, 'ps.send');
      const event = decoded?.message;
      const filter = event && filterFromBus(event.filter);
      // Skipped as the follower skipped it on every edge: another hub's, unreadable, a filter that does not parse.
      const message = event && filter !== null && asciiLowerCase(event.hub) === this.hub.key ? storedSendFor(event, decoded!.body, m.seq, filter, then, this.options.history) : undefined;
      if (message) {
        // One past its time to live is numbered all the same, as the live flow does, and never sent.
        if (session.push(message) === undefined) {
          session.behindAt = m.seq - 1;
          return true;
        }
      }
      session.behindAt = m.seq;
    }
    return false;
  }
}
