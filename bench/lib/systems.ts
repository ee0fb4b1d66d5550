// The systems under test, started on 127.0.0.1 for one scenario run: our relay
// (memory or NATS bus), our bridge (`edge-relay bridge -L` and `-R`),
// nats-server with its WebSocket listener, Mosquitto with its WebSocket
// listener, socat, nginx as a reverse proxy, haproxy in tcp mode, and an
// iperf3 server. Peers' configs are written at run time into a temp dir;
// every port is on 127.0.0.1.
import { userInfo } from 'node:os';
import { createSasToken, resourceForUrl } from '../../src/auth/sas-token.ts';
import { clientAccessUrl } from '../../src/pubsub/client-access-url.ts';
import { freePort, onFreePorts, ROOT, startProcess, tempDir, writeTemp, type Started } from './processes.ts';

export const HUB = 'bench';
export const HUB_KEY = 'bench-hub-key-0123456789abcdef';
export const ENTITY = 'bench';
const ROOT_KEY = 'bench-root-key-0123456789abcdef';

export interface RelayNode extends Started {
  port: number;
}

/**
 * Our processes run as users run them: through bin/edge-relay, the launcher
 * that sets the allocator's environment (GLIBC_TUNABLES) and execs node in its
 * place, so the pid the bench measures is node's.
 */
const EDGE_RELAY_BIN = `${ROOT}bin/edge-relay`;

/** With BENCH_PROFILE_DIR set, node's `--cpu-prof` flags (through the launcher): each of our processes writes a CPU profile there on exit (see bench/profile-summary.ts). */
function edgeRelayEnv(): NodeJS.ProcessEnv {
  const dir = process.env.BENCH_PROFILE_DIR;
  return dir ? { ...process.env, EDGE_RELAY_NODE_FLAGS: `--cpu-prof --cpu-prof-dir=${dir}` } : process.env;
}

/**
 * Our relay, one `edge-relay serve` process. `serveArgs` go after `serve`
 * (the hook for a `--workers N` row: the CPU meter already counts a process's
 * descendants, so workers forked by node:cluster are measured with it).
 */
export async function startRelay(options: RelayOptions & { serveArgs?: string[] } = {}): Promise<RelayNode> {
  const file = relayConfigFile(options);
  const started = await startProcess(EDGE_RELAY_BIN, ['serve', '--config', file, ...(options.serveArgs ?? [])], /listening on http:\/\/127\.0\.0\.1:(\d+)/, { env: edgeRelayEnv() });
  return { ...started, port: Number(started.match[1]) };
}

export interface RelayOptions {
  nodeId?: string;
  natsUrl?: string;
  jetstream?: boolean;
  /** bus.jetstream.storage (the relay's default, file, unless given). */
  storage?: 'file' | 'memory';
  limits?: Record<string, number>;
  extra?: Record<string, unknown>;
}

/** The bench's relay config (any free port on 127.0.0.1, the bench's keys, hub and entity), written to a temp file; returns its path. */
export function relayConfigFile(options: RelayOptions = {}): string {
  const config = {
    nodeId: options.nodeId ?? 'bench',
    listen: { host: '127.0.0.1', port: 0 },
    log: { level: 'warn' },
    sas: [{ keyName: 'root', key: ROOT_KEY, rights: ['Manage'] }],
    autoCreate: true,
    hybridConnections: [{ name: ENTITY, requiresClientAuthorization: false }],
    pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] },
    // The NATS rows measure the core NATS path unless a scenario asks for durable hubs (JetStream).
    bus: options.natsUrl ? { kind: 'nats', servers: [options.natsUrl], jetstream: { enabled: options.jetstream ?? false, ...(options.storage ? { storage: options.storage } : {}) } } : { kind: 'memory' },
    // The load generator opens thousands of connections from one address: no per-address rate or count.
    limits: { connectRatePerAddress: 0, connectionsPerAddress: 0, httpConnectionsPerAddress: 0, ...options.limits },
    // A row's relay is torn down, not drained: what its clients left (reliable sessions waiting
    // for a taker on another edge) is cut after 0.5 s, not after the 3 s the stop allows.
    timeouts: { shutdownMs: 500 },
    ...options.extra,
  };
  return writeTemp(tempDir(), 'relay.json', JSON.stringify(config));
}

/** Path and query of a pub/sub client connection to the bench hub. */
export function clientPath(port: number, options: { roles?: string[]; groups?: string[]; userId?: string }): string {
  const url = new URL(clientAccessUrl(`http://127.0.0.1:${port}`, HUB, HUB_KEY, options));
  return url.pathname + url.search;
}

/** SAS token with the root (Manage) key for an entity URL on this relay. */
export function sasToken(port: number, path: string): string {
  return createSasToken(resourceForUrl(`http://127.0.0.1:${port}${path}`), 'root', ROOT_KEY, Math.floor(Date.now() / 1000) + 3600);
}

export interface NatsServer extends Started {
  port: number;
  wsPort: number;
}

/** nats-server with its WebSocket listener; with `jetstream`, JetStream on (its store in a temp dir). */
export function startNatsServer(options: { jetstream?: boolean } = {}): Promise<NatsServer> {
  return onFreePorts(() => startNatsServerOnce(options));
}

async function startNatsServerOnce(options: { jetstream?: boolean } = {}): Promise<NatsServer> {
  const dir = tempDir();
  const wsPort = await freePort();
  const jetstream = options.jetstream ? `jetstream {\n  store_dir: "${dir}/js"\n}\n` : '';
  const file = writeTemp(dir, 'nats.conf', `websocket {\n  host: "127.0.0.1"\n  port: ${wsPort}\n  no_tls: true\n}\n${jetstream}`);
  const started = await startProcess('nats-server', ['-c', file, '-a', '127.0.0.1', '-p', '-1'], /Listening for client connections on 127\.0\.0\.1:(\d+)/, { cwd: dir });
  return { ...started, port: Number(started.match[1]), wsPort };
}

export interface Mosquitto extends Started {
  wsPort: number;
}

export function startMosquitto(): Promise<Mosquitto> {
  return onFreePorts(() => startMosquittoOnce());
}

async function startMosquittoOnce(): Promise<Mosquitto> {
  const dir = tempDir();
  const wsPort = await freePort();
  const tcpPort = await freePort();
  // Mosquitto 2.0.11 refuses to run with only a websockets listener ("Unable
  // to start any listening sockets"), so it gets an MQTT one beside it.
  const file = writeTemp(
    dir,
    'mosquitto.conf',
    `listener ${wsPort} 127.0.0.1\nprotocol websockets\nlistener ${tcpPort} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n`,
  );
  const started = await startProcess('mosquitto', ['-c', file], /mosquitto version \S+ running/, { cwd: dir });
  return { ...started, wsPort };
}

export interface Socat extends Started {
  port: number;
}

/**
 * socat relaying TCP from a fresh port to `targetPort` (default options): one
 * connection and out, or with `fork` a child per connection (iperf3 opens a
 * control and a data connection).
 */
export function startSocat(targetPort: number, options: { fork?: boolean } = {}): Promise<Socat> {
  return onFreePorts(() => startSocatOnce(targetPort, options));
}

async function startSocatOnce(targetPort: number, options: { fork?: boolean } = {}): Promise<Socat> {
  const port = await freePort();
  const listen = `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr${options.fork ? ',fork' : ''}`;
  const started = await startProcess('socat', ['-d', '-d', listen, `TCP:127.0.0.1:${targetPort}`], /listening on/);
  return { ...started, port };
}

export interface Proxy extends Started {
  port: number;
}

/**
 * nginx as a reverse proxy to the HTTP server on `upstreamPort`, with a
 * keep-alive pool to it, `workers` worker processes (a number or `auto`, one
 * per core). Runs in the foreground (`daemon off`) as the current user, with
 * its pid file, error log and temp paths in a temp dir; no access log.
 */
export function startNginx(upstreamPort: number, workers: number | 'auto'): Promise<Proxy> {
  return onFreePorts(() => startNginxOnce(upstreamPort, workers));
}

async function startNginxOnce(upstreamPort: number, workers: number | 'auto'): Promise<Proxy> {
  const dir = tempDir();
  const port = await freePort();
  // As root the master would hand its workers to `nobody`; keep them ours.
  const user = process.getuid?.() === 0 ? `user ${userInfo().username};\n` : '';
  const conf = `${user}daemon off;
master_process on;
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  upstream answerer {
    server 127.0.0.1:${upstreamPort};
    keepalive 256;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://answerer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
  const file = writeTemp(dir, 'nginx.conf', conf);
  const started = await startProcess('nginx', ['-p', dir, '-e', `${dir}/error.log`, '-c', file], { port }, { cwd: dir });
  return { ...started, port };
}

/**
 * haproxy in tcp mode relaying a fresh port to `targetPort` (default thread
 * count: one per core), in the foreground (-db). It is ready when its
 * monitor port answers, so probing it opens no connection to the target.
 */
export function startHaproxy(targetPort: number): Promise<Proxy> {
  return onFreePorts(() => startHaproxyOnce(targetPort));
}

async function startHaproxyOnce(targetPort: number): Promise<Proxy> {
  const dir = tempDir();
  const port = await freePort();
  const monitorPort = await freePort();
  const conf = `global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
listen relay
  bind 127.0.0.1:${port}
  server target 127.0.0.1:${targetPort}
frontend ready
  mode http
  bind 127.0.0.1:${monitorPort}
  monitor-uri /ready
`;
  const file = writeTemp(dir, 'haproxy.cfg', conf);
  const started = await startProcess('haproxy', ['-db', '-f', file], { port: monitorPort }, { cwd: dir });
  return { ...started, port };
}

export interface Iperf3Server extends Started {
  port: number;
}

/** An iperf3 server on 127.0.0.1 (one test at a time, as iperf3 serves them). */
export function startIperf3Server(): Promise<Iperf3Server> {
  return onFreePorts(() => startIperf3ServerOnce());
}

async function startIperf3ServerOnce(): Promise<Iperf3Server> {
  const port = await freePort();
  const started = await startProcess('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port), '--forceflush'], /Server listening on/);
  return { ...started, port };
}

export interface BridgeChain {
  /** Where a TCP client connects: `bridge -L`'s port. */
  port: number;
  /** The `bridge -L` and `bridge -R` processes (the relay is the caller's). */
  pids: number[];
  stop(): Promise<void>;
}

/**
 * What a user of the tunnel runs: `edge-relay bridge -R entity:127.0.0.1:target`
 * as the listener on the relay at `relayPort`, and `edge-relay bridge -L
 * 127.0.0.1:0:entity` taking TCP connections, each a process of its own
 * started through bin/edge-relay, with default options.
 */
export async function startBridgeChain(relayPort: number, targetPort: number, entity: string): Promise<BridgeChain> {
  const common = ['--relay', `http://127.0.0.1:${relayPort}`, '--key-name', 'root', '--key', ROOT_KEY, '--log-level', 'warn'];
  const remote = await startProcess(EDGE_RELAY_BIN, ['bridge', ...common, '-R', `${entity}:127.0.0.1:${targetPort}`], /listening on \S+ -> /, { env: edgeRelayEnv() });
  try {
    const local = await startProcess(EDGE_RELAY_BIN, ['bridge', ...common, '-L', `127.0.0.1:0:${entity}`], /forwarding 127\.0\.0\.1:(\d+) -> /, { env: edgeRelayEnv() });
    return {
      port: Number(local.match[1]),
      pids: [local.pid, remote.pid],
      async stop() {
        await local.stop();
        await remote.stop();
      },
    };
  } catch (err) {
    await remote.stop();
    throw err;
  }
}
