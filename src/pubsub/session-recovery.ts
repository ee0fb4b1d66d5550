// A reliable client reconnecting with awps_connection_id and
// awps_reconnection_token (docs/protocols/web-pubsub.md, "Recovery"): the
// session is re-attached to the new socket, whether this edge holds it or
// another edge does (session-handover.ts takes it over). A session that cannot
// be recovered is refused after the upgrade completes, with a `disconnected`
// message and close 1008, since an HTTP error would make the client keep
// retrying; during shutdown the refusal is 1012, so the client tries again elsewhere.
import type { Socket } from 'node:net';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { MessageSocket, type MessageSocketEvents, type MessageSocketOptions } from '../websocket/message-socket.ts';
import { PUBSUB_ERRORS, SessionClosedByServer, SessionUnavailable } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { closeClientSocket, controlFramesOf, wireOf, type PubSubConnection } from './pubsub-connection.ts';
import { takeNextEvents } from './client-protocol.ts';
import { BUSY_RETRY_MS } from './session-handover.ts';
import { MAX_RECONNECTION_TOKEN } from './reliable-session.ts';

export type ClientSocket = MessageSocket<PubSubConnection>;

/** For a socket that is only being closed. */
const IGNORE_EVENTS: MessageSocketEvents<null> = { onMessage() {}, onClosed() {}, onDrain() {} };

export interface RecoveryRequest {
  hub: ClusterHub;
  connectionId: string;
  token: string;
  protocol: string;
  socket: Socket;
  head: Buffer;
  /** Wraps the socket for the recovered connection (client-endpoint.ts). */
  open(socket: Socket, connection: PubSubConnection, head: Buffer): ClientSocket;
}

/**
 * How long @azure/web-pubsub-client tries to recover a session before it
 * starts a new connection (and rejoins its groups). A recovery it makes that
 * opens and is then closed 1013 counts as a success and starts its window
 * again, so the relay keeps the count: see `deferredTooLong`.
 */
export const RECOVERY_WINDOW_MS = 30_000;
/** A deferral this long after the last one of the same session begins another outage's window (at least). */
const NEW_OUTAGE_AFTER_MS = 10_000;
/** Connection ids whose recoveries are being deferred, remembered at most (the oldest go). */
const MAX_DEFERRED = 10_000;

export class SessionRecovery {
  /** Sessions this edge is taking from elsewhere now, by hub and connection id. */
  private readonly taking = new Map<string, Promise<unknown>>();
  /** Recoveries answered with a refusal (by their sockets): a later answer is not written. */
  private readonly answered = new WeakSet<Socket>();
  /** When this edge first and last deferred a recovery of a session (by hub and connection id), while it goes on deferring. */
  private readonly deferredSince = new Map<string, { since: number; last: number }>();

  constructor(
    private readonly log: Logger,
    private readonly metrics: RelayMetrics,
    private readonly socketOptions: MessageSocketOptions,
    /** How long to wait for a session still moving between edges. */
    private readonly moveWaitMs: number,
    /**
     * How long a recovery goes unanswered at most (`connected`, or a close): past it, the client is told to try again
     * (1013) and the take goes on alone (answerBound in pubsub-service.ts).
     */
    private readonly answerWithinMs: number,
    private readonly shuttingDown: () => boolean,
    /** How long recoveries of one session are deferred (1013) before it is given up (1008): min(RECOVERY_WINDOW_MS, timeouts.sessionRetainMs). */
    private readonly giveUpAfterMs: () => number,
  ) {}

  /** A reload removed the hub (the drain leaves the bus too, but lets a session go for another edge instead). */
  private removedByReload(hub: ClusterHub): boolean {
    return hub.removed && !this.shuttingDown();
  }

  /**
   * Re-attaches a retained reliable session, held here or taken from the edge that holds it; the upgrade is answered
   * already. The client hears within answerWithinMs: its socket, open, is not read until then, and
   * @azure/web-pubsub-client, whose socket opened, waits for a message for its keep-alive timeout (120 s) before it
   * tries again. Before, a take whose claim went out unanswered (a NATS node frozen: tried again with the same id
   * for bus.jetstream.unsureRetryMs, 60 s) left the client so; a chaos soak saw five sessions silent for ~125 s.
   */
  async recover(r: RecoveryRequest): Promise<void> {
    const key = `${r.hub.key}\n${r.connectionId}`;
    const began = Date.now();
    const timer = setTimeout(() => this.defer(r, key, began, `no answer within ${this.answerWithinMs} ms`), this.answerWithinMs);
    try {
      await this.recoverNow(r, key, began);
    } finally {
      clearTimeout(timer);
    }
  }

  private async recoverNow(r: RecoveryRequest, key: string, began: number): Promise<void> {
    const { hub, connectionId, token, protocol } = r;
    // No edge issued it: refused here, not asked of the edge holding the session (which drops a hand-over request
    // carrying it as invalid, so the client was deferred 1013 after bus.requestTimeoutMs, and again when it retried).
    if (token.length > MAX_RECONNECTION_TOKEN) return this.refuse(r, 'SessionNotFound');
    // A session still moving (an earlier reconnect is being handed over) is waited for, briefly.
    const deadline = Date.now() + this.moveWaitMs;
    while (hub.local.connections.get(connectionId)?.handover && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    }
    if (this.shuttingDown()) {
      this.log.info({ event: 'pubsub.recovery_deferred', hub: hub.name, connectionId, reason: 'shutting down' });
      return this.refuse(r, 'ShuttingDown');
    }
    // (A drain leaves the bus too: its clients are told to go elsewhere, above.)
    if (hub.removed) return this.hubRemoved(r);
    // Another recovery of the same connection is taking it here already (a
    // client that reconnected twice quickly): wait for it, then recover from
    // what it left. Both taking it made two copies, both attached, one
    // orphaned in the groups. And wait for one begun while this one waited: several recoveries waiting for
    // one take woke together, and each began a take of its own (found by review: the SDK's tries after each 1013
    // at answerWithinMs pile up as such waiters behind a take that waits on the store).
    for (let earlier = this.taking.get(key); earlier; earlier = this.taking.get(key)) await earlier;
    // Removed while the earlier recovery ran: the client hears so (before: the session, ended by the reload, was
    // SessionNotFound here, or the take went on in a hub that had left the bus).
    if (this.removedByReload(hub)) return this.hubRemoved(r);
    let connection = hub.local.connections.get(connectionId);
    const heldHere = connection !== undefined;
    const deferred = (reason: string) => this.defer(r, key, began, reason);
    // Held here, still moving to or from another edge after the wait above: tried again, not refused (1008 made
    // the client give up a session that lived on).
    if (connection?.handover && connection.session?.tokenMatches(token)) return deferred('the session is still moving between edges');
    // Told to try again (answerWithinMs) or gone while it waited: no take is begun for a client that is not here. Before
    // (found by review), one was: its claim, later than that of the client's next try on another edge, took the session
    // from there (that edge's take refused 1008, the session lost, or its client closed 1001 SessionMoved).
    if (!heldHere && (r.socket.destroyed || this.answered.has(r.socket))) {
      this.log.info({ event: 'pubsub.recovery_abandoned', hub: hub.name, connectionId, reason: r.socket.destroyed ? 'client gone before the take began' : 'told to try again before the take began' });
      return;
    }
    if (!heldHere) {
      const take = hub.takeSession(connectionId, token, protocol);
      const settled = take.then(
        () => undefined,
        () => undefined,
      );
      this.taking.set(key, settled);
      void settled.then(() => {
        if (this.taking.get(key) === settled) this.taking.delete(key);
      });
      try {
        connection = await take;
      } catch (err) {
        // A REST close of it, or of its user's, group's or the hub's connections, reached the session while no edge held it: the
        // client is told as a client the close found connected was (1008 ClosedByServer, the close's reason).
        if (err instanceof SessionClosedByServer) {
          this.log.info({ event: 'pubsub.recovery_refused', hub: hub.name, connectionId, reason: 'closed by the server' });
          return this.refuse(r, 'ClosedByServer', err.reason);
        }
        if (!(err instanceof SessionUnavailable)) throw err;
        // The take stopped because a reload removed the hub (a durable take ends a session it claimed): the client is
        // told as the hub's clients were, not asked to try again (before: 1013, after waiting for a claim the stopped
        // stream never read back, and the session stayed open for a hub of the same name added again).
        if (this.removedByReload(hub)) return this.hubRemoved(r);
        return deferred(err.message);
      }
    }
    this.deferredSince.delete(key);
    // A reload removed the hub while the session was being taken: it is not attached to a hub that left the bus.
    // (The drain leaves the bus too: that is for the shutdown check below, which lets the session go for another edge.)
    if (this.removedByReload(hub)) {
      if (connection && !heldHere) {
        hub.local.remove(connection);
        connection.session?.clear();
      }
      return this.hubRemoved(r);
    }
    const session = connection?.session;
    if (!connection || !session || connection.ended || connection.handover || connection.protocol !== protocol || !session.tokenMatches(token)) {
      // Which check refused it, and for which connection: a soak saw five sessions refused after an edge's shutdown
      // with nothing in the log to tell why (before, the line named the hub alone).
      const reason = !connection
        ? 'no session to take: none held, ended, or its checkpoint missing or not for this token and subprotocol'
        : !session
          ? 'not a reliable session'
          : connection.ended
            ? 'the session ended'
            : connection.handover
              ? 'the session is still moving'
              : connection.protocol !== protocol
                ? 'another subprotocol'
                : 'another reconnection token';
      this.log.info({ event: 'pubsub.recovery_refused', hub: hub.name, connectionId, reason });
      return this.refuse(r, 'SessionNotFound');
    }
    // Shutdown began while the session was being taken: it is let go again
    // (a durable hub writes its checkpoint; on core NATS this edge still hands
    // it over while it drains) and the client reconnects elsewhere. Attached,
    // it would be ended with the edge, and a durable hub's checkpoint with it.
    if (!heldHere && this.shuttingDown()) {
      this.log.info({ event: 'pubsub.recovery_deferred', hub: hub.name, connectionId, reason: 'shutting down' });
      if (!connection.socket) connection.detach(Date.now());
      void hub.durable?.releaseAll();
      return this.refuse(r, 'ShuttingDown');
    }
    // The client went away while the session was being taken, or was told to try again (answerWithinMs): its
    // socket's 'close' has passed or is coming, and a socket wrapped now would never report one, so the session
    // would stay attached to it and never expire. A session taken from elsewhere starts its retention instead (the
    // client's next try finds it here); one held here keeps its socket.
    if (r.socket.destroyed || this.answered.has(r.socket)) {
      if (!connection.socket) connection.detach(Date.now());
      this.log.info({ event: 'pubsub.recovery_abandoned', hub: hub.name, connectionId, reason: r.socket.destroyed ? 'client gone' : 'told to try again before the take ended' });
      return;
    }
    const previous = connection.socket;
    const client = r.open(r.socket, connection, r.head);
    connection.attach(client);
    // Frames of the session still waiting their turn (events behind one at the handler, requests): the new socket is
    // not read while they weigh too much, as the old one was not. Before, each reconnect read another chunk of events
    // into the queue (a client reconnecting while its handler hung grew it by thousands).
    if (connection.waitingFull) client.hold();
    // The old socket, still open (a client that reconnected without closing it, or whose close has not come yet), is
    // told the session moved and closed, the handshake bounded; its close changes nothing (the connection is on the
    // new one). Before, it was dropped without a close frame: 1006, which a client still on it takes for a drop, and
    // recovers from, taking the session back.
    if (previous) closeClientSocket(previous, connection.wire, 'SessionMoved');
    this.metrics.sessionsRecovered.inc({ from: heldHere ? 'this_node' : 'other_node' });
    if (this.metrics.trace.on) this.metrics.trace.emit('pubsub.recovered', { hub: hub.name, connectionId, userId: connection.userId, detail: heldHere ? 'held here' : 'from another edge' });
    connection.sendControl(connection.frames.connected(connection.id, connection.userId, session.reconnectionToken));
    hub.flushSession(connection);
    this.log.info({
      event: 'pubsub.recovered',
      hub: hub.name,
      connectionId: connection.id,
      from: heldHere ? 'this node' : 'another node',
      replay: session.unacknowledged,
    });
    client.start();
    // Events and invocations held back while the old socket had limits.outboundBufferBytes of answers queued start
    // now: that socket's drain, which started them, will not come, nor one from this socket unless it fills. Before,
    // they waited for good, and every later event of the session behind them (its acks never came).
    if (connection.eventsWaiting?.length) takeNextEvents(connection);
  }

  /**
   * JetStream or the holding edge cannot answer now, or the session is still moving: a close other than 1008 makes
   * the client try again, for as long as the client itself would try (before, it tried for as long as the outage
   * lasted). `began`: when this try began (Date.now()).
   */
  private defer(r: RecoveryRequest, key: string, began: number, reason: string): void {
    // Answered at answerWithinMs already: why its take ended is still said (found by review: it was not).
    if (this.answered.has(r.socket)) {
      this.log.info({ event: 'pubsub.recovery_abandoned', hub: r.hub.name, connectionId: r.connectionId, reason: `the take ended after its client was told to try again: ${reason}` });
      return;
    }
    if (this.deferredTooLong(key, began)) {
      this.log.warn({ event: 'pubsub.recovery_given_up', hub: r.hub.name, connectionId: r.connectionId, reason, ms: this.giveUpAfterMs() });
      return this.refuse(r, 'SessionNotFound');
    }
    this.log.warn({ event: 'pubsub.recovery_deferred', hub: r.hub.name, connectionId: r.connectionId, reason });
    this.refuse(r, 'SessionUnavailable');
  }

  /**
   * Notes one more deferral of `key`'s recovery, by a try that began at `began`; true once its deferrals have
   * lasted giveUpAfterMs (the entry then goes: a later attempt starts afresh).
   */
  private deferredTooLong(key: string, began: number): boolean {
    const now = Date.now();
    const window = this.giveUpAfterMs();
    const newOutageAfter = Math.max(window / 3, NEW_OUTAGE_AFTER_MS);
    // Entries go in order of their first deferral: those far past the window are of clients that gave up. Not before
    // a next deferral could count (a try begun up to newOutageAfter after the last one, answered up to answerWithinMs
    // later): before (found by review), with timeouts.sessionRetainMs under half of answerWithinMs, each deferral at
    // that bound found the entry gone, and they never added up to the give-up.
    const keepFor = Math.max(2 * window, window + newOutageAfter + this.answerWithinMs);
    for (const [old, { since }] of this.deferredSince) {
      if (now - since <= keepFor && this.deferredSince.size <= MAX_DEFERRED) break;
      this.deferredSince.delete(old);
    }
    const deferred = this.deferredSince.get(key);
    // A client tries again within a few seconds while it is deferred (the SDK each second, each try waiting up to
    // bus.requestTimeoutMs): a deferral long after the last one is another outage (the session was recovered
    // elsewhere meanwhile), and starts a window of its own. Before, an outage that began within 30-60 s of an
    // earlier deferral here was refused 1008 at once, the session alive. Long after: the try began long after, not
    // its answer came (a try is answered up to answerWithinMs after it began, 11 s by default: measured from the
    // answers, found by review, each try the SDK made at once after a 1013 at that bound was another outage, and
    // such deferrals never added up to the give-up).
    if (deferred === undefined || began - deferred.last > newOutageAfter) {
      this.deferredSince.delete(key);
      this.deferredSince.set(key, { since: now, last: now });
      return false;
    }
    deferred.last = now;
    if (now - deferred.since < window) return false;
    this.deferredSince.delete(key);
    return true;
  }

  /** The hub is gone from this edge's configuration: the client is told, as clients of the hub were (1008 ClosedByServer). */
  private hubRemoved(r: RecoveryRequest): void {
    const why = 'the hub was removed from the configuration';
    this.log.info({ event: 'pubsub.recovery_refused', hub: r.hub.name, connectionId: r.connectionId, reason: why });
    this.refuse(r, 'ClosedByServer', why);
  }

  /** Completes a recovery's upgrade only to say why not and close with the code's close code (once: the first answer stands). */
  private refuse(r: RecoveryRequest, code: 'SessionNotFound' | 'ShuttingDown' | 'SessionUnavailable' | 'ClosedByServer', message: string = PUBSUB_ERRORS[code].message): void {
    if (this.answered.has(r.socket)) return;
    this.answered.add(r.socket);
    this.metrics.recoveriesRefused.inc({ reason: code });
    const refused = new MessageSocket(r.socket, null, IGNORE_EVENTS, this.socketOptions);
    // In the subprotocol the client asked for (a protobuf client cannot read a JSON message).
    refused.writeFrame(controlFramesOf(wireOf(r.protocol)).disconnected(message));
    refused.close(PUBSUB_ERRORS[code].closeCode, code);
  }
}
