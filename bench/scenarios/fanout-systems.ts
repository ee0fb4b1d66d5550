// The fan-out scenario over each system: our relay with the in-process bus,
// our relay with NATS (publisher on one edge, subscribers on another, so
// every event crosses the bus), each with plain subscribers and with reliable
// ones that acknowledge as @azure/web-pubsub-client does; nats-server's
// WebSocket listener, and Mosquitto's WebSocket listener. Throughput is
// compared at saturation, latency as p99 publish-to-deliver, both as ratios
// to nats-server in the same run. Latency twice: at half of each system's own
// saturated rate (a faster system is measured at a higher rate, and the
// generator, which reads every subscriber's socket, has more to read), and,
// for groups of 1,000 and more, at half of nats-server's rate for each of ours
// (the same offered load), in a second pass once every row ran (quick mode
// measures nats-server first and that figure in each of ours' one run). Each row runs
// in a load generator process of its own (fanout-row.ts): with one generator
// for every row, what ran before in it counted (run first, nats-server and the
// extra latency runs moved the rows after them: the reliable NATS-bus row at
// 10,000 read 0.58x and 0.59x nats-server, then 1.14x and 0.79x in the order
// of before, which the rows keep).
import { mqttClients, natsClients, relayClients, reliableRelayClients, type FanoutClients } from '../lib/fanout-clients.ts';
import { runCommand, startAll } from '../lib/processes.ts';
import { quotient, type Ratio, type ScenarioResult } from '../lib/report.ts';
import { startMosquitto, startNatsServer, startRelay } from '../lib/systems.ts';
import { runFanout, type FanoutFigures, type FanoutPlan } from './fanout.ts';
import type { Mode, Outcome } from './index.ts';

const OURS_MEMORY = 'edge-relay, memory bus';
const OURS_NATS = 'edge-relay, NATS bus (2 edges)';
const OURS_RELIABLE_MEMORY = 'edge-relay, memory bus, reliable (SDK acks)';
const OURS_RELIABLE_NATS = 'edge-relay, NATS bus (2 edges), reliable (SDK acks)';
const ONE_WORKER = 'edge-relay, NATS bus, serve (1 worker)';
const TWO_WORKERS = 'edge-relay, NATS bus, serve --workers 2';
const NATS = 'nats-server websocket';
const MOSQUITTO = 'mosquitto websocket';

const OURS = [OURS_MEMORY, OURS_NATS, OURS_RELIABLE_MEMORY, OURS_RELIABLE_NATS];
/**
 * One command on the NATS bus with one worker and with two (node:cluster
 * sharing the port, publisher and subscribers spread over the workers by the
 * kernel): does a second worker at least hold the figure of one, with the
 * generator on the same 2 cores? Large groups only (and quick mode).
 */
const WORKER_ROWS = [ONE_WORKER, TWO_WORKERS];
/** Small groups measure latency; Mosquitto and the worker rows are left out there (they are compared at 1,000 and 10,000). */
const SMALL_GROUP_SYSTEMS = [...OURS, NATS];
const ALL_SYSTEMS = [...OURS, ...WORKER_ROWS, NATS, MOSQUITTO];
/** The name of the rate at nats-server's half load (FanoutPlan.latencyRates), and the figure of p99 there. */
const PEER_HALF_LOAD = 'NatsHalfLoad';
const AT_PEER_HALF = `p99At${PEER_HALF_LOAD}Ms`;

type Clients = (subscriberPort: number, publisherPort: number) => FanoutClients;

/**
 * Relays for reliable rows keep more unacknowledged messages per session than
 * the default 1,000: a client that acknowledges once a second, as the SDK
 * does, is closed (1008 SessionBufferFull) as soon as it gets more than 1,000
 * events a second, which every group here does at saturation.
 */
const RELIABLE_LIMITS = { sessionBufferMessages: 200000, sessionBufferBytes: 64 * 1024 * 1024 };

function limitsFor(clients: Clients): Record<string, number> | undefined {
  return clients === reliableRelayClients ? RELIABLE_LIMITS : undefined;
}

async function ourRelay(clients: Clients, plan: FanoutPlan): Promise<FanoutFigures> {
  const relay = await startRelay({ limits: limitsFor(clients) });
  try {
    return await runFanout(clients(relay.port, relay.port), [relay.pid], plan);
  } finally {
    await relay.stop();
  }
}

async function ourCluster(clients: Clients, plan: FanoutPlan): Promise<FanoutFigures> {
  const nats = await startNatsServer();
  const edges: { stop(): Promise<void> }[] = [];
  try {
    const url = `nats://127.0.0.1:${nats.port}`;
    const [publisherEdge, subscriberEdge] = await startAll(edges, [
      startRelay({ nodeId: 'bench-pub', natsUrl: url, limits: limitsFor(clients) }),
      startRelay({ nodeId: 'bench-sub', natsUrl: url, limits: limitsFor(clients) }),
    ] as const);
    return await runFanout(clients(subscriberEdge.port, publisherEdge.port), [nats.pid, publisherEdge.pid, subscriberEdge.pid], plan);
  } finally {
    for (const edge of edges.reverse()) await edge.stop();
    await nats.stop();
  }
}

/** One `serve` command on the NATS bus with `workers` worker processes; every client connects to its one port. */
async function ourWorkers(workers: number, plan: FanoutPlan): Promise<FanoutFigures> {
  const nats = await startNatsServer();
  try {
    const relay = await startRelay({ nodeId: 'bench', natsUrl: `nats://127.0.0.1:${nats.port}`, serveArgs: ['--workers', String(workers)] });
    try {
      return await runFanout(relayClients(relay.port, relay.port), [nats.pid, relay.pid], plan);
    } finally {
      await relay.stop();
    }
  } finally {
    await nats.stop();
  }
}

/** One row, measured by this process (fanout-row.ts runs it in a process of its own). */
export async function measure(system: string, plan: FanoutPlan): Promise<FanoutFigures> {
  switch (system) {
    case OURS_MEMORY:
      return ourRelay(relayClients, plan);
    case OURS_NATS:
      return ourCluster(relayClients, plan);
    case OURS_RELIABLE_MEMORY:
      return ourRelay(reliableRelayClients, plan);
    case OURS_RELIABLE_NATS:
      return ourCluster(reliableRelayClients, plan);
    case ONE_WORKER:
      return ourWorkers(1, plan);
    case TWO_WORKERS:
      return ourWorkers(2, plan);
    case NATS: {
      const nats = await startNatsServer();
      try {
        return await runFanout(natsClients(nats.wsPort), [nats.pid], plan);
      } finally {
        await nats.stop();
      }
    }
    case MOSQUITTO: {
      const mosquitto = await startMosquitto();
      try {
        return await runFanout(mqttClients(mosquitto.wsPort), [mosquitto.pid], plan);
      } finally {
        await mosquitto.stop();
      }
    }
  }
  throw new Error(`unknown system ${system}`);
}

/** One row in a fresh generator process (fanout-row.ts), so that no row inherits the generator's state from the rows before it. */
async function measureInFreshGenerator(system: string, plan: FanoutPlan): Promise<FanoutFigures> {
  const out = await runCommand(process.execPath, ['--import', 'tsx', 'bench/scenarios/fanout-row.ts', JSON.stringify({ system, plan })], 15 * 60 * 1000);
  return JSON.parse(out.trim().split('\n').at(-1)!) as FanoutFigures;
}

function planFor(mode: Mode, subscribers: number): FanoutPlan {
  const small = subscribers < 1000;
  return {
    subscribers,
    seconds: mode === 'quick' ? 0.25 : small ? 2 : 4,
    window: subscribers >= 10000 ? 20 : 100,
    latencySeconds: mode === 'quick' ? 0.25 : small ? 2 : 3,
    latencyShares: mode === 'quick' || small ? [0.5] : [0.1, 0.25, 0.5],
  };
}

export async function fanoutScenario(mode: Mode): Promise<Outcome> {
  const sizes = mode === 'quick' ? [100] : [10, 100, 1000, 10000];
  const results: ScenarioResult[] = [];
  const ratios: Ratio[] = [];
  for (const subscribers of sizes) {
    const scenario = `fan-out ${subscribers}`;
    // Targets hold for large groups; small ones report the absolute p99 (and the ratios for reference).
    const large = subscribers >= 1000;
    const plan = planFor(mode, subscribers);
    // Quick mode runs every system on its one small group, nats-server first, so that each of ours is measured at
    // nats-server's half load in its own run: no second pass (four generators and relays fewer; its figures only
    // show that each path runs, and the order of the rows moves none that counts).
    const systems = mode === 'quick' ? [NATS, ...ALL_SYSTEMS.filter((s) => s !== NATS)] : subscribers <= 100 ? SMALL_GROUP_SYSTEMS : ALL_SYSTEMS;
    const byName = new Map<string, FanoutFigures>();
    const atPeerHalf = (): FanoutPlan['latencyRates'] => [{ name: PEER_HALF_LOAD, eventsPerSec: byName.get(NATS)!.eventsPerSec / 2 }];
    for (const system of systems) {
      process.stderr.write(`  ${scenario}: ${system}\n`);
      const f = await measureInFreshGenerator(system, mode === 'quick' && OURS.includes(system) ? { ...plan, latencyRates: atPeerHalf() } : plan);
      byName.set(system, f);
      // The row's figures are the row's own object: the second pass below adds to it.
      results.push({ scenario, system, ours: OURS.includes(system) || WORKER_ROWS.includes(system), value: f.deliveriesPerSec, unit: 'deliveries/s', figures: f });
    }
    // A figure from a row's generator process came through JSON: an empty histogram's NaN arrives as null, which
    // divided would read as a ratio of 0 (a p99 target met); quotient makes such a ratio not measured, saying why.
    const figure = (system: string, key: string) => ({ system, value: byName.get(system)![key] as number | null | undefined });
    const throughput = (ours: string, peer: string, target?: number) =>
      ratios.push({ scenario, ours, peer, ...quotient(figure(ours, 'deliveriesPerSec'), figure(peer, 'deliveriesPerSec')), target });
    /** Our p99 (`key`: the figure measured at `load`) against nats-server's at its half load. */
    const p99 = (ours: string, load: string, key = 'p99Ms') =>
      ratios.push({
        scenario,
        ours,
        peer: NATS,
        figure: `p99 ms at ${load}`,
        better: 'lower',
        ...quotient(figure(ours, key), figure(NATS, 'p99Ms')),
        target: large ? 0.5 : undefined,
      });
    throughput(OURS_NATS, NATS, large ? 1 : undefined);
    throughput(OURS_MEMORY, NATS);
    throughput(OURS_RELIABLE_NATS, NATS, large ? 1 : undefined);
    throughput(OURS_RELIABLE_MEMORY, NATS, large ? 1 : undefined);
    if (byName.has(MOSQUITTO)) {
      throughput(OURS_NATS, MOSQUITTO, large ? 2 : undefined);
      throughput(OURS_MEMORY, MOSQUITTO);
    }
    for (const ours of OURS) p99(ours, '50% load');
    if (byName.has(TWO_WORKERS)) throughput(TWO_WORKERS, ONE_WORKER, large ? 1 : undefined);
    // The second pass (see the top of this file): each of ours again, briefly saturated, then at nats-server's half
    // load (quick mode measured it in the first).
    if (!large && mode === 'full') continue;
    for (const ours of mode === 'full' ? OURS : []) {
      process.stderr.write(`  ${scenario}: ${ours}, p99 at nats-server's half load\n`);
      const again = await measureInFreshGenerator(ours, { ...plan, seconds: Math.min(plan.seconds, 1), latencyShares: [0.5], latencyRates: atPeerHalf() });
      byName.get(ours)![AT_PEER_HALF] = again[AT_PEER_HALF];
    }
    for (const ours of OURS) p99(ours, "nats-server's 50% load", AT_PEER_HALF);
  }
  return { results, ratios };
}
