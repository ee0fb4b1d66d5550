// The pub/sub client endpoint, /client/hubs/{hub} (docs/protocols/web-pubsub.md,
// "Endpoints"): checks the upgrade (subprotocol, hub, per-hub limit, access
// token), opens a connection with the identity the token grants and sends
// `connected` before anything else; a reconnect with awps_connection_id goes
// to session-recovery.ts. Frames from the socket go to client-protocol.ts.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { bearerToken, clientIdentityOf, verifyAccessToken } from '../auth/access-token.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { parseUpgradeRequest, writeSwitchingProtocols } from '../websocket/handshake.ts';
import { CLOSE_TOO_BIG } from '../websocket/frames.ts';
import { MessageSocket, type MessageSocketEvents, type MessageSocketOptions } from '../websocket/message-socket.ts';
import { handleClientFrame, type ClientProtocolContext } from './client-protocol.ts';
import type { ConnectionLifecycle } from './connection-lifecycle.ts';
import { connectedFrame } from './downstream.ts';
import { failUpgrade } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, SUPPORTED_PROTOCOLS } from './pubsub-connection.ts';
import type { ClientSocket, SessionRecovery } from './session-recovery.ts';

export interface ClientUpgrade {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  hubName: string;
  params: URLSearchParams;
  /** The request path, as a token's audience may name it. */
  path: string;
}

export interface ClientEndpointDeps {
  config: RelayConfig;
  log: Logger;
  metrics: RelayMetrics;
  hub(name: string): ClusterHub | undefined;
  hostsFor(req: IncomingMessage): string[];
  /** The keys the hub's tokens may be signed with (two during a key rotation). */
  accessKeys(hub: ClusterHub): string[];
  lifecycle: ConnectionLifecycle;
  recovery: SessionRecovery;
  protocol: ClientProtocolContext;
  shuttingDown(): boolean;
}

export class ClientEndpoint implements MessageSocketEvents<PubSubConnection> {
  private readonly socketOptions: MessageSocketOptions;

  constructor(private readonly deps: ClientEndpointDeps) {
    const { limits, timeouts } = deps.config;
    // Limits are read when used: a reload changes them in place.
    this.socketOptions = {
      get maxMessageBytes() {
        return limits.pubsubMessageBytes;
      },
      get outboundHighWaterMark() {
        return limits.outboundBufferBytes;
      },
      closeHandshakeMs: timeouts.closeHandshakeMs,
    };
  }

  handleUpgrade({ req, socket: duplex, head, hubName, params, path }: ClientUpgrade): void {
    const { config, log, metrics } = this.deps;
    duplex.on('error', () => duplex.destroy());
    if (this.deps.shuttingDown()) return failUpgrade(duplex, 'ShuttingDown');
    const upgrade = parseUpgradeRequest(req);
    if (!upgrade) return failUpgrade(duplex, 'BadRequest', 'Not a WebSocket version 13 upgrade');
    const hub = this.deps.hub(hubName);
    if (!hub) return failUpgrade(duplex, 'HubNotFound');
    const protocol = upgrade.protocols.find((p) => (SUPPORTED_PROTOCOLS as readonly string[]).includes(p));
    if (!protocol) return failUpgrade(duplex, 'SubprotocolUnsupported');
    const socket = duplex as Socket;
    const recoverId = params.get('awps_connection_id');
    if (recoverId !== null) {
      writeSwitchingProtocols(socket, upgrade.key, protocol);
      const token = params.get('awps_reconnection_token') ?? '';
      void this.deps.recovery.recover({ hub, connectionId: recoverId, token, protocol, socket, head, open: (s, c, h) => this.open(s, c, h) });
      return;
    }
    if (hub.local.connections.size >= config.limits.connectionsPerHub) {
      metrics.limitRefusals.inc({ limit: 'connectionsPerHub' });
      log.warn({ event: 'limit.reached', limit: 'connectionsPerHub', hub: hub.name, open: hub.local.connections.size });
      return failUpgrade(duplex, 'HubConnectionLimitReached');
    }
    const token = params.get('access_token') ?? bearerToken(req.headers.authorization);
    const verdict = verifyAccessToken(token, this.deps.accessKeys(hub), [path, `/client/hubs/${hub.name}`], this.deps.hostsFor(req));
    if (!verdict.ok) {
      log.info({ event: 'pubsub.refused', hub: hub.name, code: verdict.code });
      return failUpgrade(duplex, verdict.code);
    }
    const identity = clientIdentityOf(verdict.claims);
    const connection = new PubSubConnection(
      randomBytes(16).toString('base64url'),
      hub.name,
      identity.userId,
      new ConnectionPermissions(identity.roles),
      protocol,
      config.limits,
    );
    writeSwitchingProtocols(socket, upgrade.key, protocol);
    const client = this.open(socket, connection, head);
    connection.attach(client);
    hub.local.add(connection);
    // `connected` goes first, before any message; the connection's bus
    // subscriptions (made by the hub) reach other NATS servers a moment later.
    connection.sendControl(connectedFrame(connection.id, connection.userId, connection.session?.reconnectionToken));
    for (const group of identity.groups.slice(0, config.limits.groupsPerConnection)) hub.local.join(connection, group);
    // A durable hub keeps the new session's first checkpoint (where it starts in the stream, its groups).
    if (connection.session) hub.durable?.sessionChanged(connection);
    log.info({ event: 'pubsub.connected', hub: hub.name, connectionId: connection.id, protocol });
    client.start();
  }

  private open(socket: Socket, connection: PubSubConnection, head: Buffer): ClientSocket {
    return new MessageSocket(socket, connection, this, this.socketOptions, head);
  }

  // MessageSocketEvents

  onMessage(socket: ClientSocket, isBinary: boolean, data: Buffer): void {
    const connection = socket.owner;
    if (connection.socket !== socket || connection.ended) return;
    handleClientFrame(this.deps.protocol, connection, isBinary, data);
  }

  onDrain(socket: ClientSocket): void {
    const connection = socket.owner;
    if (connection.socket === socket) connection.flush();
  }

  onClosed(socket: ClientSocket, code: number): void {
    const connection = socket.owner;
    if (code === CLOSE_TOO_BIG) {
      this.deps.metrics.limitRefusals.inc({ limit: 'pubsubMessageBytes' });
      this.deps.log.warn({ event: 'limit.reached', limit: 'pubsubMessageBytes', hub: connection.hub, connectionId: connection.id });
    }
    if (connection.socket === socket) this.deps.lifecycle.socketClosed(connection, code);
  }
}
