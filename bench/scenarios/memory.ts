// Memory per idle connection: the relay's resident set growth per idle pub/sub
// connection (reliable subprotocol, in one group) and per idle listener
// (a control channel on an entity of its own), against nats-server's growth
// per idle NATS-over-WebSocket connection holding one subscription.
import { natsClients, openPubSubClient } from '../lib/fanout-clients.ts';
import { LeanWs } from '../lib/lean-ws.ts';
import { openLeanListener } from '../lib/lean-listener.ts';
import { rssBytes } from '../lib/processes.ts';
import type { ScenarioResult } from '../lib/report.ts';
import { startNatsServer, startRelay } from '../lib/systems.ts';
import type { Mode, Outcome } from './index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inBatches(count: number, open: (i: number) => Promise<LeanWs>): Promise<LeanWs[]> {
  const out: LeanWs[] = [];
  for (let i = 0; i < count; i += 200) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, k) => open(i + k)))));
  }
  return out;
}

/**
 * RSS growth of `pid` per connection that `open` makes, measured from after a
 * first set of the same connections (at most 2,000) that stays open: what
 * one more connection costs once the process is warm. (Before, that first set
 * was closed again, and the measured connections could take the memory it
 * left behind: the figure came out near zero, or below, for small counts.)
 * `settle` scales the pauses that let the resident set settle (quick mode
 * only checks that each row runs). Throws when the resident set did not grow:
 * no figure rather than a wrong one.
 */
async function growthPer(pid: number, count: number, open: (i: number) => Promise<LeanWs>, settle: number): Promise<number> {
  const warm = await inBatches(Math.min(2000, count), (i) => open(count + i));
  await sleep(1000 * settle);
  const before = rssBytes(pid);
  const sockets = await inBatches(count, open);
  await sleep(1500 * settle);
  const after = rssBytes(pid);
  for (const ws of [...warm, ...sockets]) ws.destroy();
  if (after <= before) throw new Error(`memory: the resident set of ${pid} did not grow with ${count} connections (${before} -> ${after} bytes)`);
  return (after - before) / count;
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
  const row = (scenario: string, system: string, ours: boolean, bytes: number, count: number) =>
    results.push({ scenario, system, ours, value: bytes / 1024, unit: 'KiB each', figures: { bytesPerConnection: bytes, connections: count } });

  const pubsubScenario = `idle pub/sub connections x${connections}`;
  // Each figure on a fresh relay, so memory freed from one cannot hide another's growth.
  const onFreshRelay = async (natsUrl: string | undefined, measure: (port: number, pid: number) => Promise<number>) => {
    const relay = await startRelay({ natsUrl });
    try {
      return await measure(relay.port, relay.pid);
    } finally {
      await relay.stop();
    }
  };
  row(pubsubScenario, 'edge-relay, memory bus, reliable, 1 group', true, await onFreshRelay(undefined, (port, pid) => growthPer(pid, connections, () => reliableSubscriber(port), settle)), connections);
  const busNats = await startNatsServer();
  try {
    const url = `nats://127.0.0.1:${busNats.port}`;
    row(pubsubScenario, 'edge-relay, NATS bus, reliable, 1 group', true, await onFreshRelay(url, (port, pid) => growthPer(pid, connections, () => reliableSubscriber(port), settle)), connections);
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
    row(pubsubScenario, 'nats-server websocket, 1 subscription', false, await growthPer(nats.pid, connections, () => clients.subscribe(() => {}), settle), connections);
  } finally {
    await nats.stop();
  }
  return {
    results,
    ratios: [
      // Below 1 means we use more memory per connection than the peer.
      { scenario: pubsubScenario, ours: results[0].system, peer: results[3].system, ratio: results[3].value / results[0].value },
      { scenario: pubsubScenario, ours: results[1].system, peer: results[3].system, ratio: results[3].value / results[1].value },
    ],
  };
}
