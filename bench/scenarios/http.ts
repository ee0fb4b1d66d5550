// HTTP relay: small GET requests through the relay to a lean listener that
// answers them itself, against the same answer from a server as lean
// (bench/peers/http-answerer.ts: no node:http on either side) reached
// directly and through nginx as a reverse proxy (1 worker, and `auto`: one
// per core) holding a keep-alive pool to that server. A fixed number of
// keep-alive connections each keep one request in flight, from our generator
// (lean-http.ts) and, as a cross-check, from wrk -t1 in the same run. Two
// floors beside them (bench/peers/floor-relay.ts): the same listener behind a
// Node process that relays these GETs with nothing else, senders read by a
// bare `net` server or by node:http, say what Node allows and what is ours.
import { cpus } from 'node:os';
import { Histogram } from '../lib/histogram.ts';
import { LeanHttpConnection } from '../lib/lean-http.ts';
import { CpuMeter, startAll, startProcess } from '../lib/processes.ts';
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { medianBy, pairedMedian, runRounds, runsOf } from '../lib/rounds.ts';
import { ENTITY, startNginx, startRelay } from '../lib/systems.ts';
import { runWrk, type WrkFigures } from '../lib/wrk.ts';
import type { Mode, Outcome } from './index.ts';

const RELAY = 'edge-relay -> listener';
const NGINX_1 = 'nginx, 1 worker -> lean http server';
const NGINX_AUTO = `nginx, auto (${cpus().length} workers) -> lean http server`;
const DIRECT = 'lean http server, direct';
/** The least a Node relay of this protocol does (bench/peers/floor-relay.ts): what bounds our rows, and what is ours. */
const FLOOR_NET = 'Node floor: bare net front -> listener';
const FLOOR_NODE_HTTP = 'Node floor: node:http front -> listener';

/** One row's figures, from our generator or from wrk: the same shape. */
type Load = WrkFigures;

async function load(port: number, path: string, pids: number[], connections: number, seconds: number, warmMs: number): Promise<Load> {
  const clients = await Promise.all(Array.from({ length: connections }, () => LeanHttpConnection.open(port, path)));
  try {
    // Warm-up, not counted.
    const warmUntil = performance.now() + warmMs;
    await Promise.all(clients.map(async (c) => { while (performance.now() < warmUntil) await c.get(); }));
    const histogram = new Histogram();
    let done = 0;
    const meter = new CpuMeter(pids);
    const t0 = performance.now();
    const until = t0 + seconds * 1000;
    await Promise.all(
      clients.map(async (c) => {
        while (performance.now() < until) {
          histogram.record(await c.get());
          done++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = meter.read();
    return { requestsPerSec: done / elapsed, ...histogram.figuresMs(), generatorCpu: cpu.generator, serverCpu: cpu.servers, serverKernelCpu: cpu.serversKernel };
  } finally {
    for (const c of clients) c.close();
  }
}

interface Target {
  system: string;
  ours: boolean;
  port: number;
  path: string;
  pids: number[];
}

/** Ratios of one scenario's rows, each the median over the rounds of the ratio within a round (paired in time). */
function ratiosFor(scenario: string, rounds: Map<string, Load>[]): Ratio[] {
  const of = rounds.length > 1 ? `, median of ${rounds.length} rounds` : '';
  const paired = (peer: string, f: (ours: Load, peer: Load) => number) => pairedMedian(rounds, RELAY, peer, f);
  const rate = (ours: Load, peer: Load) => ours.requestsPerSec / peer.requestsPerSec;
  const rateFigure = of ? { figure: `requests/s${of}` } : {};
  return [
    { scenario, ours: RELAY, peer: NGINX_1, ...rateFigure, ratio: paired(NGINX_1, rate), target: 0.8 },
    { scenario, ours: RELAY, peer: NGINX_1, figure: `p99 ms${of}`, better: 'lower', ratio: paired(NGINX_1, (o, p) => o.p99Ms / p.p99Ms), target: 2 },
    { scenario, ours: RELAY, peer: NGINX_AUTO, ...rateFigure, ratio: paired(NGINX_AUTO, rate) },
    { scenario, ours: RELAY, peer: DIRECT, ...rateFigure, ratio: paired(DIRECT, rate), target: 0.5 },
    // No targets: how far the relay is from what Node allows, with a bare front and with node:http's.
    { scenario, ours: RELAY, peer: FLOOR_NET, ...rateFigure, ratio: paired(FLOOR_NET, rate) },
    { scenario, ours: RELAY, peer: FLOOR_NODE_HTTP, ...rateFigure, ratio: paired(FLOOR_NODE_HTTP, rate) },
  ];
}

/**
 * At 32 connections a relayed request's two extra hops (to the listener and
 * back) bound the rate more than CPU does; at 128 both sides are CPU-bound.
 * Every system runs for the whole scenario; each row loads one at a time.
 */
export async function httpScenario(mode: Mode): Promise<Outcome> {
  const seconds = mode === 'quick' ? 0.25 : 3;
  // Each row is warmed up first, not counted, by the generator that measures it (wrk's least is 1 s).
  const warmMs = mode === 'quick' ? 100 : 1000;
  const wrkWarmSeconds = mode === 'quick' ? 0 : 1;
  // Rounds of every system, one after the other, so each ratio is paired in
  // time: single 5 s runs moved wrk's ratio by 0.2 and its p99 by 5x between
  // runs minutes apart on this shared machine.
  const roundCount = Number(process.env.BENCH_HTTP_ROUNDS ?? (mode === 'quick' ? 1 : 3));
  // Quick mode checks that every system and generator runs; 128 connections is the same path again.
  const connectionCounts = mode === 'quick' ? [32] : [32, 128];
  const started: { stop(): Promise<void> }[] = [];
  const results: ScenarioResult[] = [];
  const ratios: Ratio[] = [];
  try {
    // Started side by side where they do not depend on each other.
    const [relay, direct, floorNet, floorNodeHttp] = await startAll(started, [
      startRelay(),
      startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/http-answerer.ts', 'direct'], /ready (\d+)/),
      startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/floor-relay.ts', 'net'], /ready (\d+)/),
      startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/floor-relay.ts', 'node-http'], /ready (\d+)/),
    ] as const);
    const directPort = Number(direct.match[1]);
    const floorNetPort = Number(floorNet.match[1]);
    const floorNodeHttpPort = Number(floorNodeHttp.match[1]);
    const answerer = (port: number) => startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/http-answerer.ts', 'relay', String(port)], /ready (\d+)/);
    const [listener, floorNetListener, floorNodeHttpListener, nginx1, nginxAuto] = await startAll(started, [
      answerer(relay.port),
      answerer(floorNetPort),
      answerer(floorNodeHttpPort),
      startNginx(directPort, 1),
      startNginx(directPort, 'auto'),
    ] as const);
    const targets: Target[] = [
      { system: RELAY, ours: true, port: relay.port, path: `/${ENTITY}/hello`, pids: [relay.pid, listener.pid] },
      { system: NGINX_1, ours: false, port: nginx1.port, path: '/hello', pids: [nginx1.pid, direct.pid] },
      { system: NGINX_AUTO, ours: false, port: nginxAuto.port, path: '/hello', pids: [nginxAuto.pid, direct.pid] },
      { system: DIRECT, ours: false, port: directPort, path: '/hello', pids: [direct.pid] },
      { system: FLOOR_NET, ours: false, port: floorNetPort, path: `/${ENTITY}/hello`, pids: [floorNet.pid, floorNetListener.pid] },
      { system: FLOOR_NODE_HTTP, ours: false, port: floorNodeHttpPort, path: `/${ENTITY}/hello`, pids: [floorNodeHttp.pid, floorNodeHttpListener.pid] },
    ];
    for (const connections of connectionCounts) {
      for (const generator of ['ours', 'wrk'] as const) {
        const scenario = `HTTP GET, ${connections} connections${generator === 'wrk' ? ', wrk -t1' : ''}`;
        const rounds = await runRounds(
          roundCount,
          targets,
          (t) =>
            generator === 'ours'
              ? load(t.port, t.path, t.pids, connections, seconds, warmMs)
              : runWrk(t.port, t.path, connections, Math.max(1, Math.round(seconds)), t.pids, wrkWarmSeconds),
          scenario,
        );
        for (const t of targets) {
          // The row shows the round with the median rate; the ratios pair the rounds.
          const all = runsOf(rounds, t.system);
          const { requestsPerSec, ...figures } = medianBy(all, (l) => l.requestsPerSec);
          results.push({ scenario, system: t.system, ours: t.ours, value: requestsPerSec, unit: 'requests/s', figures: { ...figures, rounds: all.length } });
        }
        ratios.push(...ratiosFor(scenario, rounds));
      }
    }
  } finally {
    for (const s of started.reverse()) await s.stop();
  }
  return { results, ratios };
}
