// The pub/sub client endpoint, /client/hubs/{hub} (docs/protocols/web-pubsub.md,
// "Endpoints"): checks the upgrade (hub, per-hub limit, access token), asks
// the hub's connect event handler when there is one (cloud-events.ts: it may
// refuse, or set the user, groups, roles and a simple client's subprotocol),
// opens a connection with that identity and sends `connected` before
// anything else; a reconnect with awps_connection_id goes to
// session-recovery.ts and sends no connect event. A client offering no Web
// PubSub subprotocol is a simple WebSocket client (docs/event-handlers.md).
// Frames from the socket go to client-protocol.ts.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { bearerToken, clientIdentityOf, identityRefusal, verifyAccessToken } from '../auth/access-token.ts';
import type { JwtClaims } from '../auth/jwt.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { KeyedLogAllowance } from '../telemetry/log-allowance.ts';
import { parseUpgradeRequest, writeSwitchingProtocols, writeUpgradeError } from '../websocket/handshake.ts';
import { CLOSE_TOO_BIG } from '../websocket/frames.ts';
import { MessageSocket, type MessageSocketEvents, type MessageSocketOptions } from '../websocket/message-socket.ts';
import { handleClientFrame, handleProtobufFrame, handleSimpleFrame, takeNextEvents, type ClientProtocolContext } from './client-protocol.ts';
import { clientCertificatesOf } from './client-certificates.ts';
import type { ConnectBody, ConnectOutcome, EventDispatcher } from './cloud-events.ts';
import type { ConnectionLifecycle } from './connection-lifecycle.ts';
import { failUpgrade } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, isWebPubSubProtocol } from './pubsub-connection.ts';
import { LiveSocketOptions } from './live-limits.ts';
import { simpleClientModeOf } from './simple-client-mode.ts';
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
  /** The keys the hub's tokens may be signed with: its access key, its secondary key, and keys a rotation replaced. */
  accessKeys(hub: ClusterHub): string[];
  lifecycle: ConnectionLifecycle;
  recovery: SessionRecovery;
  protocol: ClientProtocolContext;
  events: EventDispatcher;
  shuttingDown(): boolean;
}

/** Values of a multi-valued map as Azure's connect event writes them: name -> [values]. */
function valuesOf(entries: Iterable<[string, string | string[] | undefined]>, skip: (name: string) => boolean): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, value] of entries) {
    if (value === undefined || skip(name)) continue;
    (out[name] ??= []).push(...(Array.isArray(value) ? value : [value]));
  }
  return out;
}

/** A token's claims as the connect event carries them: each a list of strings. */
function claimsOf(claims: JwtClaims): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(claims)) {
    const values = Array.isArray(value) ? value : [value];
    out[name] = values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
  }
  return out;
}

/** Request headers that are credentials (a proxy's too) or belong to the WebSocket handshake are not passed on. */
const UNFORWARDED_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'sec-websocket-key', 'sec-websocket-extensions', 'connection', 'upgrade']);

export class ClientEndpoint implements MessageSocketEvents<PubSubConnection> {
  /** limit.reached lines of upgrades refused for a full hub before their token is read, per hub (hubs are the config's). */
  private readonly fullHubLines = new KeyedLogAllowance();
  /** Upgrades waiting for their connect event, per hub name (limits.connectsPendingPerHub); a hub with none has no entry. */
  private readonly pendingConnects = new Map<string, number>();
  /** limit.reached lines of upgrades refused past limits.connectsPendingPerHub, per hub: anyone with a hub's tokens can cause them in a loop. */
  private readonly pendingConnectLines = new KeyedLogAllowance();
  private readonly socketOptions: MessageSocketOptions;

  constructor(private readonly deps: ClientEndpointDeps) {
    // Limits are read when used: a reload changes them in place.
    this.socketOptions = new LiveSocketOptions(deps.config.limits, deps.config.timeouts.closeHandshakeMs);
  }

  handleUpgrade({ req, socket: duplex, head, hubName, params, path }: ClientUpgrade): void {
    const { config, log, metrics } = this.deps;
    duplex.on('error', () => duplex.destroy());
    if (this.deps.shuttingDown()) return failUpgrade(duplex, 'ShuttingDown');
    const upgrade = parseUpgradeRequest(req);
    if (!upgrade) return failUpgrade(duplex, 'BadRequest', 'Not a WebSocket version 13 upgrade');
    const hub = this.deps.hub(hubName);
    if (!hub) return failUpgrade(duplex, 'HubNotFound');
    // No Web PubSub subprotocol offered (JSON or protobuf): a simple WebSocket client.
    const protocol = upgrade.protocols.find(isWebPubSubProtocol);
    // A simple client's mode is fixed by its query: a mode it cannot have is refused before anything else is asked.
    const mode = protocol ? undefined : simpleClientModeOf(params);
    if (mode && !mode.ok) return failUpgrade(duplex, 'BadRequest', mode.detail);
    const sendToGroup = mode?.ok && mode.mode.kind === 'sendToGroup' ? mode.mode.group : undefined;
    const socket = duplex as Socket;
    const recoverId = params.get('awps_connection_id');
    if (recoverId !== null && protocol) {
      writeSwitchingProtocols(socket, upgrade.key, protocol);
      const token = params.get('awps_reconnection_token') ?? '';
      this.deps.recovery.recover({ hub, connectionId: recoverId, token, protocol, socket, head, open: (s, c, h) => this.open(s, c, h) }).catch((err: Error) => {
        // Nothing known throws here; if something does, this client goes (it reconnects), not the process.
        this.deps.log.error({ event: 'pubsub.recovery_failed', hub: hub.name, err: { message: err.message, stack: err.stack } });
        socket.destroy();
      });
      return;
    }
    if (this.hubFull(hub, true)) return failUpgrade(duplex, 'HubConnectionLimitReached');
    const token = params.get('access_token') ?? bearerToken(req.headers.authorization);
    // The query form (/client/?hub=) names its hub in the query only: so must a token for that path.
    const rule = /^\/client\/*$/i.test(path) ? { hubInQuery: { path, hub: hub.name } } : {};
    const verdict = verifyAccessToken(token, this.deps.accessKeys(hub), [path, `/client/hubs/${hub.name}`], this.deps.hostsFor(req), rule);
    if (!verdict.ok) {
      log.info({ event: 'pubsub.refused', hub: hub.name, code: verdict.code });
      if (metrics.trace.on) metrics.trace.emitRefusal('pubsub.refused', { hub: hub.name, code: verdict.code });
      return failUpgrade(duplex, verdict.code);
    }
    const unusable = identityRefusal(verdict.claims);
    if (unusable) {
      log.info({ event: 'pubsub.refused', hub: hub.name, code: 'TokenInvalid', reason: unusable });
      if (metrics.trace.on) metrics.trace.emitRefusal('pubsub.refused', { hub: hub.name, code: 'TokenInvalid' });
      return failUpgrade(duplex, 'TokenInvalid', `The access token is not valid for this hub: ${unusable}`);
    }
    const id = randomBytes(16).toString('base64url');
    if (!this.deps.events.hasSystemEvent(hub.config, 'connect')) {
      return this.admit(upgrade.key, upgrade.protocols, socket, head, hub, id, protocol, sendToGroup, verdict.claims, { ok: true, groups: [], roles: [] });
    }
    // The connect event decides; the upgrade waits for it (bounded by the handler's timeoutMs), holding a WebSocket
    // place of the node meanwhile: at most limits.connectsPendingPerHub of a hub wait. Before, a hub whose handler hung
    // let anyone with its tokens take every place (limits.connectionsPerNode) for up to that timeoutMs: other hubs'
    // clients and hybrid connections' listeners and senders were refused 503 ConnectionLimitReached.
    if (!this.takePendingConnect(hub.name)) return failUpgrade(duplex, 'TooManyPendingConnects');
    const identity = clientIdentityOf(verdict.claims);
    const body: ConnectBody = {
      claims: claimsOf(verdict.claims),
      query: valuesOf(params.entries(), (name) => name === 'access_token'),
      headers: valuesOf(Object.entries(req.headers), (name) => UNFORWARDED_HEADERS.has(name)),
      subprotocols: upgrade.protocols,
      clientCertificates: clientCertificatesOf(req.socket),
    };
    const source = { id, userId: identity.userId, subprotocol: undefined, states: undefined };
    // A client that closes its side while the event is answered is gone: not admitted (it would be held until idleMs).
    let clientEnded = false;
    const onEnd = () => (clientEnded = true);
    duplex.once('end', onEnd);
    this.deps.events.connect(hub.config, source, body).then(
      (outcome) => {
        this.releasePendingConnect(hub.name);
        duplex.off('end', onEnd);
        // Said yes, and then not admitted: the handler hears `disconnected`, as Azure sends it after every 2xx
        // `connect` (before, nothing: what it set up for the connection stayed).
        const notAdmitted = (reason: string): void => {
          if (!outcome.ok) return;
          const gone = { id, userId: outcome.userId ?? identity.userId, subprotocol: undefined, states: source.states };
          this.deps.events.systemEvent(hub.config, gone, 'disconnected', { reason });
        };
        if (duplex.destroyed || clientEnded) {
          notAdmitted('the client left before it was connected');
          return void duplex.destroy();
        }
        if (this.deps.shuttingDown()) {
          notAdmitted('the relay is shutting down');
          return failUpgrade(duplex, 'ShuttingDown');
        }
        if (!outcome.ok) {
          log.info({ event: 'pubsub.refused', hub: hub.name, code: outcome.code, status: outcome.status });
          if (outcome.status !== undefined) return writeUpgradeError(duplex, outcome.status, outcome.detail, outcome.code);
          return failUpgrade(duplex, outcome.code, outcome.detail);
        }
        // What may have changed while the handler answered: a reload removed the hub, other clients filled it.
        if (this.deps.hub(hubName) !== hub) {
          notAdmitted('the hub was removed from the configuration');
          return failUpgrade(duplex, 'HubNotFound');
        }
        if (this.hubFull(hub, false)) {
          notAdmitted('the hub holds limits.connectionsPerHub connections');
          return failUpgrade(duplex, 'HubConnectionLimitReached');
        }
        this.admit(upgrade.key, upgrade.protocols, socket, head, hub, id, protocol, sendToGroup, verdict.claims, outcome, source.states, true);
      },
      (err: Error) => {
        this.releasePendingConnect(hub.name);
        duplex.off('end', onEnd);
        log.warn({ event: 'pubsub.event_handler_failed', hub: hub.name, connectionId: id, eventName: 'connect', reason: err.message });
        if (!duplex.destroyed) failUpgrade(duplex, 'EventHandlerFailed');
      },
    );
  }

  /** True (counted and logged) when the hub holds limits.connectionsPerHub connections; `beforeAuthorization`: the client's token is not read yet. */
  private hubFull(hub: ClusterHub, beforeAuthorization: boolean): boolean {
    const { config, log, metrics } = this.deps;
    if (hub.local.connections.size < config.limits.connectionsPerHub) return false;
    metrics.limitRefused('connectionsPerHub', beforeAuthorization);
    const line = (extra: { suppressed?: number }) => log.warn({ event: 'limit.reached', limit: 'connectionsPerHub', hub: hub.name, open: hub.local.connections.size, ...extra });
    // Anyone can ask before a token is read: ten lines a minute per hub (before, one line per upgrade to a full hub).
    if (beforeAuthorization) this.fullHubLines.write(hub.name, line);
    else line({});
    return true;
  }

  /**
   * Takes a place among the hub's upgrades waiting for their connect event; false (counted, logged) when it has
   * limits.connectsPendingPerHub already. The place is held until the event is answered or fails, even when its client
   * left before: the request at the handler runs on (a client connecting and leaving in a loop would pile them up).
   */
  private takePendingConnect(hub: string): boolean {
    const { config, log, metrics } = this.deps;
    const pending = this.pendingConnects.get(hub) ?? 0;
    if (pending < config.limits.connectsPendingPerHub) {
      this.pendingConnects.set(hub, pending + 1);
      return true;
    }
    metrics.limitRefused('connectsPendingPerHub');
    this.pendingConnectLines.write(hub, (extra) => log.warn({ event: 'limit.reached', limit: 'connectsPendingPerHub', hub, pending, ...extra }));
    return false;
  }

  private releasePendingConnect(hub: string): void {
    const pending = (this.pendingConnects.get(hub) ?? 1) - 1;
    if (pending > 0) this.pendingConnects.set(hub, pending);
    else this.pendingConnects.delete(hub);
  }

  /** Opens an admitted connection: the token's identity, with what the connect event decided added. */
  private admit(
    key: string,
    offered: string[],
    socket: Socket,
    head: Buffer,
    hub: ClusterHub,
    id: string,
    protocol: string | undefined,
    sendToGroup: string | undefined,
    claims: JwtClaims,
    decided: Extract<ConnectOutcome, { ok: true }>,
    states?: string,
    connectEventSaidYes = false,
  ): void {
    const { config, log } = this.deps;
    const identity = clientIdentityOf(claims);
    // A simple client's subprotocol is the one the connect handler chose among those it offered.
    const chosen = protocol ?? (decided.subprotocol !== undefined && offered.includes(decided.subprotocol) ? decided.subprotocol : undefined);
    const connection = new PubSubConnection(
      id,
      hub.name,
      decided.userId === undefined ? identity.userId : decided.userId,
      new ConnectionPermissions([...identity.roles, ...decided.roles]),
      chosen ?? '',
      config.limits,
    );
    connection.states = states;
    connection.sendToGroup = connection.simple ? sendToGroup : undefined;
    connection.connectEventSaidYes = connectEventSaidYes;
    writeSwitchingProtocols(socket, key, chosen);
    const client = this.open(socket, connection, head);
    const groups = [...new Set([...identity.groups, ...decided.groups])].slice(0, config.limits.groupsPerConnection);
    /** `connected` goes first, before any message (a reliable session's held ones follow it). */
    const attach = () => {
      connection.attach(client);
      if (!connection.simple) connection.sendControl(connection.frames.connected(connection.id, connection.userId, connection.session?.reconnectionToken));
    };
    /** Once it is in the hub: said, and its frames read (those that came with the upgrade first). */
    const start = () => {
      const mode = connection.sendToGroup === undefined ? undefined : 'sendToGroup';
      log.info({ event: 'pubsub.connected', hub: hub.name, connectionId: connection.id, protocol: connection.simple ? 'simple' : protocol, mode });
      const detail = connection.simple ? (mode ? `simple, ${mode} ${connection.sendToGroup}` : 'simple') : protocol;
      if (this.deps.metrics.trace.on) this.deps.metrics.trace.emit('pubsub.connected', { hub: hub.name, connectionId: connection.id, userId: connection.userId, detail });
      this.deps.events.systemEvent(hub.config, connection, 'connected', {});
      client.start();
    };
    if (!hub.admitsThroughBus) {
      attach();
      hub.admit(connection, groups);
      start();
      return;
    }
    // With other edges: the client hears `connected` once its subjects (its own, its user's, its token's
    // and connect handler's groups) are on its edge's NATS server, as a `joinGroup` is acknowledged. Before, a send
    // through another edge right after `connected` could miss it. Meanwhile its frames wait unread; a reliable
    // session keeps what is delivered to it (written after `connected`), a plain connection gets nothing yet.
    client.hold();
    connection.awaitingConnected = true;
    hub.admit(connection, groups);
    void hub.subscribed().then(() => {
      if (!connection.ended && !client.isOpen) {
        // Gone before it heard `connected`: out of the hub, with no `disconnected` event unless a connect event said yes.
        this.deps.lifecycle.end(connection, 'ClosedByServer', 'the client left before it was connected');
        log.info({ event: 'pubsub.left_before_connected', hub: hub.name, connectionId: connection.id });
        return;
      }
      // The drain began meanwhile: it would not be taken in now (its `connected` and event would come mid-drain).
      if (!connection.ended && this.deps.shuttingDown()) this.deps.lifecycle.end(connection, 'ShuttingDown');
      if (connection.ended) {
        // Ended meanwhile (a REST close, a reload, the drain): its client hears why, as one connected would.
        const wanted = connection.closeWanted ?? { code: 'ClosedByServer' as const };
        connection.attach(client);
        connection.closeSocket(wanted.code, wanted.reason);
        // Read again for the client's answer to the close (what it sent before is dropped: the connection ended).
        client.release();
        return;
      }
      connection.awaitingConnected = false;
      attach();
      hub.flushSession(connection);
      // Released before its first frames are read: one that holds the socket again (a simple client's message
      // waiting at the event handler) keeps it held.
      client.release();
      start();
    });
  }

  private open(socket: Socket, connection: PubSubConnection, head: Buffer): ClientSocket {
    return new MessageSocket(socket, connection, this, this.socketOptions, head);
  }

  // MessageSocketEvents

  onMessage(socket: ClientSocket, isBinary: boolean, data: Buffer): void {
    const connection = socket.owner;
    if (connection.socket !== socket || connection.ended) return;
    if (connection.simple) handleSimpleFrame(this.deps.protocol, connection, isBinary, data);
    else if (connection.wire === 'protobuf') handleProtobufFrame(this.deps.protocol, connection, data);
    else handleClientFrame(this.deps.protocol, connection, isBinary, data);
  }

  onDrain(socket: ClientSocket): void {
    const connection = socket.owner;
    if (connection.socket !== socket) return;
    // Its hub looked up only for held events let go for their time to live (rare): a drain comes on every busy socket.
    const expired = connection.flush();
    if (expired > 0) this.deps.hub(connection.hub)?.heldExpired(connection, expired);
    // Events and invocations wait while the client has its answers queued (client-protocol.ts). Only when some do wait:
    // a drain comes on every busy subscriber's socket, and takeNextEvents also reads the client again.
    if (connection.eventsWaiting?.length) takeNextEvents(connection);
  }

  onClosed(socket: ClientSocket, code: number): void {
    const connection = socket.owner;
    if (code === CLOSE_TOO_BIG) {
      this.deps.metrics.limitRefused('pubsubMessageBytes');
      this.deps.log.warn({ event: 'limit.reached', limit: 'pubsubMessageBytes', hub: connection.hub, connectionId: connection.id });
    }
    if (connection.socket === socket) this.deps.lifecycle.socketClosed(connection, code);
  }
}
