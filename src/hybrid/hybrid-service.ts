// Hybrid connections on this node: authorizes and dispatches the four
// WebSocket actions on /$hc/{entity} (listen, connect, accept, request) and
// relayed HTTP requests on /{entity}/..., keeping the listener registry and
// the table of pending rendezvous. A reload reconfigures it in place
// (reconfigure): entities, SAS rules and limits, with the listeners that no
// longer pass closed.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { SasAuthorizer } from '../auth/sas-authorizer.ts';
import { certificatesOf, chainLeadsTo } from '../auth/client-certificate-chain.ts';
import type { X509Certificate } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { RelayConfig, Right, SenderKind } from '../config/types.ts';
import { tokenHostsFor, tokenHostsForHost } from '../auth/token-hosts.ts';
import { keepQueryParams, paramInAnyCase } from '../http/query-params.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { connectRefused, countHttpStatus, partsAllowed, pathOf, type HybridContext, type HybridPathBelow } from './context.ts';
import { ControlChannel, type ControlChannelHooks } from './control-channel.ts';
import type { ControlMessageLimits } from './control-socket.ts';
import { EntityCatalog, createdEntity, entityToTrace, isValidEntityName, type HybridEntity } from './entity-catalog.ts';
import { EntityTraffic } from './entity-traffic.ts';
import { HYBRID_ERRORS, failRequest, failUpgrade, type HybridErrorCode } from './errors.ts';
import { HybridClusterLink, hybridLinkId } from './cluster-link.ts';
import { HttpExchange, closeLateLeg } from './http-exchange.ts';
import { AbsentRoute, LocalRoute, type ListenerRoute, type ListenerRoutes } from './listener-route.ts';
import { startKeepAlive } from './keepalive.ts';
import { ListenerRegistry } from './listener-registry.ts';
import { RelayedRequestError, relayRequest, type RelayedAnswer, type RelayedRequestInit } from './relayed-request.ts';
import { RendezvousTable, newRendezvousId, workerOfRendezvousId } from './rendezvous-table.ts';
import { isRuntimeInformationRequest, runtimeInformationEntry, sendManagementError, sendRuntimeInformation } from './runtime-information.ts';
import { sasTokenOf, senderCredentialIn } from './sender-credential.ts';
import { startConnect } from './websocket-rendezvous.ts';
import { CLOSE_GOING_AWAY } from '../websocket/frames.ts';
import { parseUpgradeRequest, writeSwitchingProtocols } from '../websocket/handshake.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

const TRACKING_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface HybridHttpTarget {
  entity: string;
  /** Decoded path segments after the entity. */
  subPath: string[];
  /** Path and query as the listener sees it (sb-hc-* removed). */
  requestTarget: string;
  params: URLSearchParams;
}

/** This edge as one worker of several sharing a port (serve --workers). */
export interface WorkerPeers {
  /** This worker's number, named in the rendezvous ids it makes. */
  index: number;
  /** Hands a listener's leg for another worker's rendezvous to that worker; false when it cannot. */
  handOff(worker: number, req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** True for a leg another worker relayed here after checking its TLS client certificate. */
  vouchedFor(req: IncomingMessage): boolean;
}

/**
 * A listener of a hybrid connection with `presence` came or went
 * (docs/event-handlers.md, "Listener presence"): the composition root
 * publishes it to the configured pub/sub hub group.
 */
export interface ListenerPresenceNotice {
  type: 'listener.online' | 'listener.offline';
  entity: string;
  /** Listeners of the entity on this edge now. */
  listeners: number;
  edge: string;
  hub: string;
  group: string;
}

/**
 * The largest response body hyco-https sends on its control channel (larger ones go by rendezvous), as one message
 * of one fragment per `res.write()`: a body streamed in small writes (rows of NDJSON) comes in up to a fragment a byte.
 */
const CHANNEL_BODY_BYTES = 65536;

/**
 * The limits of a control channel's messages: their bytes, and their parts: the socket reads of a frame not yet whole
 * (partsAllowed), and its frames: one per byte of a body hyco-https may send on the channel and two more (its first
 * and its closing frame), at most (each frame is kept, ~100 bytes a frame: up to ~7 MiB for a channel's message of
 * 1-byte writes; before, one per 64 bytes, a response written in more than 1,024 pieces closed the channel 1008 and
 * was answered 502).
 */
function controlMessageLimits(bytes: number): ControlMessageLimits {
  return { bytes, frames: Math.max(partsAllowed(bytes), Math.min(bytes, CHANNEL_BODY_BYTES) + 2), frameReads: Math.max(64, partsAllowed(bytes)) };
}

/** The refusal of a sender of `kind` to an entity whose listeners do not take that kind (hybridConnections[].accepts). */
function kindRefused(entity: HybridEntity, kind: SenderKind): HybridErrorCode | undefined {
  if (entity.accepts.has(kind)) return undefined;
  return kind === 'websocket' ? 'WebSocketNotAccepted' : 'HttpNotAccepted';
}

export class HybridService {
  /** Hears listener presence changes of entities configured with `presence` (set by the composition root). */
  presence: ((notice: ListenerPresenceNotice) => void) | undefined;
  /**
   * Counts an entity's listeners on every edge, for runtime information requests (set by the composition root,
   * which can ask the other edges); `problem` when it cannot. Unset: this edge's listeners.
   */
  countListeners: ((entityKey: string) => Promise<{ listeners: number } | { problem: string }>) | undefined;
  readonly catalog: EntityCatalog;
  readonly listeners = new ListenerRegistry();
  /** Traffic per entity on this edge (the dashboard's counters). */
  readonly traffic = new EntityTraffic();
  private readonly ctx: HybridContext;
  /** Shared with the operator endpoints (ops/manage-auth.ts). */
  readonly authorizer: SasAuthorizer;
  private readonly stopKeepAlive: () => void;
  private readonly cluster: HybridClusterLink;
  private shuttingDown = false;
  /** Listeners waiting for their 101 (see listen()), by entity key. */
  private readonly arriving = new Map<string, number>();
  /** Checks listeners again when the grace of a key retired by a reload ends. */
  private graceTimer: NodeJS.Timeout | undefined;
  /** publicUrl's host: a token's resource may always name it. */
  private readonly publicHost: string;
  /**
   * listen.tls.caFile's certificates once it changed after start (see recheckClientCertificates), and the
   * TLS connections whose client certificate was checked against them: a connection's handshake verified
   * it against the CAs of its time, and a keep-alive connection from before a change can still open a listener.
   */
  private changedCas: { cas: X509Certificate[]; checked: WeakMap<TLSSocket, boolean> } | undefined;

  constructor(
    private readonly config: RelayConfig,
    private readonly log: Logger,
    rendezvousBase: string,
    bus: Bus,
    subjects: Subjects,
    metrics: RelayMetrics,
    private readonly workers?: WorkerPeers,
  ) {
    this.catalog = new EntityCatalog(config.hybridConnections, config.autoCreate);
    this.authorizer = new SasAuthorizer(config.sas);
    const worker = workers?.index ?? 0;
    this.ctx = {
      config,
      log,
      listeners: this.listeners,
      rendezvous: new RendezvousTable(),
      routedHere: new Map(),
      rendezvousBase,
      metrics,
      open: { splices: new Map(), httpRequests: 0 },
      traffic: this.traffic,
      newRendezvousId: () => newRendezvousId(worker),
      viaName: new URL(rendezvousBase).hostname,
    };
    this.stopKeepAlive = startKeepAlive(this.listeners, config.timeouts);
    this.publicHost = new URL(rendezvousBase).hostname;
    this.cluster = new HybridClusterLink(bus, subjects, hybridLinkId(config.nodeId), this.ctx, log, config.bus.requestTimeoutMs);
  }

  /** Open connections by kind, for the connections gauge. */
  openConnections(): { listener: number; relayed_websocket: number; http_request: number } {
    let listener = 0;
    for (const _ of this.listeners.all()) listener++;
    return { listener, relayed_websocket: this.ctx.open.splices.size, http_request: this.ctx.open.httpRequests };
  }

  // --- WebSocket actions on /$hc/{entity} ---------------------------------------

  /** `below`: what the address carries past the entity (a sender's path suffix and query; a listener's must have no suffix). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, entityName: string, params: URLSearchParams, below: HybridPathBelow = NOTHING_BELOW): void {
    socket.on('error', () => socket.destroy());
    if (!isValidEntityName(entityName)) return failUpgrade(socket, 'InvalidEntityName');
    const action = paramInAnyCase(params, 'sb-hc-action');
    // While draining, listeners still dial the rendezvous legs of work in flight (a sender
    // waiting for its accept, a response over 64 KB): the rendezvous table knows them.
    if (this.shuttingDown && action !== 'accept' && action !== 'request') return failUpgrade(socket, 'ShuttingDown');
    const log = this.log.child({ entity: entityName, trackingId: trackingIdOf(params), action });
    if ((action === 'listen' || action === 'accept' || action === 'request') && !this.listenerCertificateOk(req)) {
      log.info({ event: 'listener.refused', code: 'ClientCertificateRequired', tls: (req.socket as TLSSocket).authorizationError?.toString() });
      return failUpgrade(socket, 'ClientCertificateRequired');
    }
    switch (action) {
      case 'listen':
        // A listener's path names its hybrid connection, and `echo/x` is none.
        if (below.subPath.length > 0) return failUpgrade(socket, 'EntityNotFound');
        return this.listen(req, socket, head, entityName, params, log);
      case 'connect':
        return this.connect(req, socket, head, entityName, params, below, log);
      case 'accept':
      case 'request':
        return this.rendezvousArrived(action, req, socket, head, entityName, params);
      default:
        return failUpgrade(socket, 'BadRequest', 'sb-hc-action must be listen, connect, accept or request');
    }
  }

  private listen(req: IncomingMessage, socket: Duplex, head: Buffer, name: string, params: URLSearchParams, log: Logger): void {
    const known = this.catalog.get(name);
    if (!known && !this.config.autoCreate) return failUpgrade(socket, 'EntityNotFound');
    const check = this.authorize(req, params, known?.name ?? name, 'Listen');
    if (typeof check === 'string') {
      log.info({ event: 'listener.refused', code: check });
      if (this.ctx.metrics.trace.on) this.ctx.metrics.trace.emitRefusal('listener.refused', { ...entityToTrace(known?.name ?? name), code: check });
      return failUpgrade(socket, check);
    }
    const target = known ?? this.catalog.getForListener(name);
    if (!target) return failUpgrade(socket, 'EntityNotFound');
    if (this.listenersFor(target) >= this.config.limits.listenersPerEntity) {
      log.info({ event: 'listener.refused', code: 'ListenerLimitReached' });
      this.ctx.metrics.limitRefused('listenersPerEntity');
      return failUpgrade(socket, 'ListenerLimitReached');
    }
    // The listener is online when it is told so, for senders on every edge: the 101 waits until
    // this edge's subscription for the entity is on the NATS server (a round trip, for an
    // entity's first listener on this edge; before, a sender through another edge right after
    // could be told NoListener).
    this.arriving.set(target.key, (this.arriving.get(target.key) ?? 0) + 1);
    void this.cluster.listenersChanged(target, this.routableListeners(target)).then(() => {
      const left = (this.arriving.get(target.key) ?? 1) - 1;
      if (left > 0) this.arriving.set(target.key, left);
      else this.arriving.delete(target.key);
      // What may have changed meanwhile: the listener left, the edge began to drain, a reload removed the entity.
      const refusal = socket.destroyed ? undefined : this.shuttingDown ? 'ShuttingDown' : this.catalog.get(target.name) !== target ? 'EntityNotFound' : undefined;
      if (socket.destroyed || refusal) {
        this.letGoIfUnused(target);
        if (refusal) failUpgrade(socket, refusal);
        return;
      }
      this.online(req, socket, head, target, params, check, log);
    });
  }

  /** Listeners on this edge for `entity` (closing ones too), and those about to be (waiting for the bus before their 101). */
  private listenersFor(entity: HybridEntity): number {
    return this.listeners.count(entity.key) + (this.arriving.get(entity.key) ?? 0);
  }

  /**
   * The same without closing ones: while there are none, other edges stop routing the entity here (a listener
   * in its closing handshake, up to timeouts.closeHandshakeMs, would make this edge answer NoListener to every
   * connect NATS gave it, while another edge has an open listener).
   */
  private routableListeners(entity: HybridEntity): number {
    return this.listeners.openCount(entity.key) + (this.arriving.get(entity.key) ?? 0);
  }

  /** Completes a listener's upgrade: its control channel is open. `expiresAt`: its token's. */
  private online(req: IncomingMessage, socket: Duplex, head: Buffer, target: HybridEntity, params: URLSearchParams, expiresAt: number, log: Logger): void {
    const upgrade = parseUpgradeRequest(req);
    // A malformed handshake (400), or a socket the client had half closed meanwhile: what was held for this listener
    // goes unless others hold it.
    if (!upgrade || !socket.readable || !socket.writable) {
      if (upgrade) socket.destroy();
      else failUpgrade(socket, 'BadRequest', 'Invalid WebSocket handshake');
      return this.letGoIfUnused(target);
    }
    // The first subprotocol offered, if any, is the one taken (as `ws` did).
    writeSwitchingProtocols(socket, upgrade.key, upgrade.protocols[0]);
    const { limits, timeouts } = this.config;
    const channel = new ControlChannel(socket, head, controlMessageLimits(limits.controlMessageBytes), timeouts.closeHandshakeMs, target, this.tokenOf(req, params) ?? '', expiresAt, req.headers.host, log, this.channelHooks, limits.listenerBufferBytes);
    this.listeners.add(channel);
    // Subscribed already, unless a failed upgrade of the same entity let go meanwhile.
    void this.cluster.listenersChanged(target, this.routableListeners(target));
    log.info({ event: 'listener.connected', listener: channel.id, listeners: this.listeners.count(target.key) });
    if (this.ctx.metrics.trace.on) this.ctx.metrics.trace.emit('listener.connected', { entity: target.name, connectionId: channel.id, detail: `${this.listeners.count(target.key)} on this edge` });
    const where = this.presenceOf(target);
    if (where) this.announcedTo.set(channel, where);
    this.announce('listener.online', target, this.listeners.count(target.key), where);
  }

  /** Unsubscribes from an entity when no listener is open or arriving, and forgets it (if auto-created) when none is left at all. */
  private letGoIfUnused(target: HybridEntity): void {
    if (this.routableListeners(target) > 0) return;
    void this.cluster.listenersChanged(target, 0);
    if (this.listenersFor(target) === 0) this.catalog.releaseDynamic(target);
  }

  private readonly channelHooks: ControlChannelHooks = {
    renewToken: (channel, token) => {
      const d = this.authorizer.check({ token, entity: channel.entity.name, right: 'Listen', hosts: this.channelHosts(channel) });
      return d.ok ? d.expiresAt : d.code;
    },
    response: (channel, response) => {
      const exchange = channel.exchanges.get(response.requestId);
      if (!exchange) {
        channel.complaints.write((extra) => channel.log.warn({ event: 'listener.unknown_response', ...extra }));
        return undefined;
      }
      return exchange.onControlResponse(response);
    },
    badResponse: (channel, requestId, why) => {
      const exchange = channel.exchanges.get(requestId);
      channel.complaints.write((extra) => channel.log.warn({ event: 'listener.bad_response', listener: channel.id, known: exchange !== undefined, why, ...extra }));
      exchange?.badResponse();
    },
    closing: (channel, why) => {
      this.letGoIfUnused(channel.entity);
      // Closed for a reason of the relay's own other than its shutdown (access revoked or expired, a broken protocol):
      // what the listener was told and has not taken up goes on to another listener (or fails) now, not after its
      // closing handshake, during which it could still dial for it (found by review). A shutting-down edge lets its
      // listeners finish what they were given; an entity removed ends its requests itself (404 EntityRemoved).
      if (why !== undefined && why !== 'ShuttingDown' && why !== 'EntityRemoved') {
        for (const exchange of [...channel.exchanges.values()]) exchange.listenerLost();
      }
    },
    notReading: () => {
      this.ctx.metrics.limitRefused('listenerBufferBytes');
    },
    closed: (channel, code) => {
      const left = this.listeners.remove(channel);
      this.letGoIfUnused(channel.entity);
      channel.log.info({ event: 'listener.disconnected', listener: channel.id, code, listeners: left, ...channel.complaints.leftOutField });
      if (this.ctx.metrics.trace.on) this.ctx.metrics.trace.emit('listener.disconnected', { entity: channel.entity.name, connectionId: channel.id, code: String(code), detail: `${left} on this edge` });
      // Where the config says now; else where its coming was said (a reload removed its entity, or the entity's
      // presence): before, no notice, and the group counted it online for good.
      this.announce('listener.offline', channel.entity, left, this.presenceOf(channel.entity) ?? this.announcedTo.get(channel));
      if (channel.overLimit) {
        // Refused for a message over limits.controlMessageBytes (1009) or in more parts than it allows (1008; control-socket.ts).
        this.ctx.metrics.limitRefused('controlMessageBytes');
        channel.log.warn({ event: 'limit.reached', limit: 'controlMessageBytes', listener: channel.id, code });
      }
      for (const exchange of [...channel.exchanges.values()]) exchange.listenerLost();
    },
  };

  /** Where the live config has an entity's listener presence published, if anywhere. */
  private presenceOf(entity: HybridEntity): { hub: string; group: string } | undefined {
    return this.config.hybridConnections.find((hc) => asciiLowerCase(hc.name) === entity.key)?.presence;
  }

  /** Where each listener's coming was announced. */
  private readonly announcedTo = new WeakMap<ControlChannel, { hub: string; group: string }>();

  private announce(type: ListenerPresenceNotice['type'], entity: HybridEntity, listeners: number, where: { hub: string; group: string } | undefined): void {
    if (!where || !this.presence) return;
    this.presence({ type, entity: entity.name, listeners, edge: this.config.nodeId, hub: where.hub, group: where.group });
  }

  private connect(req: IncomingMessage, socket: Duplex, head: Buffer, name: string, params: URLSearchParams, below: HybridPathBelow, log: Logger): void {
    const entity = this.entityForSender(name);
    if (!entity) return connectRefused(this.ctx, socket, 'EntityNotFound', name);
    const refused = this.authorizeSender(req, params, entity, below.subPath) ?? kindRefused(entity, 'websocket');
    if (refused) {
      log.info({ event: 'connect.refused', code: refused });
      return connectRefused(this.ctx, socket, refused, entity);
    }
    startConnect(this.ctx, req, socket, head, entity, this.routes, below, senderCredentialIn(req, params, entity), trackingIdOf(params), log);
  }

  /**
   * The entity a sender names. With auto-create on, an entity this node does
   * not know may have been created by a listener on another node: it is
   * treated as one (needing sender tokens), and the bus says whether it exists.
   */
  private entityForSender(name: string): HybridEntity | undefined {
    const known = this.catalog.get(name);
    if (known || !this.config.autoCreate || !isValidEntityName(name)) return known;
    return createdEntity(name);
  }

  /** Routes for relayed HTTP requests (made once: nothing is made per request for it). */
  private readonly routes: ListenerRoutes = { routeTo: (entity) => this.routeTo(entity) };

  /** A listener on this node when one is open (round robin), else whichever node the bus finds. */
  private routeTo(entity: HybridEntity): ListenerRoute {
    const channel = this.listeners.pick(entity.key);
    if (channel) return new LocalRoute(channel);
    // Alone on the in-process bus, no other edge can hold one: the answer is known without asking the bus.
    if (this.config.bus.kind === 'memory') return new AbsentRoute(entity.dynamic ? 'EntityNotFound' : 'NoListener');
    return this.cluster.remoteRoute(entity);
  }

  private rendezvousArrived(
    action: 'accept' | 'request',
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    name: string,
    params: URLSearchParams,
  ): void {
    const id = paramInAnyCase(params, 'sb-hc-id') ?? '';
    const pending = this.ctx.rendezvous.get(id);
    if (!pending && this.workers) {
      // The load balancer in front of the workers sent the leg to this one: it belongs to another.
      const owner = workerOfRendezvousId(id);
      if (owner !== undefined && owner !== this.workers.index && this.workers.handOff(owner, req, socket, head)) return;
    }
    if (!pending && action === 'request' && this.ctx.rendezvous.takeAbandoned(id, asciiLowerCase(name))) {
      this.log.info({ event: 'http.late_answer_dropped', entity: name });
      return closeLateLeg(req, socket, this.config.timeouts.closeHandshakeMs);
    }
    if (!pending || pending.action !== action || pending.entity.key !== asciiLowerCase(name)) {
      this.log.info({ event: 'rendezvous.unknown', entity: name, action });
      return failUpgrade(socket, 'RendezvousNotFound');
    }
    pending.arrive(req, socket, head, params);
  }

  // --- relayed HTTP requests on /{entity}/... ------------------------------------

  handleHttp(req: IncomingMessage, res: ServerResponse, target: HybridHttpTarget): void {
    // A request logs at info and debug only: below those levels a child logger per request would be made for nothing.
    const log = this.log.isLevelEnabled('info') ? this.log.child({ entity: target.entity, trackingId: trackingIdOf(target.params) }) : this.log;
    // (No closure made per request: run through tsx, each named one costs a defineProperty for its name.)
    if (this.shuttingDown) return this.refuseHttp(req, res, target, log, 'ShuttingDown');
    // Before: handed to a listener as a request of its own (or 404 NoListener), where the .NET SDK wanted a count.
    if (isRuntimeInformationRequest(req, target.subPath, target.params)) return void this.answerRuntimeInformation(req, res, target, log);
    const entity = this.entityForSender(target.entity);
    if (!entity) return this.refuseHttp(req, res, target, log, 'EntityNotFound');
    const refused = this.authorizeSender(req, target.params, entity, target.subPath) ?? kindRefused(entity, 'http');
    if (refused) return this.refuseHttp(req, res, target, log, refused);
    new HttpExchange(this.ctx, req, res, entity, this.routes, target.requestTarget, senderCredentialIn(req, target.params, entity), log).start();
  }

  private refuseHttp(req: IncomingMessage, res: ServerResponse, target: HybridHttpTarget, log: Logger, code: HybridErrorCode): void {
    log.info({ event: 'http.refused', code });
    countHttpStatus(this.ctx, code, this.catalog.get(target.entity) ?? target.entity);
    if (this.ctx.metrics.trace.on) this.ctx.metrics.trace.emitRefusal('http.request', { ...entityToTrace(target.entity), method: req.method, path: pathOf(target.requestTarget), status: HYBRID_ERRORS[code].status, code });
    failRequest(res, code);
    req.resume();
  }

  /**
   * GetRuntimeInformationAsync() of the .NET SDK (runtime-information.ts): the entity's description with its
   * listeners on every edge. Any token with a right on the entity will do (a listener asks with its Listen key,
   * a sender with its Send key); answered in the management plane's XML, refusals too.
   */
  private async answerRuntimeInformation(req: IncomingMessage, res: ServerResponse, target: HybridHttpTarget, log: Logger): Promise<void> {
    req.resume();
    const refuse = (code: HybridErrorCode, detail?: string) => {
      log.info({ event: 'http.runtime_information_refused', code });
      sendManagementError(res, HYBRID_ERRORS[code].status, code, detail ?? HYBRID_ERRORS[code].message);
    };
    const entity = this.entityForSender(target.entity);
    if (!entity) return refuse('EntityNotFound');
    const asListener = this.authorize(req, target.params, entity.name, 'Listen');
    const verdict = typeof asListener === 'string' ? this.authorize(req, target.params, entity.name, 'Send') : asListener;
    if (typeof verdict === 'string') return refuse(verdict);
    const counted = this.countListeners ? await this.countListeners(entity.key) : { listeners: this.listeners.count(entity.key) };
    if (res.destroyed) return;
    if ('problem' in counted) return refuse('BusUnavailable', `the listeners on other edges cannot be counted (${counted.problem})`);
    // With autoCreate an entity not in the config exists while a listener holds it, on any edge.
    if (entity.dynamic && counted.listeners === 0) return refuse('EntityNotFound');
    const scheme = req.socket instanceof TLSSocket ? 'https' : 'http';
    // The entry names itself by the request's URL, without sb-hc-* parameters: a token sent as sb-hc-token was echoed.
    const [path, query = ''] = splitOnce(req.url ?? '', '?');
    const kept = keepQueryParams(query, (_pair, name) => !name.toLowerCase().startsWith('sb-hc-'));
    sendRuntimeInformation(res, runtimeInformationEntry(`${scheme}://${req.headers.host ?? this.publicHost}${path}${kept ? `?${kept}` : ''}`, entity, counted.listeners));
    log.info({ event: 'http.runtime_information', listeners: counted.listeners });
  }

  /**
   * A request the relay itself sends to a listener of `entityName` (pub/sub's
   * hc:// event handlers), routed like any sender's; the relay authorizes
   * itself. `requestTarget` is the path and query the listener sees.
   */
  relayRequest(entityName: string, requestTarget: string, init: RelayedRequestInit): Promise<RelayedAnswer> {
    // Also while the edge drains: pub/sub's disconnected events of the connections it ends go this way
    // (before, refused ShuttingDown at once, so an hc:// handler heard none of them).
    const entity = isValidEntityName(entityName) ? this.entityForSender(entityName) : undefined;
    if (!entity) return Promise.reject(new RelayedRequestError('unreachable', 'EntityNotFound'));
    const refused = kindRefused(entity, 'http');
    if (refused) return Promise.reject(new RelayedRequestError('unreachable', refused));
    const log = this.log.child({ entity: entity.name, relayed: true });
    return relayRequest(this.ctx, entity, this.routes, requestTarget, init, log);
  }

  // --- authorization --------------------------------------------------------------

  /** Returns the token's expiry (unix s) or the error code to refuse with. */
  private authorize(
    req: IncomingMessage,
    params: URLSearchParams,
    entity: string,
    right: Right,
    subPath: string[] = [],
  ): number | HybridErrorCode {
    const d = this.authorizer.check({ token: this.tokenOf(req, params), entity, subPath, right, hosts: this.hostsFor(req) });
    return d.ok ? d.expiresAt : d.code;
  }

  private tokenOf(req: IncomingMessage, params: URLSearchParams): string | undefined {
    return sasTokenOf(req, params);
  }

  /**
   * With listen.tls.requireClientCert "listeners", a listener's control
   * channel and rendezvous legs need a client certificate the TLS handshake
   * verified against listen.tls.caFile (mutual TLS on top of SAS).
   */
  private listenerCertificateOk(req: IncomingMessage): boolean {
    const mode = this.config.listen.tls?.requireClientCert;
    if (mode !== 'listeners' && mode !== 'all') return true;
    if (this.workers?.vouchedFor(req)) return true;
    const socket = req.socket;
    // "all": the handshake refused the rest; a socket that is not TLS here is not the client's own.
    if (!(socket instanceof TLSSocket)) return mode === 'all';
    return socket.authorized && this.signedByCurrentCas(socket);
  }

  /**
   * A TLS handshake completed (the server calls it); `current` when its TCP connection was accepted since the last
   * CA change: Node gave it the CAs of now, and the session ticket keys of now (rotated at a change, so it resumed
   * no session of before). Only such a handshake is trusted as checked against the CAs of now; a connection
   * accepted before, whose handshake finished after, is checked by its chain.
   */
  noteHandshake(socket: TLSSocket, current: boolean): void {
    if (current) this.changedCas?.checked.set(socket, true);
  }

  /**
   * A verified client certificate whose chain still leads to listen.tls.caFile's CAs: always before they change,
   * and for a handshake made since; a connection of before is checked by its chain (a resumed session of before
   * shows no chain past the client's certificate: refused, its listener dials again with a new handshake).
   */
  private signedByCurrentCas(socket: TLSSocket): boolean {
    const changed = this.changedCas;
    if (!changed) return true;
    let ok = changed.checked.get(socket);
    if (ok === undefined) {
      ok = chainLeadsTo(socket, changed.cas);
      changed.checked.set(socket, ok);
    }
    return ok;
  }

  private authorizeSender(req: IncomingMessage, params: URLSearchParams, entity: HybridEntity, subPath: string[]): HybridErrorCode | undefined {
    if (!entity.requiresClientAuthorization) return undefined;
    const result = this.authorize(req, params, entity.name, 'Send', subPath);
    return typeof result === 'string' ? result : undefined;
  }

  /** Hosts a token's resource may name for this request. */
  private hostsFor(req: IncomingMessage): string[] {
    return tokenHostsFor(req, this.config.namespaceHosts, this.publicHost);
  }

  /** The same for a listener's control channel, from the live config: a reload that drops a host revokes it. */
  private channelHosts(channel: ControlChannel): string[] {
    return tokenHostsForHost(channel.requestHost, this.config.namespaceHosts, this.publicHost);
  }

  // --- reload ---------------------------------------------------------------------

  /**
   * Takes a reloaded config, which server/reload.ts has put in place of the
   * old one: entities added and removed, SAS rules (a rotated key keeps
   * signing for rotationGraceSeconds), limits read at connect. Listeners of a
   * removed entity, and its relayed WebSockets, are closed (1001 EntityRemoved); every other listener's
   * token is checked against the new rules, and one that no longer passes is
   * closed (1008 AccessRevoked, with why); a token that still passes stays.
   */
  reconfigure(config: RelayConfig, now = Date.now()): { entitiesRemoved: string[]; keysRotated: string[]; listenersClosed: number } {
    const removed = this.catalog.reconfigure(config.hybridConnections, config.autoCreate);
    const keysRotated = this.authorizer.update(config.sas, config.rotationGraceSeconds * 1000, now);
    let listenersClosed = 0;
    const gone = new Set(removed.map((e) => e.key));
    for (const channel of [...this.listeners.all()]) {
      if (!gone.has(channel.entity.key)) continue;
      channel.closeWith('EntityRemoved');
      listenersClosed++;
    }
    // Its relayed WebSockets end with it, both ends told why (as its listeners are).
    const { closeCode, message } = HYBRID_ERRORS.EntityRemoved;
    for (const [splice, entity] of this.ctx.open.splices) if (gone.has(entity.key)) splice.close(closeCode, message);
    // And what waits for a listener's leg: before, a connect whose listener had its accept was spliced when the leg
    // came (before the listener's channel had finished closing), and that WebSocket outlived the entity.
    for (const pending of this.ctx.rendezvous.of(gone)) pending.entityRemoved();
    listenersClosed += this.recheckListeners();
    this.scheduleGraceEnd();
    return { entitiesRemoved: removed.map((e) => e.name), keysRotated, listenersClosed };
  }

  /**
   * listen.tls.caFile changed: each listener that proved its client certificate (requireClientCert
   * "listeners" or "all") and whose chain no longer leads to one of the new CAs is closed (1008
   * ClientCertificateRevoked). Before, it stayed, senders were still given to it, and every accept leg
   * it opened (a new TLS connection) was refused 403: a listener that could never answer.
   * A channel a worker of `serve --workers` relayed here (no TLS socket of its own) is not checked.
   */
  recheckClientCertificates(caPem: Buffer | undefined): number {
    const mode = this.config.listen.tls?.requireClientCert;
    if (mode !== 'listeners' && mode !== 'all') return 0;
    const cas = certificatesOf(caPem);
    this.changedCas = { cas, checked: new WeakMap() };
    let closed = 0;
    for (const channel of [...this.listeners.all()]) {
      if (!channel.isOpen || !(channel.socket instanceof TLSSocket)) continue;
      if (this.signedByCurrentCas(channel.socket)) continue;
      channel.closeWith('ClientCertificateRevoked', 'ClientCertificateRevoked: not signed by the CAs of listen.tls.caFile any more');
      closed++;
    }
    this.log.info({ event: 'tls.client_cas_changed', listenersClosed: closed });
    return closed;
  }

  /** Closes (1008 AccessRevoked) each listener whose token the rules no longer accept; returns how many. */
  private recheckListeners(): number {
    let closed = 0;
    for (const channel of [...this.listeners.all()]) {
      if (!channel.isOpen) continue;
      // An expired token is the keep-alive's to close (TokenExpired), as it always was; but one in its renewal grace is
      // held to the new rules too (before, it was judged expired first and left alone: a listener whose rule lost Listen
      // was given senders until the grace ended, up to timeouts.tokenGraceMs).
      const d = this.authorizer.check({ token: channel.token, entity: channel.entity.name, right: 'Listen', hosts: this.channelHosts(channel), ignoreExpiry: true });
      if (d.ok) continue;
      channel.closeWith('AccessRevoked', `AccessRevoked: ${d.code}`);
      closed++;
    }
    return closed;
  }

  private scheduleGraceEnd(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    const end = this.authorizer.retired.nextExpiry();
    if (end === undefined) return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      const closed = this.recheckListeners();
      this.log.info({ event: 'sas.rotation_grace_ended', listenersClosed: closed });
      this.scheduleGraceEnd();
    }, Math.max(0, end - Date.now()) + 1);
    this.graceTimer.unref();
  }

  // --- shutdown -------------------------------------------------------------------

  /**
   * Stops taking work: new connects, requests and listeners are refused (503)
   * and other nodes stop routing here. Listeners are told to reconnect
   * elsewhere (close 1001) as soon as no request of theirs is in flight.
   */
  beginShutdown(): void {
    this.shuttingDown = true;
    this.stopKeepAlive();
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.cluster.stopRouting();
    this.closeIdleListeners();
  }

  /**
   * While true during a drain, idle listeners are kept: the relay itself still has requests for them
   * (pub/sub's connected/disconnected events to hc:// handlers). Set by the composition root.
   */
  keepListenersWhile: (() => boolean) | undefined;

  /** Closes (1001) listeners with no request in flight; returns how many are still open. */
  closeIdleListeners(): number {
    if (this.keepListenersWhile?.()) return [...this.listeners.all()].length;
    let busy = 0;
    for (const channel of [...this.listeners.all()]) {
      if (channel.exchanges.size === 0) channel.closeWith('ShuttingDown');
      else busy++;
    }
    return busy;
  }

  /** Near the shutdown deadline: closes (1001) every relayed WebSocket still open, so both ends see why. */
  closeRelayedWebSockets(): void {
    for (const splice of this.ctx.open.splices.keys()) splice.close(CLOSE_GOING_AWAY, 'relay shutting down');
  }

  /** At the shutdown deadline: closes every listener, busy or not. */
  finishShutdown(): void {
    this.cluster.close();
    for (const channel of [...this.listeners.all()]) channel.closeWith('ShuttingDown');
  }
}

/** A listener's address, or a sender's with nothing past the entity. */
const NOTHING_BELOW: HybridPathBelow = { subPath: [], rawPath: '', rawQuery: '' };

function trackingIdOf(params: URLSearchParams): string | undefined {
  const id = paramInAnyCase(params, 'sb-hc-id');
  return id && TRACKING_ID.test(id) ? id : undefined;
}

/** `text` before and after the first `separator` (the rest undefined when there is none). */
function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + separator.length)];
}
