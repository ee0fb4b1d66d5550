// The typed shape of a validated configuration (schemas/config.schema.json,
// with ajv's defaults applied). Keep the two in step: test/config checks that
// the shipped configs validate and that each default lands where this says.

export type Right = 'Listen' | 'Send' | 'Manage';

export interface SasRule {
  keyName: string;
  /** Always set once loaded: from the file, an environment variable or keyFile (config/secrets.ts). */
  key: string;
  keyFile?: string;
  rights: Right[];
  entity?: string;
}

/** What a sender may do on a hybrid connection: open a relayed WebSocket, or send an HTTP request. */
export type SenderKind = 'websocket' | 'http';

export interface HybridConnectionConfig {
  name: string;
  requiresClientAuthorization: boolean;
  /** What its listeners take; unset: both. */
  accepts?: SenderKind[];
  /** Listener presence events published to a hub group. */
  presence?: { hub: string; group: string };
}

export interface HubUpstreamConfig {
  url: string;
  timeoutMs: number;
}

export type SystemEventName = 'connect' | 'connected' | 'disconnected';

export interface EventHandlerConfig {
  /** http(s)://... or hc://{entity}/...; {hub} and {event} are replaced. */
  urlTemplate: string;
  /** `*`, a comma-separated list of event names, or '' (none). */
  userEventPattern: string;
  systemEvents: SystemEventName[];
  auth?: { type: 'none' | 'bearer'; token?: string };
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
}

export interface HubHistoryConfig {
  maxAgeSeconds?: number;
  maxMessages?: number;
  maxBytes?: number;
}

export interface HubConfig {
  name: string;
  /** Always set once loaded: from the file, an environment variable or accessKeyFile (config/secrets.ts). */
  accessKey: string;
  accessKeyFile?: string;
  /** Accepted at all times beside accessKey (Azure's secondary key); from the file, an environment variable or secondaryAccessKeyFile. */
  secondaryAccessKey?: string;
  secondaryAccessKeyFile?: string;
  eventHandlers?: EventHandlerConfig[];
  /** Deprecated: read as one event handler taking every user event. */
  upstream?: HubUpstreamConfig;
  /** On the NATS bus with JetStream: keep events in JetStream (default) or send them on core NATS. */
  durable: boolean;
  history?: HubHistoryConfig;
}

export interface JetStreamConfig {
  enabled: boolean;
  /** Undefined: 3 when the cluster has 3 or more servers, else 1. */
  replicas?: number;
  storage: 'file' | 'memory';
  streamPrefix: string;
  publishTimeoutMs: number;
  /** After an unanswered try, how long a publish goes on with the same id (durable-publish.ts, UNSURE_RETRY_MS). */
  unsureRetryMs: number;
  checkpointIntervalMs: number;
  readyTimeoutMs: number;
}

export interface BusConfig {
  kind: 'memory' | 'nats';
  subjectPrefix: string;
  servers?: string[];
  randomizeServers: boolean;
  user?: string;
  pass?: string;
  token?: string;
  credsFile?: string;
  nkeyFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  reconnectTimeWaitMs: number;
  connectTimeoutMs: number;
  pingIntervalMs: number;
  requestTimeoutMs: number;
  gatherStallMs: number;
  replayWindowMs: number;
  replayBufferBytes: number;
  jetstream: JetStreamConfig;
}

export interface ListenTlsConfig {
  certFile: string;
  keyFile: string;
  caFile?: string;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  requestCert: boolean;
  requireClientCert: 'none' | 'listeners' | 'all';
}

export interface RelayConfig {
  nodeId: string;
  listen: { host: string; port: number; tls?: ListenTlsConfig; trustProxy: string[]; proxyProtocol: boolean };
  publicUrl?: string;
  log: {
    level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
    /** Bytes of log lines that may wait for stderr; past it lines are dropped and counted (read at start). */
    bufferBytes: number;
  };
  namespaceHosts: string[];
  sas: SasRule[];
  rotationGraceSeconds: number;
  autoCreate: boolean;
  hybridConnections: HybridConnectionConfig[];
  pubsub: { hubs: HubConfig[] };
  bus: BusConfig;
  limits: {
    listenersPerEntity: number;
    controlMessageBytes: number;
    spliceBufferBytes: number;
    listenerBufferBytes: number;
    pendingPerEntity: number;
    pubsubMessageBytes: number;
    outboundBufferBytes: number;
    sessionBufferMessages: number;
    sessionBufferBytes: number;
    ackIdsPerConnection: number;
    groupsPerConnection: number;
    requestsInFlightPerConnection: number;
    connectionsPerNode: number;
    httpConnectionsPerNode: number;
    httpConnectionsPerAddress: number;
    connectionsPerAddress: number;
    connectionsPerHub: number;
    connectsPendingPerHub: number;
    connectRatePerAddress: number;
    connectBurstPerAddress: number;
  };
  metrics: {
    requireManage: boolean;
    bearerTokenFile?: string;
    /** Not a config key: read from bearerTokenFile when the config is loaded. */
    bearerToken?: string;
  };
  timeouts: {
    acceptMs: number;
    httpResponseMs: number;
    keepAliveIntervalMs: number;
    idleMs: number;
    headersMs: number;
    firstByteMs: number;
    closeHandshakeMs: number;
    /** How long a relayed response may wait for a sender that takes none of it. */
    senderStallMs: number;
    /** How long past its token's expiry an open control channel may still send renewToken. */
    tokenGraceMs: number;
    shutdownMs: number;
    sessionRetainMs: number;
  };
}
