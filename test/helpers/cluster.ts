// The scale-out topology as real processes: nats-server nodes (helpers/nats.ts)
// and edge relays (the CLI, as in production) each pinned to one NATS node
// first, with the others as fail-over. Each edge is waited on until
// /$relay/ready says it has its bus. Everything is stopped in the test's after hooks.
import type { TestContext } from 'node:test';
import type { JetStreamAccess } from '../../src/bus/jetstream.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { startNatsCluster, type NatsNode } from './nats.ts';
import { allThreadsStopped } from './process-state.ts';
import { pubsubOverrides } from './pubsub.ts';
import { startRelayProcess, startTestRelay, type RelayProcess } from './relay.ts';
import { until } from './wait.ts';

export interface Edge extends RelayProcess {
  name: string;
  kill(): Promise<void>;
}

/** GET /$relay/ready: the status and body. */
export async function readiness(edge: { url: string }): Promise<{ status: number; body: any }> {
  const res = await fetch(`${edge.url}/$relay/ready`, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, body: await res.json() };
}

/** Polls /$relay/ready until it answers `status`, for at most `ms`. */
export async function waitReady(edge: { url: string }, status = 200, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await readiness(edge).catch(() => ({ status: 0 }));
    if (got.status === status) return;
    if (Date.now() > deadline) throw new Error(`${edge.url} readiness stayed ${got.status}, wanted ${status}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Fault injection on an edge's own JetStream access: each question of where a
 * stream ends takes `ms` more, so the moment between JetStream ready and a hub
 * reading its stream is long enough to be seen.
 */
export function delayStreamBounds(js: JetStreamAccess, ms: number): void {
  const bounds = js.bounds.bind(js);
  js.bounds = (stream) => new Promise((r) => setTimeout(r, ms)).then(() => bounds(stream));
}

/** Config overrides for an edge named `name` on the given NATS servers (first one preferred). */
export function edgeOverrides(name: string, servers: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { bus, ...rest } = extra as { bus?: Record<string, unknown> };
  return pubsubOverrides({
    nodeId: name,
    // Kept in memory by the harness (last 64 KiB of stderr) to explain a failure.
    log: { level: process.env.TEST_LOG_LEVEL ?? 'info' },
    autoCreate: true,
    bus: { kind: 'nats', servers, randomizeServers: false, reconnectTimeWaitMs: 100, pingIntervalMs: 1000, requestTimeoutMs: 2000, gatherStallMs: 50, ...bus },
    timeouts: { keepAliveIntervalMs: 500, idleMs: 10000 },
    ...rest,
  });
}

/** Edges whose hubs send on core NATS (at most once, with the replay window) instead of JetStream. */
export const CORE_NATS = { bus: { jetstream: { enabled: false } } };

/** An edge in this process on `natsUrl`, on core NATS (unless `extra.bus` says), with `extra` config; once it is on NATS. Stopped with the test. */
export async function edgeInProcess(t: Pick<TestContext, 'after'>, name: string, natsUrl: string, extra: Record<string, unknown> = {}): Promise<RunningRelay> {
  const bus = { ...CORE_NATS.bus, ...(extra.bus as Record<string, unknown> | undefined) };
  const relay = await startTestRelay(t, edgeOverrides(name, [natsUrl], { ...extra, bus }));
  await until(() => relay.bus.connected, 10000, `${name} on NATS`);
  return relay;
}

export async function startEdge(
  t: Pick<TestContext, 'after'>,
  name: string,
  servers: string[],
  extra: Record<string, unknown> = {},
): Promise<Edge> {
  const relay = await startRelayProcess(t, edgeOverrides(name, servers, extra));
  await waitReady(relay);
  return {
    ...relay,
    name,
    kill: async () => {
      if (relay.child.exitCode !== null || relay.child.signalCode !== null) return;
      const exited = new Promise((r) => relay.child.once('exit', r));
      relay.child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The log lines of `edges` whose event matches `pattern`, for a failure message. */
export function edgeEvents(edges: Edge[], pattern: RegExp): string {
  return edges
    .flatMap((e) => e.stderr().split('\n').filter((line) => pattern.test(line)))
    .join('\n');
}

/** Waits (at most 5 s) until `observer` has `other` on its hubs' rosters (src/pubsub/hub-roster.ts logs each edge it adds). */
export async function waitOnRoster(observer: Edge, other: Edge): Promise<void> {
  await until(() => edgeEvents([observer], /pubsub\.roster_joined/).includes(`"edge":"${other.name}"`), 5000, `${observer.name} to have ${other.name} on its roster`);
}

/**
 * Runs `during` with `edge` stopped (SIGSTOP) for `ms`, counted from when
 * every thread of it has stopped (on a loaded machine a signalled process ran
 * on for tens of milliseconds): the edge runs again after `ms` on its own
 * timer, never because `during` ended, and at the latest when `during`
 * settles or the test ends.
 */
export async function whilePaused<T>(t: Pick<TestContext, 'after'>, edge: Edge, ms: number, during: () => Promise<T>): Promise<T> {
  const resume = () => edge.child.kill('SIGCONT');
  edge.child.kill('SIGSTOP');
  t.after(resume);
  await until(() => allThreadsStopped(edge.child.pid!), 10000, `${edge.name} to stop`);
  const timer = setTimeout(resume, ms);
  try {
    return await during();
  } finally {
    clearTimeout(timer);
    resume();
  }
}

/** `servers` with the one at `first` moved to the front. */
export function preferring(nats: NatsNode[], first: number): string[] {
  return [nats[first], ...nats.filter((_, i) => i !== first)].map((n) => n.url);
}

/** Three NATS nodes and `edges` edges; edge i prefers NATS node i mod 3. */
export async function startCluster(
  t: Pick<TestContext, 'after'>,
  edges = 2,
  extra: Record<string, unknown> = {},
): Promise<{ nats: NatsNode[]; edges: Edge[] }> {
  const nats = await startNatsCluster(t);
  const names = ['edge-a', 'edge-b', 'edge-c'];
  const started = await Promise.all(Array.from({ length: edges }, (_, i) => startEdge(t, names[i], preferring(nats, i % 3), extra)));
  return { nats, edges: started };
}
