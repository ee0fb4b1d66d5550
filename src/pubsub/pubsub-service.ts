// Publish/subscribe on this node: builds the hubs and the parts that serve
// them, and answers for them as a whole. The client endpoint is
// client-endpoint.ts, recovery session-recovery.ts, how connections end and
// the keep-alive timer connection-lifecycle.ts, frames client-protocol.ts,
// REST rest-api.ts, one hub across the cluster hub-cluster.ts, and how its
// events cross the cluster event-feed.ts. Events flow one way: a hub sends
// through its feed; the feed hands events from other edges to the hub that
// registered for them.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { tokenHostsFor } from '../auth/token-hosts.ts';
import type { Bus } from '../bus/bus.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { ClientEndpoint } from './client-endpoint.ts';
import type { ClientProtocolContext } from './client-protocol.ts';
import { ConnectionLifecycle } from './connection-lifecycle.ts';
import { DirectFeed, type EventFeed } from './event-feed.ts';
import { ClusterHub } from './hub-cluster.ts';
import { handleRestRequest, type RestContext } from './rest-api.ts';
import { ReplayingFeed } from './replaying-feed.ts';
import { SessionRecovery } from './session-recovery.ts';
import { postUserEvent } from './upstream.ts';

export class PubSubService implements RestContext {
  readonly hubs = new Map<string, ClusterHub>();
  readonly maxBodyBytes: number;
  private readonly publicHost: string;
  private readonly feed: EventFeed;
  private readonly lifecycle: ConnectionLifecycle;
  private readonly endpoint: ClientEndpoint;
  private readonly othersCanTake: boolean;

  constructor(
    readonly config: RelayConfig,
    log: Logger,
    publicUrl: string,
    bus: Bus,
    subjects: Subjects,
    metrics: RelayMetrics,
  ) {
    this.publicHost = new URL(publicUrl).hostname;
    this.maxBodyBytes = config.limits.pubsubMessageBytes;
    this.othersCanTake = bus.reachesOtherNodes;
    const b = config.bus;
    this.feed =
      bus.kind === 'nats'
        ? new ReplayingFeed(
            bus,
            {
              nodeId: config.nodeId,
              subject: subjects.replay(),
              windowMs: b.replayWindowMs,
              maxBytes: b.replayBufferBytes,
              requestTimeoutMs: b.requestTimeoutMs,
              gatherStallMs: b.gatherStallMs,
            },
            log,
          )
        : new DirectFeed(bus, config.nodeId);
    this.lifecycle = new ConnectionLifecycle(this.hubs, config, log, metrics, this.othersCanTake);
    const hubDeps = {
      bus,
      subjects,
      nodeId: config.nodeId,
      log,
      metrics,
      requestTimeoutMs: b.requestTimeoutMs,
      gatherStallMs: b.gatherStallMs,
      feed: this.feed,
      endConnection: this.lifecycle.end.bind(this.lifecycle),
    };
    const handoverDeps = {
      log,
      limits: config.limits,
      requestTimeoutMs: b.requestTimeoutMs,
      release: this.lifecycle.release.bind(this.lifecycle),
      publishedSince: this.feed.publishedSince?.bind(this.feed),
      seen: this.feed.seen?.bind(this.feed),
    };
    for (const hubConfig of config.pubsub.hubs) {
      const hub = new ClusterHub(hubConfig, hubDeps, hubDeps.endConnection, handoverDeps);
      this.hubs.set(hub.key, hub);
    }
    const protocol: ClientProtocolContext = {
      hub: (connection) => this.hub(connection.hub),
      endConnection: hubDeps.endConnection,
      sendEvent: (event, hub) => postUserEvent({ ...event, hub: hub.config }, this.publicHost, config.limits.pubsubMessageBytes),
      groupsPerConnection: config.limits.groupsPerConnection,
      countAck: (result) => metrics.acks.inc({ result }),
    };
    const socketOptions = {
      maxMessageBytes: config.limits.pubsubMessageBytes,
      outboundHighWaterMark: config.limits.outboundBufferBytes,
      closeHandshakeMs: config.timeouts.closeHandshakeMs,
    };
    const shuttingDown = () => this.lifecycle.shuttingDown;
    const recovery = new SessionRecovery(log, metrics, socketOptions, b.requestTimeoutMs, shuttingDown);
    this.endpoint = new ClientEndpoint({
      config,
      log,
      metrics,
      hub: (name) => this.hub(name),
      hostsFor: (req) => this.hostsFor(req),
      lifecycle: this.lifecycle,
      recovery,
      protocol,
      shuttingDown,
    });
  }

  hub(name: string): ClusterHub | undefined {
    return this.hubs.get(name.toLowerCase());
  }

  hostsFor(req: IncomingMessage): string[] {
    return tokenHostsFor(req, this.config.namespaceHosts, this.publicHost);
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, hubName: string, params: URLSearchParams, path: string): void {
    this.endpoint.handleUpgrade({ req, socket, head, hubName, params, path });
  }

  handleRest(req: IncomingMessage, res: ServerResponse, hubName: string, segments: string[], params: URLSearchParams, path: string): void {
    handleRestRequest(this, req, res, hubName, segments, params, path);
  }

  /** Attached client connections, and reliable sessions held for a dropped socket: of one hub, or of all. */
  openCounts(only?: ClusterHub): { attached: number; retained: number } {
    let attached = 0;
    let retained = 0;
    for (const hub of only ? [only] : this.hubs.values()) {
      for (const c of hub.local.connections.values()) {
        if (c.ended) continue;
        if (c.socket) attached++;
        else if (c.session) retained++;
      }
    }
    return { attached, retained };
  }

  // --- shutdown -------------------------------------------------------------------

  /**
   * Tells every client to reconnect elsewhere (close 1012). With other nodes
   * on the bus, reliable sessions stay here, still buffering events, until
   * the node the client reconnects to takes them over (session-handover.ts);
   * alone, there is nobody to hand them to and they end.
   */
  beginShutdown(): void {
    this.lifecycle.shuttingDown = true;
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) {
        if (connection.session && this.othersCanTake) connection.closeSocket('ShuttingDown');
        else this.lifecycle.end(connection, 'ShuttingDown');
      }
    }
  }

  /** Reliable sessions still held here for a client to take elsewhere, or given and not yet paged out by the taker. */
  sessionsAwaitingHandover(): number {
    let held = 0;
    for (const hub of this.hubs.values()) {
      held += hub.handover.givingCount;
      for (const c of hub.local.connections.values()) if (!c.ended && c.session) held++;
    }
    return held;
  }

  /** At the end of shutdown: ends what is left and leaves the bus. */
  finishShutdown(): void {
    this.lifecycle.stop();
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) this.lifecycle.end(connection, 'ShuttingDown');
      hub.handover.close();
      hub.leaveBus();
    }
    this.feed.close();
  }
}
