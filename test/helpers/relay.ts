// Starts relays for tests: in this process (fast) or as a real child process
// running the CLI (for memory figures, signals, or when the test process
// fakes timers). Both bind 127.0.0.1 port 0 and are stopped in the test's clean-up, last started first.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { createSasToken, resourceForUrl } from '../../src/auth/sas-token.ts';
import { Writable } from 'node:stream';
import WebSocket from 'ws';
import type { RelayConfig } from '../../src/config/types.ts';
import { createLogger, type Logger } from '../../src/telemetry/logger.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { tracked } from './child-processes.ts';
import { cleanupFor, tempDirFor } from './cleanup.ts';
import { EDGE_RELAY_BIN } from './cli-process.ts';
import { withTimeout } from './wait.ts';

export const ROOT_KEY_NAME = 'root';
export const ROOT_KEY = 'root-key-0123456789abcdef';

/** A config for tests: root rule with Manage, entity "echo" needing sender tokens. */
export function testConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    sas: [{ keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] }],
    hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }],
    ...overrides,
  };
}

export async function startTestRelay(
  t: Pick<TestContext, 'after'>,
  overrides: Record<string, unknown> = {},
  options: { log?: Logger; loadConfig?: () => RelayConfig } = {},
): Promise<RunningRelay> {
  // Imported here, not above: a file whose relays are all processes does not load the relay (and its
  // schemas) into the test's own process, about 0.5 s of CPU per file through tsx.
  const [{ buildConfig }, { startRelay }] = await Promise.all([import('../../src/config/load.ts'), import('../../src/server/relay-server.ts')]);
  const config = buildConfig(testConfig(overrides));
  const relay = await startRelay(config, options.log ?? createLogger(config.log.level, 'test'), { loadConfig: options.loadConfig });
  cleanupFor(t).after(() => {
    // A tear-down, not a test of the drain (such a test closes the relay itself): whatever
    // the test still holds open (cleaned up after this) is cut after a moment, not timeouts.shutdownMs.
    config.timeouts.shutdownMs = Math.min(config.timeouts.shutdownMs, 500);
    return relay.close();
  });
  return relay;
}

/** A logger whose JSON lines a test can read (level info unless told). */
export function captureLogger(level = 'info'): { log: Logger; lines(): Record<string, unknown>[]; events(): string[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(...String(chunk).split('\n').filter((l) => l !== ''));
      done();
    },
  });
  const log = createLogger(level, 'test', sink);
  const lines = () => out.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines, events: () => lines().map((l) => String(l.event)) };
}

/** A token for `url` signed with the root key (or the given one). */
export function tokenFor(url: string, opts: { keyName?: string; key?: string; ttl?: number } = {}): string {
  const expiresAt = Math.floor(Date.now() / 1000) + (opts.ttl ?? 3600);
  return createSasToken(resourceForUrl(url), opts.keyName ?? ROOT_KEY_NAME, opts.key ?? ROOT_KEY, expiresAt);
}

export interface RelayProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Resident set size of the relay process, bytes (Linux /proc). */
  rss(): number;
  stderr(): string;
  /** SIGTERM: the relay drains (SIGKILL if it has not exited within 5 s). */
  stop(): Promise<void>;
}

/** How long a test's tear-down lets a relay process drain before SIGKILL. */
const TEARDOWN_GRACE_MS = 1000;

export interface ServeProcessOptions {
  /**
   * False: the relay's stderr is not read (node reads a little ahead, then the pipe fills and the relay's log
   * writes wait), as with a log shipper that stalled; `child.stderr` is left paused for the test. Default true.
   */
  readStderr?: boolean;
}

/** testConfig(`overrides`) as a config file in a folder of its own, removed with the test: its path. */
export function configFile(t: Pick<TestContext, 'after'>, overrides: Record<string, unknown> = {}): string {
  const file = join(tempDirFor(t, 'edge-relay-test-'), 'config.json');
  writeFileSync(file, JSON.stringify(testConfig(overrides)));
  return file;
}

/**
 * A relay in this process serving `hubs` that reloads from its file; `serve(hubs)` writes the file with those hubs
 * (and `extra`) and reloads, asserting the reload was taken.
 */
export async function reloadableRelay(
  t: Pick<TestContext, 'after'>,
  hubs: object[],
  extra: Record<string, unknown> = {},
): Promise<{ relay: RunningRelay; serve(hubs: object[]): void }> {
  const file = configFile(t, { ...extra, pubsub: { hubs } });
  const { loadConfig } = await import('../../src/config/load.ts');
  const relay = await startTestRelay(t, { ...extra, pubsub: { hubs } }, { loadConfig: () => loadConfig(file, {}, {}) });
  return {
    relay,
    serve(next) {
      writeFileSync(file, JSON.stringify(testConfig({ ...extra, pubsub: { hubs: next } })));
      const outcome = relay.reload('api');
      if (!outcome.ok) throw new Error(`reload refused: ${JSON.stringify(outcome)}`);
    },
  };
}

export async function startRelayProcess(t: Pick<TestContext, 'after'>, overrides: Record<string, unknown> = {}, options: ServeProcessOptions = {}): Promise<RelayProcess> {
  return startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0'], options);
}

/** `edge-relay serve ARGS` as a child process; resolves once it prints its address. */
export async function startServeProcess(t: Pick<TestContext, 'after'>, args: string[], options: ServeProcessOptions = {}): Promise<RelayProcess> {
  const child = tracked(
    spawn(EDGE_RELAY_BIN, ['serve', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: new URL('../..', import.meta.url).pathname,
    }),
  );
  let err = '';
  const readStderr = options.readStderr ?? true;
  // TEST_RELAY_OUTPUT=dir keeps each relay process's output there, for debugging.
  if (process.env.TEST_RELAY_OUTPUT) {
    const out = createWriteStream(join(process.env.TEST_RELAY_OUTPUT, `relay-${child.pid}.log`));
    child.stdout!.pipe(out);
    if (readStderr) child.stderr!.pipe(out);
  }
  if (readStderr) {
    child.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-65536);
    });
  } else {
    child.stderr!.pause();
  }
  // SIGTERM, then SIGKILL once `graceMs` have passed without an exit.
  const stop = async (graceMs: number) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await withTimeout(exited, graceMs, 'relay exit');
    } catch {
      child.kill('SIGKILL');
      await withTimeout(new Promise((r) => child.once('exit', r)), 5000, 'relay kill');
    }
  };
  // A tear-down, not a test of the drain (such a test calls stop() itself): what the
  // test left open (reliable sessions waiting for a taker, close handshakes a peer
  // never answers) would hold the drain for timeouts.shutdownMs, so it is cut after a moment.
  cleanupFor(t).after(() => stop(TEARDOWN_GRACE_MS));
  const url = await withTimeout(
    new Promise<string>((resolve, reject) => {
      let out = '';
      const onData = (d: Buffer) => {
        out = (out + d.toString()).slice(-65536);
        const m = /listening on (https?:\/\/\S+)/.exec(out);
        if (!m) return;
        child.stdout!.off('data', onData);
        child.stdout!.resume(); // keep draining what the relay prints later
        resolve(m[1]);
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`relay exited with ${code}: ${err}`)));
    }),
    // Bounded, for a hang; a loaded 2-core machine starting several edges with tsx needs a while.
    30000,
    'relay process to listen',
  );
  return {
    url,
    port: Number(new URL(url).port),
    child,
    rss: () => {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
    },
    stderr: () => err,
    stop: () => stop(5000),
  };
}

export function wsUrl(httpUrl: string, path: string): string {
  return httpUrl.replace(/^http/, 'ws') + path;
}

/** The status a WebSocket upgrade to `url` is answered with (101 when it opened: then closed at once). */
export async function upgradeStatus(t: Pick<TestContext, 'after'>, url: string, protocol?: string): Promise<number> {
  const ws = new WebSocket(url, protocol === undefined ? [] : [protocol]);
  cleanupFor(t).after(() => ws.terminate());
  return withTimeout(
    new Promise<number>((resolve, reject) => {
      ws.once('open', () => {
        ws.terminate();
        resolve(101);
      });
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.once('error', reject);
    }),
    5000,
    `the answer to ${url}`,
  );
}

/** A metric of an in-process relay, summed over the series whose labels include `labels` (0 when none). */
export async function metricValue(relay: RunningRelay, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = relay.metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l))
    .reduce((sum, v) => sum + v.value, 0);
}
