// The one HTTP server of an edge node (HTTPS with listen.tls): routes plain
// requests and WebSocket upgrades to the domains (hybrid connections, pub/sub,
// ops), reloads its config without a restart (reload.ts), and shuts down cleanly.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { IncomingMessage, ServerResponse, createServer, type Server, type ServerOptions } from 'node:http';
import { Socket, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import type { Bus } from '../bus/bus.ts';
import { checkBusFiles, createBus, createJetStream, durableHubs, durableHubsWithoutJetStream } from '../bus/create.ts';
import type { JetStreamAccess } from '../bus/jetstream.ts';
import { Subjects } from '../bus/subjects.ts';
import type { RelayConfig } from '../config/types.ts';
import { oweContinue, sendContinue } from '../http/expect-continue.ts';
import { clientAddress, connectionPeer } from '../http/client-address.ts';
import { upgradeWhenItsTurn, whenItsTurn } from '../http/connection-close.ts';
import { hostBeforePort, hostLinesValid } from '../http/host-header.ts';
import { boundEveryAnswer } from '../http/unread-answers.ts';
import { HybridService } from '../hybrid/hybrid-service.ts';
import { PubSubService } from '../pubsub/pubsub-service.ts';
import { sessionBucketTtlMs } from '../pubsub/session-checkpoints.ts';
import { handleOps } from '../ops/health.ts';
import { ClusterStatus } from '../ops/cluster-status.ts';
import { OpsDashboard } from '../ops/dashboard.ts';
import { ManageAuth } from '../ops/manage-auth.ts';
import { RelayMetrics } from '../telemetry/metrics.ts';
import { droppedLogLines, setLogLevel, type Logger } from '../telemetry/logger.ts';
import { serveReload, type ReloadOutcome } from '../ops/reload-endpoint.ts';
import { failEdgeRequest, failEdgeUpgrade, type AdmissionRefusal } from '../http/edge-errors.ts';
import { ConnectionsByAddress } from './connections-by-address.ts';
import { ConnectionRateLimiter } from './connection-rate.ts';
import { HttpConnections } from './http-connections.ts';
import { ListenerPresence } from './listener-presence.ts';
import { serveMetrics } from '../ops/metrics-endpoint.ts';
import { applyConfig } from './reload.ts';
import { otherClientProtocol, route } from './router.ts';
import { handOff, onHandOff, privateSocketPath, relayedByWorker } from './worker-cluster.ts';
import { createTlsServer } from './tls.ts';
import { ProxyProtocolFront } from './proxy-protocol.ts';
import { ProxyTrust } from './trust-proxy.ts';
import { KeyedLogAllowance } from '../telemetry/log-allowance.ts';
import { asksOtherVersion } from '../websocket/handshake.ts';
import { paramInAnyCase } from '../http/query-params.ts';

/** How often shutdown checks whether draining is done. */
const SHUTDOWN_POLL_MS = 25;

/** Largest request head (request line and headers); past it, 431. */
const MAX_HEADER_BYTES = 16384;
/** Room for the bus envelope of a listener's answer crossing to another edge, beside its head and body. */
const ANSWER_ENVELOPE_BYTES = 1024;

/**
 * The edge's answer to a request Node could not parse, by Node's error code: a method llhttp does not know is 501
 * (RFC 9110 15.6.2; before, 400 "Malformed request target"), any other parse error 400 with llhttp's reason.
 */
function clientErrorAnswer(err: NodeJS.ErrnoException): { code: 'RequestTimeout' | 'HeaderFieldsTooLarge' | 'MethodNotImplemented' | 'BadRequest'; detail?: string } {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return { code: 'RequestTimeout' };
  if (err.code === 'HPE_HEADER_OVERFLOW') return { code: 'HeaderFieldsTooLarge' };
  if (err.code === 'HPE_INVALID_METHOD') return { code: 'MethodNotImplemented' };
  const reason = (err as { reason?: unknown }).reason;
  return { code: 'BadRequest', detail: `Malformed request${typeof reason === 'string' && reason !== '' ? `: ${reason}` : ''}` };
}

/**
 * Once the relay has answered a request whose body is still arriving, Node
 * reads and drops the rest to keep the connection; a client that trickles it
 * would hold its place in httpConnectionsPerNode for good. The rest gets
 * `ms` (timeouts.headersMs, the bound on a request head), then the
 * connection is closed.
 */
function boundUnreadBody(req: IncomingMessage, res: ServerResponse, ms: number): void {
  res.once('finish', () => {
    // A request destroyed already (its socket with it) has nothing left to bound.
    const socket = req.socket;
    if (req.complete || !socket) return;
    const timer = setTimeout(() => socket.destroy(), ms);
    timer.unref();
    // Both listeners go with the first of the two: a keep-alive connection carries many
    // requests, and a 'close' listener left per request held each one until it closed.
    const done = () => {
      clearTimeout(timer);
      req.off('end', done);
      socket.off('close', done);
    };
    req.once('end', done);
    socket.once('close', done);
  });
}

/** Answers on a connection that will not be read any further, and drops it once the answer is out. */
function answerAndClose(socket: Duplex, code: Parameters<typeof failEdgeUpgrade>[1], detail?: string): void {
  socket.on('error', () => socket.destroy());
  // Written, then destroyed (writeUpgradeError).
  failEdgeUpgrade(socket, code, detail);
}

export interface RunningRelay {
  /** http://host:port (https:// with listen.tls) as bound. */
  url: string;
  port: number;
  /** Base URL listeners are told to dial. */
  publicUrl: string;
  hybrid: HybridService;
  pubsub: PubSubService;
  bus: Bus;
  /** Set when durable hubs keep their events in JetStream. */
  readonly jetstream: JetStreamAccess | undefined;
  /** A worker's private socket (a path in the workers' own folder) for legs the other workers relay; undefined when not a worker. */
  privateSocket: string | undefined;
  metrics: RelayMetrics;
  /**
   * Reads the config again (SIGHUP, POST /$relay/reload) and applies it, and
   * the TLS certificates; a config that does not load changes nothing.
   */
  reload(reason: 'signal' | 'api'): ReloadOutcome;
  /** Stops accepting, tells listeners (1001) and clients (1012) to reconnect elsewhere, drains up to timeouts.shutdownMs. */
  close(): Promise<void>;
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return hostBeforePort(host);
}

/** publicUrl with its scheme turned into the WebSocket one, no trailing slash. */
export function rendezvousBaseFor(publicUrl: string): string {
  return publicUrl.replace(/\/+$/, '').replace(/^http(s?):/i, 'ws$1:');
}

export interface StartOptions {
  /**
   * Loads the config again, as at start (file, environment, flags, secrets,
   * the serve-time checks); throws ConfigError naming the key that failed.
   * Without it the relay cannot reload.
   */
  loadConfig?: () => RelayConfig;
  /** This relay is worker N of `serve --workers` (worker-cluster.ts): it takes connections handed over by the others. */
  worker?: number;
  /** After a reload through POST /$relay/reload succeeded (a worker passes it on to the others). */
  onApiReload?: () => void;
}

export async function startRelay(config: RelayConfig, log: Logger, options: StartOptions = {}): Promise<RunningRelay> {
  // Before anything is bound: a relay in a process that goes on (not `serve`) would keep its port after the throw.
  checkBusFiles(config);
  const metrics = new RelayMetrics(config.nodeId);
  // No bound on a whole request (requestTimeout 0): relayed bodies stream for
  // as long as they take. Its head is bounded by timeouts.headersMs (Node
  // answers 408 through clientError below), checked four times per bound.
  const { headersMs, firstByteMs } = config.timeouts;
  const httpOptions: ServerOptions = {
    requestTimeout: 0,
    headersTimeout: headersMs,
    connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(headersMs / 4))),
    maxHeaderSize: MAX_HEADER_BYTES,
  };
  const tls = config.listen.tls;
  // Refusals anyone can cause before a token is read (a connection past a limit, a silent one, a bad PROXY header):
  // ten lines a minute per limit (or reason), the rest counted in the next (`suppressed`); each is in the metrics.
  // Before, one warn line per refused connection: a client connecting in a loop wrote as many as it could open.
  const refusalLines = new KeyedLogAllowance();
  const refusalLogged = (limit: string, fields: Record<string, unknown>) =>
    refusalLines.write(limit, (extra) => log.warn({ event: 'limit.reached', limit, ...fields, ...extra }));
  const secure = tls && createTlsServer(tls, httpOptions, firstByteMs, log, (set) => {
    metrics.certificateExpiry.set({ certificate: 'server' }, set.notAfter);
    metrics.certificateExpiry.set({ certificate: 'chain' }, set.chainNotAfter);
  });
  const server: Server = secure ? secure.server : createServer(httpOptions);
  const certificates = secure?.certificates;
  const proxyTrust = new ProxyTrust(config.listen.trustProxy);
  // Before the relay's own connection listeners: Node's are held back until a connection's PROXY header is read.
  const proxyFront = config.listen.proxyProtocol
    ? new ProxyProtocolFront(server, Boolean(tls), {
        trusts: (address) => proxyTrust.trusts(address),
        headerMs: Math.min(headersMs, firstByteMs),
        refused: (socket, reason, detail) => {
          metrics.proxyProtocolRefusals.inc({ reason });
          refusalLines.write(`proxy:${reason}`, (extra) => log.warn({ event: 'proxy_protocol.refused', reason, detail, address: socket.remoteAddress, ...extra }));
        },
      })
    : undefined;
  /** Bytes a connection read that were no request's (its PROXY header); undefined while that header is read. */
  const preambleBytes = (socket: Socket): number | undefined => (proxyFront ? proxyFront.preambleBytes(socket) : 0);
  // Every open connection: those of before a shutdown began are waited on by the drain;
  // those accepted during it (answered 503 ShuttingDown, or a listener's rendezvous leg for
  // work whose sender's connection is waited on) are only cut at its end.
  const sockets = new Set<Duplex>();
  const lateSockets = new Set<Duplex>();
  /** Set once close() begins: the drain. */
  let closing = false;
  const httpConnections = new HttpConnections(config.limits.httpConnectionsPerNode, firstByteMs, {
    refused: (socket, open) => {
      metrics.limitRefused('httpConnectionsPerNode', true);
      refusalLogged('httpConnectionsPerNode', { address: connectionPeer(socket).address, open });
      // Before its TLS handshake no answer can be written: the connection is closed.
      if (tls && !(socket instanceof TLSSocket)) socket.destroy();
      else answerAndClose(socket, 'HttpConnectionLimitReached');
    },
    refusedAddress: (socket, open) => {
      metrics.limitRefused('httpConnectionsPerAddress', true);
      refusalLogged('httpConnectionsPerAddress', { address: socket.remoteAddress, open });
      if (tls && !(socket instanceof TLSSocket)) socket.destroy();
      else answerAndClose(socket, 'AddressHttpConnectionLimitReached');
    },
    silent: (socket) => {
      metrics.limitRefused('firstByteMs', true);
      refusalLogged('firstByteMs', { address: connectionPeer(socket).address });
      answerAndClose(socket, 'RequestTimeout');
    },
    idle: (socket) => {
      metrics.limitRefused('headersMs', true);
      refusalLogged('headersMs', { address: connectionPeer(socket).address, between: 'requests' });
      answerAndClose(socket, 'RequestTimeout');
    },
  }, preambleBytes, (address) => proxyTrust.trusts(address));
  httpConnections.perAddressLimit = config.limits.httpConnectionsPerAddress;
  httpConnections.betweenRequestsMs = headersMs;
  // With TLS, the client-CA changes so far: the TLS settings each TCP connection is accepted under. Node gives a
  // connection the TLS settings (CAs, session ticket keys) of its accept, so only a handshake of a connection
  // accepted since the last change was checked against the CAs of now (hybrid-service.ts noteHandshake, set
  // once the hybrid service is there).
  let clientCaChanges = 0;
  let noteHandshake: ((socket: TLSSocket, current: boolean) => void) | undefined;
  server.on('connection', (socket: Socket) => {
    // With TLS this is the TCP socket under the TLS one: it counts while its handshake runs, then the TLS one does.
    if (tls) httpConnections.handshaking(socket, clientCaChanges);
    else httpConnections.accepted(socket);
    const set = closing ? lateSockets : sockets;
    set.add(socket);
    socket.on('close', () => {
      set.delete(socket);
    });
  });
  // With TLS, what a connection has sent is read off its TLS socket (the TCP one under it counts
  // handshake bytes): the drain waits on those of before it began that sent a request's byte.
  const secureSockets = new Set<TLSSocket>();
  if (tls) {
    server.on('secureConnection', (socket: TLSSocket) => {
      const acceptedUnder = httpConnections.accepted(socket);
      noteHandshake?.(socket, acceptedUnder === clientCaChanges);
      if (closing) return;
      secureSockets.add(socket);
      socket.on('close', () => secureSockets.delete(socket));
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `${tls ? 'https' : 'http'}://${hostForUrl(config.listen.host)}:${port}`;
  const publicUrl = (config.publicUrl ?? url).replace(/\/+$/, '');
  if (!config.publicUrl && (config.listen.host === '0.0.0.0' || config.listen.host === '::')) {
    log.warn({ event: 'config.public_url_guessed', publicUrl }, 'set publicUrl: listeners on other hosts cannot dial 127.0.0.1');
  }
  const bus = createBus(config, log);
  bus.onConnectionChange((connected) => {
    if (!connected) return;
    // An event that fits limits.pubsubMessageBytes but not the server's max_payload is refused (413, ack BadRequest).
    const { pubsubMessageBytes, controlMessageBytes } = config.limits;
    if (bus.maxPayload < pubsubMessageBytes) {
      log.warn({ event: 'bus.max_payload_below_limits', maxPayload: bus.maxPayload, pubsubMessageBytes }, "events larger than the NATS server's max_payload are refused: raise max_payload");
    }
    // A listener's answer on its control channel (a head and a body, each up to limits.controlMessageBytes) goes to a
    // sender on another edge as one bus message: past max_payload it is 502 BadListenerResponse there, 200 on its own.
    if (bus.maxPayload < 2 * controlMessageBytes + ANSWER_ENVELOPE_BYTES) {
      log.warn(
        { event: 'bus.max_payload_below_answers', maxPayload: bus.maxPayload, controlMessageBytes },
        "a listener's control-channel answer larger than the NATS server's max_payload fails 502 for senders on other edges: raise max_payload to twice limits.controlMessageBytes",
      );
    }
  });
  const subjects = new Subjects(config.bus.subjectPrefix);
  let jetstream = createJetStream(bus, config, log);
  const worker = options.worker;
  // Legs other workers relayed here (TLS ones cannot change process) after checking them.
  const vouched = new WeakSet<IncomingMessage>();
  const peers = worker === undefined ? undefined : { index: worker, handOff, vouchedFor: (req: IncomingMessage) => vouched.has(req) };
  const hybrid = new HybridService(config, log, rendezvousBaseFor(publicUrl), bus, subjects, metrics, peers);
  hybrid.keepListenersWhile = () => pubsub.systemEventsPending() > 0;
  // Other client CAs: listeners whose certificates they no longer sign are closed, not left to fail every accept.
  if (certificates) {
    certificates.onClientCasChanged = (ca) => {
      // No session from before resumes on a connection accepted from now on (a resumption skips the certificate
      // check): its handshake checks the client's certificate against the new CAs, and the hybrid service trusts it.
      clientCaChanges++;
      secure?.server.setTicketKeys(randomBytes(48));
      hybrid.recheckClientCertificates(ca);
    };
    noteHandshake = (socket, current) => hybrid.noteHandshake(socket, current);
  }
  if (worker !== undefined) {
    // A rendezvous leg another worker accepted: read here as if accepted here.
    onHandOff((socket, bytes) => {
      // Its PROXY header, if any, was read by the worker that accepted it. (A rendezvous leg: its peer is only logged.)
      proxyFront?.skipHeader(socket);
      server.emit('connection', socket);
      socket.emit('data', bytes);
      socket.resume();
    });
  }
  const pubsub = new PubSubService(config, log, publicUrl, bus, subjects, metrics, jetstream);
  // Event handlers at hc://{entity}/... are relayed HTTP requests to that hybrid connection's listener.
  pubsub.useRelayedRequests({ request: (entity, target, request) => hybrid.relayRequest(entity, target, request) });
  // Listener presence (hybridConnections[].presence) as JSON messages to a hub group, sent again until they go through.
  const presence = new ListenerPresence((hub, group, data) => pubsub.sendToGroup(hub, group, data), bus, log);
  hybrid.presence = (notice) => presence.announce(notice);
  const startJetStream = (js: JetStreamAccess) => {
    const streams = PubSubService.streamSpecs(config, subjects);
    const bucket = { name: `${config.bus.jetstream.streamPrefix}_sessions`, ttlMs: sessionBucketTtlMs(config.timeouts.sessionRetainMs) };
    // Each time JetStream becomes ready, not only the first: an edge that started while its server had
    // no JetStream reads its durable hubs' streams once a server with it is reached.
    js.onReady(() => void pubsub.startStreams());
    void js.start(streams, bucket);
  };
  if (jetstream) startJetStream(jetstream);
  // Three gauges read the pub/sub counts in one scrape: the connections are scanned once for them all.
  let scraped: ReturnType<PubSubService['openCounts']> | undefined;
  const openCounts = () => {
    if (!scraped) {
      scraped = pubsub.openCounts();
      queueMicrotask(() => (scraped = undefined));
    }
    return scraped;
  };
  metrics.watch({
    connections: () => ({ ...hybrid.openConnections(), pubsub: openCounts().attached }),
    listenersPerEntity: () => hybrid.listeners.counts(),
    sessionsRetained: () => openCounts().retained,
    sessionsBehind: () => openCounts().behind,
    bus: () => bus,
    busRoundTrip: () => bus.roundTrip(),
    jetstreamStoring: () => jetstream?.storingByStream() ?? new Map(),
    logLinesDropped: () => droppedLogLines(log),
  });
  const manageAuth = new ManageAuth(config, new URL(publicUrl).hostname, hybrid.authorizer);
  const status = new ClusterStatus({ config, bus, subjects, hybrid, pubsub, shuttingDown: () => closing, log });
  hybrid.countListeners = (entityKey) => status.listenersOf(entityKey);
  const dashboard = new OpsDashboard({ config, bus, subjects, hybrid, pubsub, metrics, publicUrl, shuttingDown: () => closing, log });

  // Without this listener Node answers 100 Continue itself, before anything is checked (expect-continue.ts).
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    oweContinue(res);
    server.emit('request', req, res);
  });
  // One request of a connection at a time, none after the answer that closes it (connection-close.ts).
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (framingFaulty(req)) res.shouldKeepAlive = false;
    // Its next request head has timeouts.headersMs from its answer (http-connections.ts).
    httpConnections.requestArrived(req.socket);
    whenItsTurn(req, res, handleRequest);
  });
  // An Expect other than 100-continue (RFC 9110 10.1.1) is refused as the relay refuses any request: in its turn, with
  // the relay's error, and what is left of its body bounded (node:http's own 417 kept the connection, and a body
  // trickled after it held its place in httpConnectionsPerNode for good; found by the sender-side review).
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    httpConnections.requestArrived(req.socket);
    boundUnreadAnswer(req, res);
    whenItsTurn(req, res, (turnReq, turnRes) => {
      if (closing) turnRes.shouldKeepAlive = false;
      if (carriesBody(turnReq)) boundUnreadBody(turnReq, turnRes, config.timeouts.headersMs);
      failEdgeRequest(turnRes, 'ExpectationFailed');
    });
  });
  /**
   * An answer may go unread for timeouts.senderStallMs at most once written (unread-answers.ts). For every answer but
   * a relayed response and a pub/sub REST answer, which bound their own (hybrid's watchSender, rest-api's
   * cutWhenUnread): not asked for on the relayed path, where a listener per request cost about 2 % of its instructions.
   */
  function boundUnreadAnswer(req: IncomingMessage, res: ServerResponse): void {
    const ms = () => config.timeouts.senderStallMs;
    boundEveryAnswer(res, req.socket, ms, () => log.info({ event: 'http.reader_stalled', ms: ms(), address: clientAddress(req) }));
  }
  function handleRequest(req: IncomingMessage, res: ServerResponse): void {
    // While draining, a connection is not kept for another request.
    if (closing) res.shouldKeepAlive = false;
    if (!hostLinesValid(req.rawHeaders)) {
      res.shouldKeepAlive = false;
      return failEdgeRequest(res, 'BadRequest', 'more than one Host header, or one that is not a host');
    }
    proxyTrust.apply(req);
    if (carriesBody(req)) boundUnreadBody(req, res, config.timeouts.headersMs);
    const r = route(req.url);
    if (r.kind !== 'hybrid-http' && r.kind !== 'pubsub-rest') boundUnreadAnswer(req, res);
    // A relayed request's sender is checked first (hybrid-service.ts); the rest read their bodies as before.
    if (r.kind !== 'hybrid-http') sendContinue(res);
    switch (r.kind) {
      case 'hybrid-http':
        return hybrid.handleHttp(req, res, r);
      case 'ops':
        if (handleOps(r.name, req, res, { shuttingDown: () => closing, bus: () => bus, jetstream: jetstream && durableHubs(bus, config).length > 0 ? () => jetstream! : undefined, followsStreams: () => pubsub.followsStreams(), degraded: () => pubsub.degraded() })) return;
        if (r.name === 'metrics') return void serveMetrics(req, res, metrics, manageAuth, config.metrics);
        if (r.name === 'status') return void status.serve(req, res, manageAuth);
        if (r.name === 'reload') return serveReload(req, res, manageAuth, options.loadConfig && (() => reloadByApi()));
        if (dashboard.handle(r.name, req, res, manageAuth)) return;
        return failEdgeRequest(res, 'NotFound');
      case 'pubsub-rest':
        return pubsub.handleRest(req, res, r.hub, r.segments, r.params, r.path, r.query);
      case 'hybrid-ws':
      case 'pubsub-client':
        return failEdgeRequest(res, 'NotWebSocket');
      case 'bad-request':
        return failEdgeRequest(res, 'BadRequest');
      default:
        return failEdgeRequest(res, 'NotFound');
    }
  }

  // WebSocket connections held by this node (limits.connectionsPerNode), and
  // per client address, held (limits.connectionsPerAddress) and new ones
  // (limits.connectRatePerAddress). A listener's rendezvous leg completes a
  // connection already admitted: it is counted by the node, never refused.
  const upgraded = new Set<Duplex>();
  const upgradedByAddress = new ConnectionsByAddress();
  const connectRate = new ConnectionRateLimiter(config.limits.connectRatePerAddress, config.limits.connectBurstPerAddress);
  const admit = (req: IncomingMessage, socket: Duplex, rendezvousLeg: boolean): AdmissionRefusal | undefined => {
    if (!rendezvousLeg) {
      const address = clientAddress(req);
      const perAddress = config.limits.connectionsPerAddress;
      const heldByAddress = address ? upgradedByAddress.heldBy(address) : 0;
      let refused: AdmissionRefusal | undefined;
      let limit = '';
      let open = upgraded.size;
      if (upgraded.size >= config.limits.connectionsPerNode) [refused, limit] = ['ConnectionLimitReached', 'connectionsPerNode'];
      else if (perAddress > 0 && heldByAddress >= perAddress) [refused, limit, open] = ['AddressConnectionLimitReached', 'connectionsPerAddress', heldByAddress];
      else if (!connectRate.take(address)) [refused, limit] = ['TooManyConnectionAttempts', 'connectRatePerAddress'];
      if (refused) {
        metrics.limitRefused(limit, true);
        refusalLogged(limit, { address, open });
        return refused;
      }
      // Counted while it is open, whatever the limit (a reload may turn it on or lower it).
      if (address) {
        const key = upgradedByAddress.add(address);
        socket.once('close', () => upgradedByAddress.release(key));
      }
    }
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    return undefined;
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!hostLinesValid(req.rawHeaders)) {
      socket.on('error', () => socket.destroy());
      return failEdgeUpgrade(socket, 'BadRequest', 'more than one Host header, or one that is not a host');
    }
    // RFC 9112 3.2: an HTTP/1.1 request without Host is 400. node:http refuses a plain one (requireHostHeader) but
    // hands an upgrade on without (found by review: it was served).
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      socket.on('error', () => socket.destroy());
      return failEdgeUpgrade(socket, 'BadRequest', 'no Host header');
    }
    proxyTrust.apply(req);
    const r = route(req.url);
    if ((r.kind === 'hybrid-ws' || r.kind === 'pubsub-client') && asksOtherVersion(req)) {
      socket.on('error', () => socket.destroy());
      return failEdgeUpgrade(socket, 'WebSocketVersionUnsupported', undefined, { 'Sec-WebSocket-Version': '13' });
    }
    if (r.kind === 'hybrid-ws' || r.kind === 'pubsub-client') {
      // A WebSocket from now on, counted as one (connectionsPerNode). Any other upgrade stays a plain
      // HTTP connection and in that count: an h2c request served below was counted against neither.
      httpConnections.upgraded(socket as Socket);
      const action = r.kind === 'hybrid-ws' ? paramInAnyCase(r.params, 'sb-hc-action') : null;
      const refused = admit(req, socket, action === 'accept' || action === 'request');
      if (refused) {
        socket.on('error', () => socket.destroy());
        return failEdgeUpgrade(socket, refused);
      }
    }
    if (r.kind === 'hybrid-ws') return hybrid.handleUpgrade(req, socket, head, r.entity, r.params, r.below);
    if (r.kind === 'pubsub-client') return pubsub.handleUpgrade(req, socket, head, r.hub, r.params, r.path);
    socket.on('error', () => socket.destroy());
    // An upgrade to another protocol (curl --http2 and Java's HttpClient offer `h2c` on http://) is ignored, as
    // an HTTP/1.1 server may (RFC 9110 7.8), and the request served as HTTP/1.1 (before: 404 for every one of them).
    // Node handed the socket over after the head, so no next request is read on it: the answer closes it.
    // A body comes after the head as Node left it: read here up to its Content-Length (curl --http2 -d offers
    // h2c on a POST); a chunked one is refused 411, as this path does not decode chunks.
    if (!offersWebSocket(req) && socket instanceof Socket) {
      const length = req.headers['transfer-encoding'] === undefined ? Number(req.headers['content-length'] ?? 0) : NaN;
      if (!Number.isSafeInteger(length) || length < 0) return failEdgeUpgrade(socket, 'LengthRequired');
      // What Node's server does for the request it parses itself: a client waiting for it sends no body.
      if (length > 0 && /^100-continue$/i.test(String(req.headers.expect ?? '').trim())) socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      return serveIgnoringUpgrade(req, socket, head, length);
    }
    // An MQTT or Socket.IO client given a URL by @azure/web-pubsub's getClientAccessToken({ clientProtocol }) is told why.
    const other = otherClientProtocol(r);
    const why = other && `${other} clients of Web PubSub are not supported: this relay serves Web PubSub clients at /client/hubs/{hub}`;
    failEdgeUpgrade(socket, r.kind === 'bad-request' ? 'BadRequest' : 'NotFound', why);
  };

  /**
   * Serves an upgrade request whose upgrade is ignored as a plain request, on a connection that closes after it;
   * its body, `length` bytes, read from `head` and the socket into the request as Node's parser would have.
   */
  const serveIgnoringUpgrade = (upgradeReq: IncomingMessage, socket: Socket, head: Buffer, length: number) => {
    const req = length === 0 ? upgradeReq : requestWithBody(upgradeReq, socket, head, length);
    if (req !== upgradeReq) {
      proxyTrust.apply(req);
      if (vouched.has(upgradeReq)) vouched.add(req);
    }
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    // The sender's end (a half-close) ends an exchange not yet answered, as Node's own server does (it aborts the
    // request and ends the socket): before, an answer that was waited on or streamed (a live trace) held the
    // connection, and a trace viewer its place, until a write failed or the answer's own timeout.
    socket.once('end', () => {
      if (!res.writableFinished) socket.destroy();
    });
    // Node took its 'drain' listener off the socket with the upgrade: without this one, an answer larger than
    // the socket's buffer waited for a 'drain' of the response that never came, and stalled.
    const drained = () => {
      if (!res.writableFinished) res.emit('drain');
    };
    socket.on('drain', drained);
    res.once('finish', () => {
      socket.off('drain', drained);
      res.detachSocket(socket);
      socket.destroySoon();
    });
    server.emit('request', req, res);
  };
  // An upgrade pipelined behind an answer still being given waits for it (connection-close.ts).
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Never idle again: the connection becomes a WebSocket, or closes after the answer.
    httpConnections.requestArrived(socket as Socket);
    upgradeWhenItsTurn(req, socket, head, (early) => onUpgrade(req, socket, early));
  });

  // A worker of `serve --workers` also listens on a private Unix socket, in a
  // folder only this user may use, for TLS legs the other workers relay to it;
  // only they know its secret. (A TCP port on 127.0.0.1 was free for any local
  // process to bind once its worker died: the next relayed leg gave it the secret.)
  const privateSocket = worker === undefined ? undefined : privateSocketPath(worker);
  const privateServer = privateSocket === undefined ? undefined : createServer(httpOptions);
  if (privateServer && privateSocket !== undefined) {
    privateServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (!relayedByWorker(req)) return void socket.destroy();
      vouched.add(req);
      onUpgrade(req, socket, head);
    });
    privateServer.on('request', (_req: IncomingMessage, res: ServerResponse) => res.writeHead(404).end());
    // Exclusive: in a cluster worker a plain listen would be the primary's, shared among all the workers. The
    // socket of this worker's predecessor under the same number (killed: nothing removed it) is removed first.
    rmSync(privateSocket, { force: true });
    await new Promise<void>((resolve, reject) => {
      privateServer.once('error', reject);
      privateServer.listen({ path: privateSocket, exclusive: true }, () => {
        privateServer.off('error', reject);
        resolve();
      });
    });
  }

  // A request Node could not take: a head over MAX_HEADER_BYTES (431), not
  // complete within timeouts.headersMs (408), or malformed (400). Answered
  // only while no response of the connection has begun: bytes written into a
  // response would corrupt it.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // A TLS handshake that did not finish: an HTTP answer could never be written through it, and a
    // socket left to write one stayed open for good. Only one that ran out of time (timeouts.firstByteMs:
    // tls.ts) is that limit; the rest (plain HTTP on the TLS port, an old TLS version, a scanner, a
    // client certificate refused) are the internet's noise, and counted as the limit they raised alerts.
    if (tls && (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || !(socket as TLSSocket & { _secureEstablished?: boolean })._secureEstablished)) {
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        metrics.limitRefused('firstByteMs', true);
        refusalLogged('firstByteMs', { address: connectionPeer(socket as Socket).address, tls: 'handshake' });
      } else {
        log.debug({ event: 'tls.handshake_failed', code: err.code, address: connectionPeer(socket as Socket).address });
      }
      socket.destroy();
      return;
    }
    const { code, detail } = clientErrorAnswer(err);
    if (code === 'RequestTimeout') {
      metrics.limitRefused('headersMs', true);
      refusalLogged('headersMs', { address: connectionPeer(socket as Socket).address });
    }
    const inFlight = (socket as { _httpMessage?: { headersSent: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) answerAndClose(socket, code, detail);
    else socket.destroy();
  });

  // CONNECT (a proxy's tunnel): nothing here is a proxy, and node:http, with no handler, dropped the connection
  // without an answer. Answered 501 and closed (the connection's bytes after the head are the tunnel's, not HTTP).
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    answerAndClose(socket, 'MethodNotImplemented', 'CONNECT: the relay is not a proxy');
  });

  // POST /$relay/reload: this edge reloads, and (a worker of serve --workers) asks the others to.
  const reloadByApi = (): ReloadOutcome => {
    const outcome = reload('api');
    if (outcome.ok) options.onApiReload?.();
    return outcome;
  };
  const reload = (reason: 'signal' | 'api'): ReloadOutcome => {
    if (closing) return { ok: false, problem: 'the relay is shutting down', shuttingDown: true };
    const certificateReason = reason === 'api' ? 'config' : reason;
    if (!options.loadConfig) {
      // On SIGHUP the certificates are read again even without a config file.
      certificates?.reload(certificateReason);
      return { ok: false, problem: 'this relay was not started from a config file' };
    }
    let next: RelayConfig;
    try {
      next = options.loadConfig();
    } catch (err) {
      log.error({ event: 'config.reload_refused', reason, err: (err as Error).message });
      // The certificates are still read again, as SIGHUP always did.
      certificates?.reload(certificateReason);
      return { ok: false, problem: (err as Error).message };
    }
    // listen.proxyProtocol stays on until a restart: a trustProxy emptied now would close every connection, the
    // reload endpoint's too (the config check asks for trustProxy only when the new config turns the protocol on).
    const refused = (problem: string): ReloadOutcome => {
      log.error({ event: 'config.reload_refused', reason, err: problem });
      return { ok: false, problem };
    };
    if (config.listen.proxyProtocol && next.listen.trustProxy.length === 0) {
      return refused('config: /listen/trustProxy: listen.proxyProtocol is on until a restart, and needs the load balancers that send the header');
    }
    // So is listen.tls.requestCert: a caFile dropped now left the handshake checking client certificates against
    // Node's default public roots, and requireClientCert "listeners" let in a certificate any of them signed, while
    // every listener of the configured CA was closed and refused (found by review).
    if (config.listen.tls?.requestCert && next.listen.tls && !next.listen.tls.caFile) {
      return refused('config: /listen/tls/caFile: listen.tls.requestCert is on until a restart, and needs the CA that signs client certificates');
    }
    // A durable hub needs JetStream, as at start-up (exit 78): one the connected NATS server lacks is refused, not
    // added to fail every publish (before, the reload was taken and the whole edge answered not ready until a restart).
    const lacking = durableHubsWithoutJetStream(bus, config, next, jetstream);
    if (lacking) return refused(lacking);
    // The certificate files are part of what is reloaded: bad ones refuse the reload before anything changes
    // (before, the reload answered 200 and the old certificate stayed, said only in the log, twice).
    const certificateProblem = certificates && next.listen.tls ? certificates.problemWith(next.listen.tls) : undefined;
    if (certificateProblem !== undefined) return refused(`${certificateProblem}; the certificate served (${certificates!.current.fingerprint}) is kept`);
    const changes = applyConfig(
      {
        live: config,
        log,
        hybrid,
        pubsub,
        proxyTrust,
        connectRate,
        httpConnections,
        certificates,
        certificateReason,
        jetstreamFor: (c) => {
          if (!jetstream && !closing) {
            jetstream = createJetStream(bus, c, log);
            if (jetstream) startJetStream(jetstream);
          }
          return jetstream;
        },
      },
      next,
    );
    // Logged at the more verbose of the old and new levels, so that the reload shows either way.
    const values = log.levels.values;
    const quieter = (values[config.log.level] ?? Infinity) > (values[log.level] ?? Infinity);
    if (!quieter) setLogLevel(log, config.log.level);
    log.info({ event: 'config.reloaded', reason, ...changes });
    if (quieter) setLogLevel(log, config.log.level);
    return { ok: true, changes };
  };

  log.info({ event: 'relay.listening', url, publicUrl });

  return {
    url,
    port,
    publicUrl,
    hybrid,
    pubsub,
    bus,
    get jetstream() {
      return jetstream;
    },
    privateSocket,
    metrics,
    reload,
    close: async () => {
      if (closing) return;
      closing = true;
      certificates?.close();
      log.info({ event: 'relay.stopping' });
      // Stop taking work; tell listeners (1001) and clients (1012) to reconnect elsewhere. The
      // port stays open until the end: new requests are answered 503 ShuttingDown (and
      // /$relay/ready 503), and listeners can still dial the rendezvous legs of work in flight.
      const deadline = performance.now() + config.timeouts.shutdownMs;
      // Pub/sub first: the connections it ends queue their disconnected events, which hc:// handlers get
      // through this edge's listeners, kept while such events are pending (hybrid.keepListenersWhile).
      pubsub.beginShutdown(deadline);
      hybrid.beginShutdown();
      dashboard.close();
      server.closeIdleConnections();
      // Drain: in-flight HTTP relays and relayed WebSockets finish, listeners
      // close once idle, reliable sessions wait for another node to take them,
      // connected/disconnected events reach the event handler (or are said lost).
      // A connection that never sent a byte carries no work: it is not waited on.
      const closeSplicesAt = deadline - Math.min(config.timeouts.closeHandshakeMs, config.timeouts.shutdownMs / 2);
      const working = () => [...(tls ? secureSockets : sockets)].filter((s) => (s as Socket).bytesRead > (preambleBytes(s as Socket) ?? Infinity)).length;
      while (performance.now() < deadline) {
        const busyListeners = hybrid.closeIdleListeners();
        const held = pubsub.sessionsAwaitingHandover();
        server.closeIdleConnections();
        if (working() === 0 && held === 0 && busyListeners === 0 && pubsub.systemEventsPending() === 0) break;
        // Relayed WebSockets still open near the end are closed (1001) with time for the close handshake.
        if (performance.now() >= closeSplicesAt) hybrid.closeRelayedWebSockets();
        await new Promise((r) => setTimeout(r, SHUTDOWN_POLL_MS));
      }
      // Events still queued are past the deadline now: each is logged as lost at once (an attempt in flight
      // ends by the deadline too); a moment for those lines to be written before relay.stopped.
      for (let waited = 0; pubsub.systemEventsPending() > 0 && waited < 250; waited += 10) await new Promise((r) => setTimeout(r, 10));
      const left = { sockets: working(), sessions: pubsub.sessionsAwaitingHandover(), systemEvents: pubsub.systemEventsPending() };
      if (left.sockets > 0 || left.sessions > 0 || left.systemEvents > 0) log.warn({ event: 'relay.shutdown_deadline', ...left });
      presence.close();
      hybrid.finishShutdown();
      pubsub.finishShutdown();
      httpConnections.close();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of [...sockets, ...lateSockets]) s.destroy();
      await stopped;
      status.close();
      privateServer?.close();
      jetstream?.close();
      // Drain the bus: what this node published (answers, hand-overs) reaches the others.
      await bus.close();
      log.info({ event: 'relay.stopped' });
    },
  };
}

/**
 * The request of `upgradeReq` with its body, `length` bytes, the first in `head`, the rest read
 * from `socket`: Node ends an upgrade request after its head, so a new one carries the body, with
 * backpressure (the socket paused while its buffer is full; Node's reader resumes it). Bytes after
 * the body are dropped (the connection closes after the answer); a socket closed before the whole
 * body arrived aborts the request, as Node does.
 */
function requestWithBody(upgradeReq: IncomingMessage, socket: Socket, head: Buffer, length: number): IncomingMessage {
  const req = new IncomingMessage(socket);
  req.method = upgradeReq.method;
  req.url = upgradeReq.url;
  req.httpVersion = upgradeReq.httpVersion;
  req.httpVersionMajor = upgradeReq.httpVersionMajor;
  req.httpVersionMinor = upgradeReq.httpVersionMinor;
  req.headers = upgradeReq.headers;
  req.rawHeaders = upgradeReq.rawHeaders;
  let left = length;
  const take = (chunk: Buffer) => {
    if (left === 0) return;
    const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
    left -= part.length;
    const more = req.push(part);
    if (left === 0) {
      req.complete = true;
      req.push(null);
    } else if (!more) socket.pause();
  };
  socket.on('data', take);
  // The sender ended (a half-close: Node's server sockets allow one), failed or closed before the whole body
  // came: the request is aborted and the connection closed, as Node does (before, an end held both for good).
  const cut = () => {
    if (left === 0) return;
    left = 0;
    req.destroy();
    socket.destroy();
  };
  socket.once('end', cut);
  socket.once('error', cut);
  socket.once('close', cut);
  if (head.length > 0) take(head);
  return req;
}

/** Whether a request's Upgrade header offers WebSocket. */
function offersWebSocket(req: IncomingMessage): boolean {
  return /(^|,)\s*websocket\s*(,|$)/i.test(req.headers.upgrade ?? '');
}

/**
 * Whether a request's framing cannot be trusted: an HTTP/1.0 message with Transfer-Encoding (RFC 9112 6.1), which
 * HTTP/1.0 does not have, so a proxy in front may frame it otherwise. The server processes it and closes the
 * connection after it; before, node:http decoded it as chunked and kept the connection for the bytes after it, which
 * such a proxy took for part of its body (or the other way round).
 */
function framingFaulty(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 1 && req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined;
}

/** Whether a request announces a body (chunked, or a Content-Length other than 0). */
function carriesBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
}
