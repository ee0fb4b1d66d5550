// Durable hubs (NATS JetStream) against the core NATS path and nats-server,
// in one run (docs/durability.md): fan-out with the publisher on one edge and
// the subscribers on another, so every event is stored and read back from
// the hub's stream before anyone gets it; the time from a publish to its ack
// (stored, on a durable hub); how fast a hub's history reads over REST; and
// nats-server's JetStream alone, file against memory storage at the hub's
// half-load event rate: what the file store costs by itself (no relay).
// Targets: the JetStream hub delivers at least 0.8x the core path's rate, and
// its p99 publish-to-deliver at half load is at most 2 ms above the core path's.
import { signJwt } from '../../src/auth/jwt.ts';
import { Histogram } from '../lib/histogram.ts';
import { LeanWs } from '../lib/lean-ws.ts';
import { natsClients, relayClients, type FanoutClients } from '../lib/fanout-clients.ts';
import { startAll } from '../lib/processes.ts';
import { quotient, type Ratio, type ScenarioResult } from '../lib/report.ts';
import { median, medianBy } from '../lib/rounds.ts';
import { HUB, HUB_KEY, clientPath, startNatsServer, startRelay } from '../lib/systems.ts';
import { storeLatencies } from '../peers/jetstream-store.ts';
import { runFanout, type FanoutFigures, type FanoutPlan } from './fanout.ts';
import type { Mode, Outcome } from './index.ts';

const OURS_JETSTREAM = 'edge-relay, NATS bus (2 edges), JetStream hub';
/** The same hub with bus.jetstream.storage "memory": what the file store costs on this machine's disk. */
const OURS_JETSTREAM_MEMORY = 'edge-relay, NATS bus (2 edges), JetStream hub, memory storage';
const OURS_CORE = 'edge-relay, NATS bus (2 edges), core NATS';
const NATS = 'nats-server websocket';
const STORE_FILE = 'nats-server JetStream alone (nats.js), file storage';
const STORE_MEMORY = 'nats-server JetStream alone (nats.js), memory storage';
const OP_TEXT = 1;

const HISTORY = { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 1_000_000 } }] } };

/** Two edges on one nats-server (JetStream on), publisher on the first, subscribers on the second. */
type Path = 'core' | 'file' | 'memory';

async function withEdges<T>(path: Path, run: (publisher: { port: number; pid: number }, subscriber: { port: number; pid: number }, natsPid: number) => Promise<T>): Promise<T> {
  const nats = await startNatsServer({ jetstream: true });
  const edges: { stop(): Promise<void> }[] = [];
  try {
    const url = `nats://127.0.0.1:${nats.port}`;
    const jetstream = path !== 'core';
    const extra = jetstream ? HISTORY : undefined;
    const storage = path === 'memory' ? 'memory' : undefined;
    const [publisher, subscriber] = await startAll(edges, [
      startRelay({ nodeId: 'bench-pub', natsUrl: url, jetstream, storage, extra }),
      startRelay({ nodeId: 'bench-sub', natsUrl: url, jetstream, storage, extra }),
    ] as const);
    return await run(publisher, subscriber, nats.pid);
  } finally {
    for (const edge of edges.reverse()) await edge.stop();
    await nats.stop();
  }
}

async function fanout(system: string, plan: FanoutPlan): Promise<FanoutFigures> {
  if (system === NATS) {
    const nats = await startNatsServer();
    try {
      return await runFanout(natsClients(nats.wsPort), [nats.pid], plan);
    } finally {
      await nats.stop();
    }
  }
  const path: Path = system === OURS_JETSTREAM ? 'file' : system === OURS_JETSTREAM_MEMORY ? 'memory' : 'core';
  return withEdges(path, (pub, sub, natsPid) => {
    const clients: FanoutClients = relayClients(sub.port, pub.port);
    return runFanout(clients, [natsPid, pub.pid, sub.pid], plan);
  });
}

/** One publisher sending with ackIds, one at a time: the time from each send to its ack. */
async function publishAcks(port: number, seconds: number): Promise<{ histogram: Histogram; count: number }> {
  const histogram = new Histogram();
  let waiting: { ackId: number; at: number; done: () => void } | undefined;
  const ws = await LeanWs.open({
    port,
    path: clientPath(port, { roles: ['webpubsub.sendToGroup'] }),
    protocols: ['json.webpubsub.azure.v1'],
    onFrame(opcode, payload) {
      if (opcode !== OP_TEXT || !waiting) return;
      const text = payload.toString();
      if (text.includes('"type":"ack"') && text.includes(`"ackId":${waiting.ackId},`)) waiting.done();
    },
  });
  let count = 0;
  const deadline = performance.now() + seconds * 1000;
  try {
    while (performance.now() < deadline) {
      const ackId = ++count;
      const at = performance.now();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ack for ${ackId} in 10 s`)), 10_000);
        waiting = {
          ackId,
          at,
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        ws.send(OP_TEXT, `{"type":"sendToGroup","group":"acks","ackId":${ackId},"dataType":"text","data":"${'x'.repeat(90)}"}`);
      });
      histogram.record((performance.now() - at) * 1000);
    }
  } finally {
    ws.close();
  }
  return { histogram, count };
}

/** Fills a group's history with `count` messages (acked, so stored), then reads it all back over REST in pages of 1,000. */
async function historyReads(port: number, count: number): Promise<{ perSec: number; read: number }> {
  let acked = 0;
  let wake: (() => void) | undefined;
  const ws = await LeanWs.open({
    port,
    path: clientPath(port, { roles: ['webpubsub.sendToGroup'] }),
    protocols: ['json.webpubsub.azure.v1'],
    onFrame(opcode, payload) {
      if (opcode === OP_TEXT && payload.includes('"type":"ack"')) {
        acked++;
        wake?.();
      }
    },
  });
  // In windows of 200 acks, so that the stream holds every message before the reading starts.
  for (let sent = 0; sent < count; ) {
    const batch = Math.min(200, count - sent);
    for (let i = 0; i < batch; i++) ws.send(OP_TEXT, `{"type":"sendToGroup","group":"history","ackId":${sent + i + 1},"dataType":"text","data":"event ${sent + i}"}`);
    sent += batch;
    const deadline = Date.now() + 30_000;
    while (acked < sent) {
      if (Date.now() > deadline) throw new Error(`history fill: ${acked} of ${sent} acked`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  }
  ws.close();
  const base = `http://127.0.0.1:${port}`;
  const path = `/api/hubs/${HUB}/groups/history/messages`;
  const token = signJwt({ aud: `${base}${path}` }, HUB_KEY, 600);
  let after = 0;
  let read = 0;
  const started = performance.now();
  for (;;) {
    const res = await fetch(`${base}${path}?after=${after}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
    const page = (await res.json()) as { messages: unknown[]; next: number };
    read += page.messages.length;
    if (page.next === after) break;
    after = page.next;
  }
  const seconds = (performance.now() - started) / 1000;
  if (read < acked) throw new Error(`history read ${read} of ${acked} stored messages`);
  return { perSec: read / seconds, read };
}

/**
 * Each JetStream path against the core path: rate, p99 at half load and at
 * 10% load, each the median over the rounds of the figure within a round
 * (`measured`: every round's figures by system, in the same order for each).
 * Every comparison is there: one whose figure a round lacks is not measured,
 * and says so, rather than left out.
 */
export function pathRatios(scenario: string, measured: Map<string, FanoutFigures[]>): Ratio[] {
  const core = measured.get(OURS_CORE)!;
  const rounds = core.length;
  const of = rounds > 1 ? `, median of ${rounds} rounds` : '';
  const ratios: Ratio[] = [];
  for (const system of [OURS_JETSTREAM, OURS_JETSTREAM_MEMORY]) {
    const ours = measured.get(system)!;
    const paired = (f: (ours: FanoutFigures, core: FanoutFigures) => number) => median(ours.map((o, i) => f(o, core[i])));
    /** The median difference of `key` (ours - core), or not measured when a round lacks it on either side. */
    const difference = (key: string, name: string): Pick<Ratio, 'ratio' | 'notMeasured'> => {
      const lacking = ours.flatMap((o, i) => [o, core[i]].filter((f) => !Number.isFinite(f[key])).map(() => i + 1));
      if (lacking.length > 0) return { ratio: null, notMeasured: `no ${name} in round ${[...new Set(lacking)].join(', ')} of ${rounds}` };
      return { ratio: paired((o, c) => o[key] - c[key]) };
    };
    ratios.push(
      { scenario, ours: system, peer: OURS_CORE, figure: `deliveries/s${of}`, ratio: paired((o, c) => o.deliveriesPerSec / c.deliveriesPerSec), target: 0.8 },
      { scenario, ours: system, peer: OURS_CORE, figure: `p99 ms at 50% load, difference (ms)${of}`, better: 'lower', ...difference('p99Ms', 'p99 at 50% load'), target: 2 },
      { scenario, ours: system, peer: OURS_CORE, figure: `p99 ms at 10% load, difference (ms)${of}`, better: 'lower', ...difference('p99At10PctMs', 'p99 at 10% load') },
    );
  }
  return ratios;
}

export async function durableScenario(mode: Mode): Promise<Outcome> {
  const subscribers = mode === 'quick' ? 100 : 1000;
  const plan: FanoutPlan = {
    subscribers,
    seconds: mode === 'quick' ? 0.25 : 4,
    window: 100,
    latencySeconds: mode === 'quick' ? 0.25 : 3,
    // Also at 10% load: how much of the gap is JetStream's own hop and how much queueing on a busy machine
    // (quick mode too, so that the test reaches that comparison: it runs every row).
    latencyShares: [0.1, 0.5],
  };
  const scenario = `durable fan-out ${subscribers}`;
  const results: ScenarioResult[] = [];
  // Rounds of the three relay paths, one after the other, so each comparison
  // is paired in time; a p99 on this shared machine moves by tens of ms
  // between runs minutes apart, so the ratios are medians over the rounds
  // (5: with 3, the median p99 gap still moved by 10 ms between runs).
  const rounds = Number(process.env.BENCH_DURABLE_ROUNDS ?? (mode === 'quick' ? 1 : 5));
  const paths = [OURS_JETSTREAM, OURS_JETSTREAM_MEMORY, OURS_CORE];
  const measured = new Map<string, FanoutFigures[]>(paths.map((p) => [p, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const system of paths) {
      process.stderr.write(`  ${scenario}: ${system}${rounds > 1 ? ` (round ${round} of ${rounds})` : ''}\n`);
      measured.get(system)!.push(await fanout(system, plan));
    }
  }
  process.stderr.write(`  ${scenario}: ${NATS}\n`);
  const nats = await fanout(NATS, plan);
  for (const system of paths) {
    // The row shows the round with the median throughput; latest.json keeps every round.
    const all = measured.get(system)!;
    const row = medianBy(all, (f) => f.deliveriesPerSec);
    results.push({ scenario, system, ours: true, value: row.deliveriesPerSec, unit: 'deliveries/s', figures: { ...row, rounds: all.length } });
  }
  results.push({ scenario, system: NATS, ours: false, value: nats.deliveriesPerSec, unit: 'deliveries/s', figures: { ...nats } });
  const ratios = pathRatios(scenario, measured);
  const of = rounds > 1 ? `, median of ${rounds} rounds` : '';
  const js = results.find((r) => r.system === OURS_JETSTREAM)!;
  ratios.push({ scenario, ours: OURS_JETSTREAM, peer: NATS, ...quotient(js, { system: NATS, value: nats.deliveriesPerSec }) });

  // The file store's own cost: nats-server alone, file against memory storage, at the event rate of the
  // JetStream hub's half load (its median round), in as many paired rounds. No target: a floor under the one above.
  const rate = Math.max(100, Math.round(median(measured.get(OURS_JETSTREAM)!.map((f) => f.eventsPerSec)) / 2));
  const storeScenario = `JetStream store alone, ${rate} messages/s`;
  process.stderr.write(`  ${storeScenario}: file and memory storage\n`);
  const stores = await storeLatencies(rate, mode === 'quick' ? 0.25 : 3, rounds);
  for (const [system, index] of [
    [STORE_FILE, 0],
    [STORE_MEMORY, 1],
  ] as const) {
    const row = medianBy(stores.map((pair) => pair[index]), (s) => s.p99Ms);
    results.push({ scenario: storeScenario, system, ours: false, value: row.p99Ms, unit: 'p99 ms', figures: { p50Ms: row.p50Ms, p99Ms: row.p99Ms, p999Ms: row.p999Ms, rate, rounds: stores.length } });
  }
  ratios.push({ scenario: storeScenario, ours: STORE_FILE, peer: STORE_MEMORY, figure: `p99 ms, difference (ms)${of}`, better: 'lower', ratio: median(stores.map(([file, memory]) => file.p99Ms - memory.p99Ms)) });

  // Publish to ack: stored in JetStream (R1 on one nats-server) on the durable hub; at once on the core path.
  // History: REST pages of 1,000 from the hub's stream, read on the durable hub's edges after their acks (another group).
  const ackSeconds = mode === 'quick' ? 0.25 : 3;
  const stored = mode === 'quick' ? 2000 : 20000;
  let history: { perSec: number } | undefined;
  for (const [system, path] of [
    [OURS_JETSTREAM, 'file'],
    [OURS_CORE, 'core'],
  ] as const) {
    const { histogram, count } = await withEdges(path, async (pub) => {
      const acks = await publishAcks(pub.port, ackSeconds);
      if (path === 'file') history = await historyReads(pub.port, stored);
      return acks;
    });
    results.push({
      scenario: 'publish to ack, one at a time',
      system,
      ours: true,
      value: count / ackSeconds,
      unit: 'acks/s',
      figures: { p50Ms: histogram.quantile(0.5) / 1000, p99Ms: histogram.quantile(0.99) / 1000, p999Ms: histogram.quantile(0.999) / 1000 },
    });
  }

  results.push({ scenario: `history read, ${stored} messages`, system: OURS_JETSTREAM, ours: true, value: history!.perSec, unit: 'messages/s', figures: {} });
  return { results, ratios };
}
