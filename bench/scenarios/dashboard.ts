// What watching costs: fan-out throughput on the NATS cluster (publisher on
// one edge, subscribers on the other) with nobody watching, and with the
// dashboard open and a live trace viewer on the subscribers' edge: its
// /$relay/stats read every second (every edge's counters over the bus) and
// /$relay/trace streamed and read (so the publishing edge traces every
// publish, up to its cap, and sends the events over the bus). The two run in
// turns, in alternating order, `rounds` times on the same cluster, so that a
// drift of the shared machine falls on both; the ratio of each pair, their
// median and their spread are reported (target: the median at or above 0.95).
// On a machine shared with other work the relays get less than the CPU they
// could use, and throughput follows what they get: so the same pairs are also
// compared by deliveries per CPU-second of the relays and nats-server, which
// what the machine grants moves much less.
import { request } from 'node:http';
import { startAll } from '../lib/processes.ts';
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { relayClients } from '../lib/fanout-clients.ts';
import { sasToken, startNatsServer, startRelay } from '../lib/systems.ts';
import { runFanout, type FanoutPlan } from './fanout.ts';
import type { Mode, Outcome } from './index.ts';

const BASELINE = 'edge-relay, NATS bus (2 edges), nobody watching';
const WATCHED = 'edge-relay, NATS bus (2 edges), dashboard + live trace open';

/**
 * A dashboard and a trace viewer on one edge, as the page does it: stats every
 * second, the trace read as it comes. BENCH_DASHBOARD_WATCH=trace or =stats
 * runs one of the two only (to see which costs what).
 */
function watch(port: number, what = process.env.BENCH_DASHBOARD_WATCH ?? 'both'): { stop(): void; traced: () => number; polls: () => number } {
  const token = sasToken(port, '/');
  let traced = 0;
  let polls = 0;
  let stopped = false;
  const trace = request({ host: '127.0.0.1', port, path: '/$relay/trace', headers: { authorization: token } }, (res) => {
    res.on('data', (chunk: Buffer) => {
      for (let i = chunk.indexOf('data: '); i >= 0; i = chunk.indexOf('data: ', i + 1)) traced++;
    });
    res.on('error', () => {});
  });
  trace.on('error', () => {});
  if (what === 'stats') trace.destroy();
  else trace.end();
  const poll = () => {
    if (stopped) return;
    const started = Date.now();
    const req = request({ host: '127.0.0.1', port, path: '/$relay/stats?top=20', headers: { authorization: token } }, (res) => {
      res.resume();
      res.on('end', () => {
        polls++;
        if (!stopped) timer = setTimeout(poll, Math.max(0, 1000 - (Date.now() - started)));
      });
    });
    req.on('error', () => {});
    req.end();
  };
  let timer = setTimeout(poll, what === 'trace' ? 2 ** 31 - 1 : 0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      trace.destroy();
    },
    traced: () => traced,
    polls: () => polls,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function dashboardScenario(mode: Mode): Promise<Outcome> {
  const subscribers = mode === 'quick' ? 100 : 1000;
  const rounds = Number(process.env.BENCH_DASHBOARD_ROUNDS ?? (mode === 'quick' ? 1 : 5));
  const plan: FanoutPlan = { subscribers, seconds: mode === 'quick' ? 0.5 : 4, window: 100, latencySeconds: mode === 'quick' ? 0.25 : 1, latencyShares: [0.5] };
  const scenario = `fan-out ${subscribers}, watched`;
  const nats = await startNatsServer();
  const edges: { stop(): Promise<void> }[] = [];
  const results: ScenarioResult[] = [];
  const pairs: number[] = [];
  const efficiencyPairs: number[] = [];
  try {
    const url = `nats://127.0.0.1:${nats.port}`;
    const [publisherEdge, subscriberEdge] = await startAll(edges, [
      startRelay({ nodeId: 'bench-pub', natsUrl: url }),
      startRelay({ nodeId: 'bench-sub', natsUrl: url }),
    ] as const);
    const pids = [nats.pid, publisherEdge.pid, subscriberEdge.pid];
    const clients = relayClients(subscriberEdge.port, publisherEdge.port);
    for (let round = 0; round < rounds; round++) {
      const figures: Record<string, number> = {};
      // Alternate which goes first, so that a machine getting busier or quieter weighs on both.
      for (const watched of round % 2 === 0 ? [false, true] : [true, false]) {
        const watcher = watched ? watch(subscriberEdge.port) : undefined;
        if (watcher) await new Promise((r) => setTimeout(r, 500));
        try {
          const f = await runFanout(clients, pids, plan);
          figures[watched ? 'watched' : 'baseline'] = f.deliveriesPerSec;
          figures[watched ? 'watchedPerCpu' : 'baselinePerCpu'] = f.deliveriesPerSec / Math.max(1, f.serverCpu);
          const extra: Record<string, number> = watcher ? { traceEvents: watcher.traced(), statsPolls: watcher.polls(), round: round + 1 } : { round: round + 1 };
          results.push({ scenario, system: watched ? WATCHED : BASELINE, ours: watched, value: f.deliveriesPerSec, unit: 'deliveries/s', figures: { ...f, ...extra } });
          process.stderr.write(`  ${scenario} round ${round + 1}: ${watched ? 'watched ' : 'baseline'} ${Math.round(f.deliveriesPerSec)} deliveries/s${watcher ? ` (${watcher.traced()} trace events, ${watcher.polls()} stats reads)` : ''}\n`);
        } finally {
          watcher?.stop();
        }
      }
      pairs.push(figures.watched / figures.baseline);
      efficiencyPairs.push(figures.watchedPerCpu / figures.baselinePerCpu);
    }
  } finally {
    for (const edge of edges.reverse()) await edge.stop();
    await nats.stop();
  }
  const ratios: Ratio[] = [
    { scenario, ours: WATCHED, peer: BASELINE, figure: `median of ${pairs.length} paired runs`, ratio: median(pairs), target: 0.95 },
    { scenario, ours: WATCHED, peer: BASELINE, figure: 'lowest pair', ratio: Math.min(...pairs) },
    { scenario, ours: WATCHED, peer: BASELINE, figure: 'highest pair', ratio: Math.max(...pairs) },
    { scenario, ours: WATCHED, peer: BASELINE, figure: `deliveries per server CPU-second, median of ${pairs.length}`, ratio: median(efficiencyPairs), target: 0.95 },
    { scenario, ours: WATCHED, peer: BASELINE, figure: 'deliveries per server CPU-second, lowest pair', ratio: Math.min(...efficiencyPairs) },
    { scenario, ours: WATCHED, peer: BASELINE, figure: 'deliveries per server CPU-second, highest pair', ratio: Math.max(...efficiencyPairs) },
  ];
  process.stderr.write(`  ${scenario}: watched/baseline per round ${pairs.map((p) => p.toFixed(3)).join(', ')}; per CPU-second ${efficiencyPairs.map((p) => p.toFixed(3)).join(', ')}\n`);
  return { results, ratios };
}
