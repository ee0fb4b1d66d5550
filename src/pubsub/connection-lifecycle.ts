// How pub/sub connections end on this node, and the one shared keep-alive
// timer (docs/protocols/web-pubsub.md, "Keep-alive" and "Reliable sessions"):
// a connection ended for good closes its socket with its code's close code and
// leaves its hub; a dropped reliable session is kept (detached) until it is
// recovered, taken by another edge or past timeouts.sessionRetainMs; silent
// sockets are pinged and dropped past timeouts.idleMs.
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import type { PubSubErrorCode } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { CLOSE_NORMAL } from '../websocket/frames.ts';
import { SweepClock } from '../websocket/sweep-clock.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export class ConnectionLifecycle {
  private readonly keepAliveTimer: NodeJS.Timeout;
  private readonly expiryTimer: NodeJS.Timeout;
  private readonly sweepClock: SweepClock;
  /** Set at shutdown: dropped sessions are kept only for another edge to take. */
  shuttingDown = false;

  constructor(
    /** Every hub on this node by lower-case name (filled by the service). */
    private readonly hubs: ReadonlyMap<string, ClusterHub>,
    private readonly config: RelayConfig,
    private readonly log: Logger,
    private readonly metrics: RelayMetrics,
    /** Another edge can take a dropped session (the NATS bus). */
    private readonly othersCanTake: boolean,
    /** A connection ended for good here (its `disconnected` event). */
    private readonly ended: (connection: PubSubConnection, reason: string) => void = () => {},
  ) {
    this.sweepClock = new SweepClock(config.timeouts.keepAliveIntervalMs);
    this.keepAliveTimer = setInterval(() => this.keepAlive(), config.timeouts.keepAliveIntervalMs);
    this.keepAliveTimer.unref();
    // Dropped sessions expire within a quarter of their retention (the keep-alive's 30 s would let one live 90 s instead of 60).
    const { keepAliveIntervalMs, sessionRetainMs } = config.timeouts;
    this.expiryTimer = setInterval(() => this.expireSessions(), Math.min(keepAliveIntervalMs, Math.max(250, Math.floor(sessionRetainMs / 4))));
    this.expiryTimer.unref();
  }

  /** Ends a connection for good: closes its socket with the code's close code and drops its session. */
  end(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void {
    // Also once its client left: a sendToGroup-mode client's frames still waiting are not published after this.
    connection.endedByRelay = true;
    if (connection.ended) return;
    if (code === 'SlowConsumer' || code === 'SessionBufferFull') {
      this.metrics.slowConsumerCloses.inc({ code });
      const hub = this.hubs.get(asciiLowerCase(connection.hub));
      if (hub) hub.traffic.slowConsumerCloses++;
    }
    connection.closeSocket(code, reason);
    this.forget(connection, reason ?? code);
    this.log.info({ event: 'pubsub.ended', hub: connection.hub, connectionId: connection.id, code });
  }

  /**
   * The connection's socket went away: a reliable session is kept for its client, unless the client closed with
   * 1000 (it is done: Azure.Messaging.WebPubSub.Client's StopAsync; Microsoft's emulator ends the session then, and
   * keeps it for any other close); anything else ends.
   */
  socketClosed(connection: PubSubConnection, code: number): void {
    connection.detach(Date.now());
    if (connection.ended) return;
    // During shutdown, a dropped reliable session waits only for another edge to take it. Before, one closed 1000
    // was kept too: its `disconnected` event waited timeouts.sessionRetainMs, its groups buffering for nobody.
    if (connection.session && code !== CLOSE_NORMAL && (!this.shuttingDown || this.othersCanTake)) {
      this.log.info({ event: 'pubsub.detached', hub: connection.hub, connectionId: connection.id, code });
      if (this.metrics.trace.on) this.metrics.trace.emit('pubsub.detached', { hub: connection.hub, connectionId: connection.id, userId: connection.userId, code: String(code) });
      return;
    }
    this.forget(connection, code === 1000 || code === 1001 ? 'Connection closed by the client' : `Connection closed (${code})`);
    this.log.info({ event: 'pubsub.disconnected', hub: connection.hub, connectionId: connection.id, code });
  }

  /** Takes a connection out of its hub; its session, if any, is someone else's now. */
  release(connection: PubSubConnection): void {
    connection.markEnded();
    this.hubs.get(asciiLowerCase(connection.hub))?.local.remove(connection);
  }

  /** The connection ends for good here: out of its hub, its session (and checkpoint) gone, its `disconnected` event sent. */
  private forget(connection: PubSubConnection, reason: string): void {
    if (connection.ended) return;
    // A durable hub forgets the session's checkpoint too: it cannot be recovered anywhere.
    if (connection.session) this.hubs.get(asciiLowerCase(connection.hub))?.durable?.sessionEnded(connection);
    this.release(connection);
    connection.session?.clear();
    // One never told `connected` (its edge still waiting for NATS) had no `connected` event, so no `disconnected` one,
    // unless its connect event said yes (Azure: `disconnected` always follows a 2xx `connect`).
    if (connection.awaitingConnected && !connection.connectEventSaidYes) return;
    if (this.metrics.trace.on) this.metrics.trace.emit('pubsub.disconnected', { hub: connection.hub, connectionId: connection.id, userId: connection.userId, code: reason });
    this.ended(connection, reason);
  }

  private keepAlive(): void {
    const now = Date.now();
    const { keepAliveIntervalMs, idleMs } = this.config.timeouts;
    const judging = this.sweepClock.onTime(now);
    for (const hub of this.hubs.values()) {
      for (const connection of hub.local.connections.values()) {
        const socket = connection.socket;
        // Not read while held for work under way (at the event handler or on the bus, each bounded by its timeout).
        // Held with none under way, the client is the one waited for (it reads none of its answers): judged as any
        // other, it is dropped past idleMs (before, it was never judged, and kept its queued answers and waiting
        // frames for good; found by review).
        if (!socket || (socket.isHeld && connection.workUnderWay)) continue;
        const silent = now - socket.lastReceivedAt;
        if (judging && silent > idleMs) socket.destroy();
        else if (silent >= keepAliveIntervalMs) socket.ping();
      }
    }
  }

  private expireSessions(): void {
    const now = Date.now();
    const { sessionRetainMs } = this.config.timeouts;
    for (const hub of this.hubs.values()) {
      for (const connection of hub.local.connections.values()) {
        if (connection.socket || connection.handover || connection.session?.detachedAt === undefined || now - connection.session.detachedAt <= sessionRetainMs) continue;
        this.metrics.sessionsExpired.inc();
        this.forget(connection, 'The session expired: the client did not reconnect in time');
        this.log.info({ event: 'pubsub.session_expired', hub: hub.name, connectionId: connection.id });
      }
    }
  }

  stop(): void {
    clearInterval(this.keepAliveTimer);
    clearInterval(this.expiryTimer);
  }
}
