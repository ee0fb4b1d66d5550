// Memory per idle connection: the relay's resident set growth per idle pub/sub
// connection (reliable subprotocol, in one group) and per idle listener
// (a control channel on an entity of its own), against nats-server's growth
// per idle NATS-over-WebSocket connection holding one subscription.
import { natsClients, openPubSubClient } from '../lib/fanout-clients.ts';
import { LeanWs } from '../lib/lean-ws.ts';
import { openLeanListener } from '../lib/lean-listener.ts';
import { rssBytes } from '../lib/processes.ts';
import { quotient, type Ratio, type ScenarioResult } from '../lib/report.ts';
import { startNatsServer, startRelay } from '../lib/systems.ts';
import type { Mode, Outcome } from './index.ts';

const OURS_MEMORY = 'edge-relay, memory bus, reliable, 1 group';
const OURS_NATS = 'edge-relay, NATS bus, reliable, 1 group';
const PEER = 'nats-server websocket, 1 subscription';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inBatches(count: number, open: (i: number) => Promise<LeanWs>): Promise<LeanWs[]> {
  const out: LeanWs[] = [];
  for (let i = 0; i < count; i += 200) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, k) => open(i + k)))));
  }
  return out;
}

/** What one more connection costs: a positive number of bytes, or why there is no figure. */
export type Growth = { bytesPerConnection: number; rssBefore: number; rssAfter: number } | { notMeasured: string; rssBefore: number; rssAfter: number };

/**
 * The resident set's growth per connection from `before` to `after` bytes
 * with `count` connections. Not positive (the process did not grow, or shrank:
 * the warm heap took them, or memory was handed back meanwhile) is no figure,
 * never a per-connection size of zero or below, nor a ratio divided by one.
 */
export function perConnection(before: number, after: number, count: number): Growth {
  const bytes = (after - before) / count;
  if (count > 0 && Number.isFinite(bytes) && bytes > 0) return { bytesPerConnection: bytes, rssBefore: before, rssAfter: after };
  return { notMeasured: `the resident set did not grow with ${count} connections (${before} -> ${after} bytes)`, rssBefore: before, rssAfter: after };
}

/**
 * RSS growth of `pid` per connection that `open` makes, measured from after a
 * first set of the same connections (at most 2,000) that stays open: what
 * one more connection costs once the process is warm. (Before, that first set
 * was closed again, and the measured connections could take the memory it
 * left behind: the figure came out near zero, or below, for small counts.)
 * `settle` scales the pauses that let the resident set settle (quick mode
 * only checks that each row runs). When the resident set did not grow, the
 * row says so (perConnection): no figure rather than a wrong one, and the
 * other rows of the run are still measured and written.
 */
export async function growthPer(pid: number, count: number, open: (i: number) => Promise<LeanWs>, settle: number): Promise<Growth> {
  const warm = await inBatches(Math.min(2000, count), (i) => open(count + i));
  await sleep(1000 * settle);
  const before = rssBytes(pid);
  const sockets = await inBatches(count, open);
  await sleep(1500 * settle);
  const after = rssBytes(pid);
  for (const ws of [...warm, ...sockets]) ws.destroy();
  return perConnection(before, after, count);
}

function reliableSubscriber(port: number): Promise<LeanWs> {
  return openPubSubClient(port, 'json.reliable.webpubsub.azure.v1', ['g']);
}

export async function memoryScenario(mode: Mode): Promise<Outcome> {
  const connections = mode === 'quick' ? 400 : 10000;
  // 1,000 listeners in quick mode too: 100 grew the resident set by 4-28 KiB in all (0.04-0.28 KiB
  // each, the warm heap absorbed them) and sometimes not at all, which failed the quick run; 1,000
  // give 23-24 KiB each, run to run, in about 2 s more.
  const listeners = 1000;
  const settle = mode === 'quick' ? 0.2 : 1;
  const results: ScenarioResult[] = [];
  const row = (scenario: string, system: string, ours: boolean, growth: Growth, count: number) =>
    results.push(memoryRow(scenario, system, ours, growth, count));

  const pubsubScenario = `idle pub/sub connections x${connections}`;
  // Each figure on a fresh relay, so memory freed from one cannot hide another's growth.
  const onFreshRelay = async (natsUrl: string | undefined, measure: (port: number, pid: number) => Promise<Growth>) => {
    const relay = await startRelay({ natsUrl });
    try {
      return await measure(relay.port, relay.pid);
    } finally {
      await relay.stop();
    }
  };
  row(pubsubScenario, OURS_MEMORY, true, await onFreshRelay(undefined, (port, pid) => growthPer(pid, connections, () => reliableSubscriber(port), settle)), connections);
  const busNats = await startNatsServer();
  try {
    const url = `nats://127.0.0.1:${busNats.port}`;
    row(pubsubScenario, OURS_NATS, true, await onFreshRelay(url, (port, pid) => growthPer(pid, connections, () => reliableSubscriber(port), settle)), connections);
  } finally {
    await busNats.stop();
  }
  row(
    `idle listeners x${listeners}`,
    'edge-relay, 1 listener per entity',
    true,
    await onFreshRelay(undefined, (port, pid) => growthPer(pid, listeners, (i) => openLeanListener({ port, entity: `idle-${i}` }), settle)),
    listeners,
  );
  const nats = await startNatsServer();
  try {
    const clients = natsClients(nats.wsPort);
    row(pubsubScenario, PEER, false, await growthPer(nats.pid, connections, () => clients.subscribe(() => {}), settle), connections);
  } finally {
    await nats.stop();
  }
  return { results, ratios: memoryRatios(pubsubScenario, results) };
}

/** A row in KiB per connection, or, when the growth was not positive, a row that says it was not measured and why. */
export function memoryRow(scenario: string, system: string, ours: boolean, growth: Growth, count: number): ScenarioResult {
  const figures = { connections: count, rssBefore: growth.rssBefore, rssAfter: growth.rssAfter };
  if ('notMeasured' in growth) return { scenario, system, ours, value: null, notMeasured: growth.notMeasured, unit: 'KiB each', figures };
  return { scenario, system, ours, value: growth.bytesPerConnection / 1024, unit: 'KiB each', figures: { bytesPerConnection: growth.bytesPerConnection, ...figures } };
}

/** nats-server's KiB per connection over each of ours (below 1: we use more than the peer), by name; not measured when either row was not. */
export function memoryRatios(scenario: string, results: ScenarioResult[]): Ratio[] {
  const find = (system: string) => results.find((r) => r.scenario === scenario && r.system === system) ?? { system, value: undefined, notMeasured: 'no row' };
  return [OURS_MEMORY, OURS_NATS].map((ours) => ({ scenario, ours, peer: PEER, ...quotient(find(PEER), find(ours)) }));
}
