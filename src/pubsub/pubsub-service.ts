// Publish/subscribe on this node: the client endpoint (/client/hubs/{hub}),
// connection lifecycle, reliable-session retention and recovery
// (protocols/web-pubsub.md 1.5, 1.10), one shared keep-alive timer, and the
// counters the ops surface reads. REST lives in rest-api.ts, frame handling in
// client-protocol.ts, fan-out in hub.ts.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { bearerToken, clientIdentityOf, verifyAccessToken } from '../auth/access-token.ts';
import type { Bus } from '../bus/bus.ts';
import { decodeEdgeMessage } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { tokenHostsFor } from '../auth/token-hosts.ts';
import { parseUpgradeRequest, writeSwitchingProtocols } from '../websocket/handshake.ts';
import { CLOSE_TOO_BIG } from '../websocket/frames.ts';
import { MessageSocket, type MessageSocketEvents } from '../websocket/message-socket.ts';
import { handleClientFrame, type ClientProtocolContext } from './client-protocol.ts';
import { PUBSUB_ERRORS, failUpgrade, type PubSubErrorCode } from './errors.ts';
import { connectedFrame, disconnectedFrame } from './downstream.ts';
import { BusReplay } from './bus-replay.ts';
import { ClusterHub } from './hub-cluster.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, SUPPORTED_PROTOCOLS } from './pubsub-connection.ts';
import { handleRestRequest } from './rest-api.ts';
import { BUSY_RETRY_MS } from './session-handover.ts';
import { postUserEvent, type UserEvent } from './upstream.ts';

export interface PubSubStats {
  connectionsOpened: number;
  messagesIn: number;
  acksOk: number;
  acksFailed: number;
  slowConsumerCloses: number;
  sessionsRecovered: number;
  sessionsRefused: number;
  sessionsExpired: number;
  restRequests: number;
}

type ClientSocket = MessageSocket<PubSubConnection>;

/** When asking an edge never heard from, start this long before the disconnect (clocks differ). */
const REPLAY_CLOCK_MARGIN_MS = 1000;

/** For a socket that is only being closed. */
const IGNORE_EVENTS: MessageSocketEvents<null> = { onMessage() {}, onClosed() {}, onDrain() {} };

export class PubSubService implements MessageSocketEvents<PubSubConnection> {
  readonly hubs = new Map<string, ClusterHub>();
  readonly stats: PubSubStats = {
    connectionsOpened: 0,
    messagesIn: 0,
    acksOk: 0,
    acksFailed: 0,
    slowConsumerCloses: 0,
    sessionsRecovered: 0,
    sessionsRefused: 0,
    sessionsExpired: 0,
    restRequests: 0,
  };
  private readonly publicHost: string;
  private readonly keepAliveTimer: NodeJS.Timeout;
  private shuttingDown = false;
  private readonly protocolContext: ClientProtocolContext;
  private midCounter = 0;
  private readonly busReachesOthers: boolean;
  /** Set with the NATS bus: replays events an edge missed while reconnecting. */
  private readonly replay: BusReplay | undefined;

  constructor(
    readonly config: RelayConfig,
    private readonly log: Logger,
    publicUrl: string,
    bus: Bus,
    subjects: Subjects,
    private readonly metrics: RelayMetrics,
  ) {
    this.busReachesOthers = bus.reachesOtherNodes;
    this.publicHost = new URL(publicUrl).hostname;
    // This process as an event origin: a restarted edge is a new origin.
    const origin = `${config.nodeId}.${randomBytes(4).toString('hex')}`;
    if (bus.kind === 'nats') {
      this.replay = new BusReplay(
        bus,
        {
          origin,
          subject: subjects.replay(),
          windowMs: config.bus.replayWindowMs,
          maxBytes: config.bus.replayBufferBytes,
          requestTimeoutMs: config.bus.requestTimeoutMs,
          gatherStallMs: config.bus.gatherStallMs,
          marginMs: REPLAY_CLOCK_MARGIN_MS,
        },
        log,
        (data, admit) => this.redeliver(data, admit),
      );
    }
    const deps = {
      bus,
      subjects,
      nodeId: config.nodeId,
      log,
      metrics,
      requestTimeoutMs: config.bus.requestTimeoutMs,
      gatherStallMs: config.bus.gatherStallMs,
      endConnection: (c: PubSubConnection, code: PubSubErrorCode, reason?: string) => this.endConnection(c, code, reason),
      nextMid: () => `${origin}:${++this.midCounter}`,
      recordSend: (mid: string, subject: string, data: Uint8Array) => this.replay?.record(mid, subject, data),
      admit: (mid: string, deliver: () => void) => (this.replay ? this.replay.admit(mid, deliver) : deliver()),
    };
    const handoverDeps = {
      log,
      limits: config.limits,
      requestTimeoutMs: config.bus.requestTimeoutMs,
      release: (c: PubSubConnection) => this.release(c),
      publishedSince: this.replay && ((after: number) => this.replay!.publishedSince(after)),
      seen: this.replay && (() => this.replay!.seen()),
    };
    for (const hubConfig of config.pubsub.hubs) {
      const hub = new ClusterHub(hubConfig, deps, (c, code) => this.endConnection(c, code), handoverDeps);
      this.hubs.set(hub.key, hub);
    }
    this.protocolContext = {
      hub: (connection) => this.hubs.get(connection.hub.toLowerCase()),
      endConnection: (connection, code) => this.endConnection(connection, code),
      sendEvent: (event, hub) => this.sendEvent(event, hub),
      groupsPerConnection: config.limits.groupsPerConnection,
      count: (counter) => this.stats[counter]++,
      countAck: (result) => metrics.acks.inc({ result }),
    };
    this.keepAliveTimer = setInterval(() => this.keepAlive(), config.timeouts.keepAliveIntervalMs);
    this.keepAliveTimer.unref();
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

  hub(name: string): ClusterHub | undefined {
    return this.hubs.get(name.toLowerCase());
  }

  hostsFor(req: IncomingMessage): string[] {
    return tokenHostsFor(req, this.config.namespaceHosts, this.publicHost);
  }

  // --- client endpoint --------------------------------------------------------

  handleUpgrade(req: IncomingMessage, duplex: Duplex, head: Buffer, hubName: string, params: URLSearchParams, path: string): void {
    duplex.on('error', () => duplex.destroy());
    if (this.shuttingDown) return failUpgrade(duplex, 'ShuttingDown');
    const upgrade = parseUpgradeRequest(req);
    if (!upgrade) return failUpgrade(duplex, 'BadRequest', 'Not a WebSocket version 13 upgrade');
    const hub = this.hub(hubName);
    if (!hub) return failUpgrade(duplex, 'HubNotFound');
    const protocol = upgrade.protocols.find((p) => (SUPPORTED_PROTOCOLS as readonly string[]).includes(p));
    if (!protocol) return failUpgrade(duplex, 'SubprotocolUnsupported');
    const socket = duplex as Socket;
    const recoverId = params.get('awps_connection_id');
    if (recoverId !== null) {
      writeSwitchingProtocols(socket, upgrade.key, protocol);
      void this.recover(hub, recoverId, params.get('awps_reconnection_token') ?? '', protocol, socket, head);
      return;
    }
    if (hub.local.connections.size >= this.config.limits.connectionsPerHub) {
      this.metrics.limitRefusals.inc({ limit: 'connectionsPerHub' });
      this.log.warn({ event: 'limit.reached', limit: 'connectionsPerHub', hub: hub.name, open: hub.local.connections.size });
      return failUpgrade(duplex, 'HubConnectionLimitReached');
    }
    const token = params.get('access_token') ?? bearerToken(req.headers.authorization);
    const verdict = verifyAccessToken(token, hub.config.accessKey, [path, `/client/hubs/${hub.name}`], this.hostsFor(req));
    if (!verdict.ok) {
      this.log.info({ event: 'pubsub.refused', hub: hub.name, code: verdict.code });
      return failUpgrade(duplex, verdict.code);
    }
    const identity = clientIdentityOf(verdict.claims);
    const connection = new PubSubConnection(
      randomBytes(16).toString('base64url'),
      hub.name,
      identity.userId,
      new ConnectionPermissions(identity.roles),
      protocol,
      this.config.limits,
    );
    writeSwitchingProtocols(socket, upgrade.key, protocol);
    const client = this.openSocket(socket, connection, head);
    connection.attach(client);
    hub.local.add(connection);
    this.stats.connectionsOpened++;
    // `connected` goes first, before any message; the connection's bus
    // subscriptions (made by the hub) reach other NATS servers a moment later.
    connection.sendControl(connectedFrame(connection.id, connection.userId, connection.session?.reconnectionToken));
    for (const group of identity.groups.slice(0, this.config.limits.groupsPerConnection)) hub.local.join(connection, group);
    this.log.info({ event: 'pubsub.connected', hub: hub.name, connectionId: connection.id, protocol });
    client.start();
  }

  private openSocket(socket: Socket, connection: PubSubConnection, head: Buffer): ClientSocket {
    return new MessageSocket(socket, connection, this, this.socketOptions(), head);
  }

  private socketOptions() {
    return { maxMessageBytes: this.config.limits.pubsubMessageBytes, closeHandshakeMs: this.config.timeouts.closeHandshakeMs };
  }

  /**
   * Re-attaches a retained reliable session: held here, or taken from the node
   * that holds it (session-handover.ts). Otherwise the upgrade completes and
   * closes with 1008, since an HTTP error would make the client keep retrying.
   */
  private async recover(hub: ClusterHub, connectionId: string, token: string, protocol: string, socket: Socket, head: Buffer): Promise<void> {
    // A session still moving (an earlier reconnect is being handed over) is waited for, briefly.
    const deadline = Date.now() + this.config.bus.requestTimeoutMs;
    while (hub.local.connections.get(connectionId)?.handover && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, BUSY_RETRY_MS));
    }
    if (this.shuttingDown) {
      // Not "not found" (1008 ends the client's recovery): 1012 makes it try again, elsewhere.
      this.log.info({ event: 'pubsub.recovery_deferred', hub: hub.name, reason: 'shutting down' });
      return this.refuseRecovery(socket, 'ShuttingDown');
    }
    let connection = hub.local.connections.get(connectionId);
    const heldHere = connection !== undefined;
    const usable = (c: PubSubConnection | undefined) =>
      c !== undefined && c.session !== undefined && !c.ended && !c.handover && c.protocol === protocol && c.session.tokenMatches(token);
    if (!heldHere) connection = await hub.handover.take(connectionId, token, protocol);
    if (!connection || !usable(connection)) {
      this.stats.sessionsRefused++;
      this.log.info({ event: 'pubsub.recovery_refused', hub: hub.name });
      return this.refuseRecovery(socket, 'SessionNotFound');
    }
    const session = connection.session!;
    const previous = connection.socket;
    const client = this.openSocket(socket, connection, head);
    connection.attach(client);
    previous?.destroy();
    this.stats.sessionsRecovered++;
    this.metrics.sessionsRecovered.inc({ from: heldHere ? 'this_node' : 'other_node' });
    connection.sendControl(connectedFrame(connection.id, connection.userId, session.reconnectionToken));
    connection.flush();
    this.log.info({
      event: 'pubsub.recovered',
      hub: hub.name,
      connectionId: connection.id,
      from: heldHere ? 'this node' : 'another node',
      replay: session.unacknowledged,
    });
    client.start();
  }

  /** Completes a recovery's upgrade only to say why not and close with the code's close code. */
  private refuseRecovery(socket: Socket, code: 'SessionNotFound' | 'ShuttingDown'): void {
    const refused = new MessageSocket(socket, null, IGNORE_EVENTS, this.socketOptions());
    refused.writeFrame(disconnectedFrame(PUBSUB_ERRORS[code].message));
    refused.close(PUBSUB_ERRORS[code].closeCode, code);
  }

  // MessageSocketEvents

  onMessage(socket: ClientSocket, isBinary: boolean, data: Buffer): void {
    const connection = socket.owner;
    if (connection.socket !== socket || connection.ended) return;
    handleClientFrame(this.protocolContext, connection, isBinary, data);
  }

  onDrain(socket: ClientSocket): void {
    const connection = socket.owner;
    if (connection.socket === socket) connection.flush();
  }

  onClosed(socket: ClientSocket, code: number): void {
    const connection = socket.owner;
    if (code === CLOSE_TOO_BIG) {
      this.metrics.limitRefusals.inc({ limit: 'pubsubMessageBytes' });
      this.log.warn({ event: 'limit.reached', limit: 'pubsubMessageBytes', hub: connection.hub, connectionId: connection.id });
    }
    if (connection.socket !== socket) return;
    connection.detach(Date.now());
    if (connection.ended) return;
    // During shutdown with other nodes on the bus, a dropped reliable session waits to be taken.
    if (connection.session && (!this.shuttingDown || this.busReachesOthers)) {
      this.log.info({ event: 'pubsub.detached', hub: connection.hub, connectionId: connection.id, code });
      return;
    }
    this.forget(connection);
    this.log.info({ event: 'pubsub.disconnected', hub: connection.hub, connectionId: connection.id, code });
  }

  // --- lifecycle ---------------------------------------------------------------

  /** Ends a connection for good: closes its socket with the code's close code and drops its session. */
  endConnection(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void {
    if (connection.ended) return;
    if (code === 'SlowConsumer' || code === 'SessionBufferFull') {
      this.stats.slowConsumerCloses++;
      this.metrics.slowConsumerCloses.inc({ code });
    }
    connection.closeSocket(code, reason);
    this.forget(connection);
    this.log.info({ event: 'pubsub.ended', hub: connection.hub, connectionId: connection.id, code });
  }

  private forget(connection: PubSubConnection): void {
    this.release(connection);
    connection.session?.clear();
  }

  /** Takes a connection out of its hub; its session, if any, is someone else's now. */
  private release(connection: PubSubConnection): void {
    connection.ended = true;
    this.hub(connection.hub)?.local.remove(connection);
  }

  private keepAlive(): void {
    const now = Date.now();
    const { keepAliveIntervalMs, idleMs, sessionRetainMs } = this.config.timeouts;
    for (const hub of this.hubs.values()) {
      for (const connection of hub.local.connections.values()) {
        const socket = connection.socket;
        if (socket) {
          const silent = now - socket.lastReceivedAt;
          if (silent > idleMs) socket.destroy();
          else if (silent >= keepAliveIntervalMs) socket.ping();
        } else if (
          !connection.handover &&
          connection.session?.detachedAt !== undefined &&
          now - connection.session.detachedAt > sessionRetainMs
        ) {
          this.stats.sessionsExpired++;
          this.forget(connection);
          this.log.info({ event: 'pubsub.session_expired', hub: hub.name, connectionId: connection.id });
        }
      }
    }
  }

  /** A ps.send envelope replayed by another edge: delivered like a live one. */
  private redeliver(data: Uint8Array, admit: (mid: string, deliver: () => void) => void): void {
    const envelope = decodeEdgeMessage(data, 'ps.send');
    if (!envelope) return;
    const h = envelope.message;
    const hub = this.hub(h.hub);
    if (hub && h.origin !== this.config.nodeId) admit(h.mid, () => hub.receive(h, envelope.body));
  }

  private sendEvent(event: Omit<UserEvent, 'hub'>, hub: ClusterHub) {
    return postUserEvent({ ...event, hub: hub.config }, this.publicHost, this.config.limits.pubsubMessageBytes);
  }

  // --- REST --------------------------------------------------------------------

  handleRest(req: IncomingMessage, res: ServerResponse, hubName: string, segments: string[], params: URLSearchParams, path: string): void {
    this.stats.restRequests++;
    handleRestRequest(this, req, res, hubName, segments, params, path);
  }

  /** Stops accepting and closes every client with the shutdown code; sessions are not kept. */
  /**
   * Tells every client to reconnect elsewhere (close 1012). With other nodes
   * on the bus, reliable sessions stay here, still buffering events, until
   * the node the client reconnects to takes them over (session-handover.ts);
   * alone, there is nobody to hand them to and they end.
   */
  beginShutdown(): void {
    this.shuttingDown = true;
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) {
        if (connection.session && this.busReachesOthers) connection.closeSocket('ShuttingDown');
        else this.endConnection(connection, 'ShuttingDown');
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
    clearInterval(this.keepAliveTimer);
    for (const hub of this.hubs.values()) {
      for (const connection of [...hub.local.connections.values()]) this.endConnection(connection, 'ShuttingDown');
      hub.handover.close();
      hub.leaveBus();
    }
    this.replay?.close();
  }
}
