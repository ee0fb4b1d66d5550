// The systems under test, started on 127.0.0.1 for one scenario run: our relay
// (memory or NATS bus), nats-server with its WebSocket listener, Mosquitto
// with its WebSocket listener, socat.
import { createSasToken, resourceForUrl } from '../../src/auth/sas-token.ts';
import { clientAccessUrl } from '../../src/pubsub/client-access-url.ts';
import { freePort, startProcess, tempDir, writeTemp, type Started } from './processes.ts';

export const HUB = 'bench';
export const HUB_KEY = 'bench-hub-key-0123456789abcdef';
export const ENTITY = 'bench';
const ROOT_KEY = 'bench-root-key-0123456789abcdef';

export interface RelayNode extends Started {
  port: number;
}

export async function startRelay(options: { nodeId?: string; natsUrl?: string; jetstream?: boolean; extra?: Record<string, unknown> } = {}): Promise<RelayNode> {
  const config = {
    nodeId: options.nodeId ?? 'bench',
    listen: { host: '127.0.0.1', port: 0 },
    log: { level: 'warn' },
    sas: [{ keyName: 'root', key: ROOT_KEY, rights: ['Manage'] }],
    autoCreate: true,
    hybridConnections: [{ name: ENTITY, requiresClientAuthorization: false }],
    pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] },
    // The NATS rows measure the core NATS path unless a scenario asks for durable hubs (JetStream).
    bus: options.natsUrl ? { kind: 'nats', servers: [options.natsUrl], jetstream: { enabled: options.jetstream ?? false } } : { kind: 'memory' },
    // The load generator opens thousands of connections from one address.
    limits: { connectRatePerAddress: 0 },
    ...options.extra,
  };
  const file = writeTemp(tempDir(), 'relay.json', JSON.stringify(config));
  // BENCH_PROFILE_DIR=dir: each relay writes a CPU profile there when it exits (see bench/profile-summary.ts).
  const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
  const started = await startProcess(process.execPath, [...profile, '--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', file], /listening on http:\/\/127\.0\.0\.1:(\d+)/);
  return { ...started, port: Number(started.match[1]) };
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

export async function startNatsServer(): Promise<NatsServer> {
  const dir = tempDir();
  const wsPort = await freePort();
  const file = writeTemp(dir, 'nats.conf', `websocket {\n  host: "127.0.0.1"\n  port: ${wsPort}\n  no_tls: true\n}\n`);
  const started = await startProcess('nats-server', ['-c', file, '-a', '127.0.0.1', '-p', '-1'], /Listening for client connections on 127\.0\.0\.1:(\d+)/, { cwd: dir });
  return { ...started, port: Number(started.match[1]), wsPort };
}

export interface Mosquitto extends Started {
  wsPort: number;
}

export async function startMosquitto(): Promise<Mosquitto> {
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

/** socat relaying one TCP connection from a fresh port to `targetPort`. */
export async function startSocat(targetPort: number): Promise<Socat> {
  const port = await freePort();
  const started = await startProcess('socat', ['-d', '-d', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`, `TCP:127.0.0.1:${targetPort}`], /listening on/);
  return { ...started, port };
}
