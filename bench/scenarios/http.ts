// HTTP relay: small GET requests through the relay to a listener that answers
// them itself, against the same requests to an HTTP server reached directly.
// A fixed number of keep-alive connections each keep one request in flight.
import { Histogram } from '../lib/histogram.ts';
import { LeanHttpConnection } from '../lib/lean-http.ts';
import { CpuMeter, startProcess } from '../lib/processes.ts';
import type { ScenarioResult } from '../lib/report.ts';
import { ENTITY, startRelay } from '../lib/systems.ts';
import type { Mode, Outcome } from './index.ts';

interface Load {
  requestsPerSec: number;
  histogram: Histogram;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

async function load(port: number, path: string, pids: number[], connections: number, seconds: number): Promise<Load> {
  const clients = await Promise.all(Array.from({ length: connections }, () => LeanHttpConnection.open(port, path)));
  try {
    // Warm-up, not counted.
    const warmUntil = performance.now() + 500;
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
    return { requestsPerSec: done / elapsed, histogram, generatorCpu: cpu.generator, serverCpu: cpu.servers, serverKernelCpu: cpu.serversKernel };
  } finally {
    for (const c of clients) c.close();
  }
}

async function atConcurrency(mode: Mode, connections: number): Promise<Outcome> {
  const seconds = mode === 'quick' ? 1.5 : 5;
  const scenario = `HTTP GET, ${connections} connections`;
  const rows: [string, boolean, Load][] = [];
  const relay = await startRelay();
  try {
    const listener = await startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/http-answerer.ts', 'relay', String(relay.port)], /ready (\d+)/);
    try {
      rows.push(['edge-relay -> listener', true, await load(relay.port, `/${ENTITY}/hello`, [relay.pid, listener.pid], connections, seconds)]);
    } finally {
      await listener.stop();
    }
  } finally {
    await relay.stop();
  }
  const direct = await startProcess(process.execPath, ['--import', 'tsx', 'bench/peers/http-answerer.ts', 'direct'], /ready (\d+)/);
  try {
    rows.push(['node http server, direct', false, await load(Number(direct.match[1]), '/hello', [direct.pid], connections, seconds)]);
  } finally {
    await direct.stop();
  }
  const results: ScenarioResult[] = rows.map(([system, ours, l]) => ({
    scenario,
    system,
    ours,
    value: l.requestsPerSec,
    unit: 'requests/s',
    figures: {
      ...l.histogram.figuresMs(),
      generatorCpu: l.generatorCpu,
      serverCpu: l.serverCpu,
      serverKernelCpu: l.serverKernelCpu,
    },
  }));
  return { results, ratios: [{ scenario, ours: results[0].system, peer: results[1].system, ratio: results[0].value / results[1].value, target: 0.5 }] };
}

/**
 * At 32 connections a relayed request's two extra hops (to the listener and
 * back) bound the rate more than CPU does; at 128 both sides are CPU-bound.
 */
export async function httpScenario(mode: Mode): Promise<Outcome> {
  const outcomes = [await atConcurrency(mode, 32), await atConcurrency(mode, 128)];
  return { results: outcomes.flatMap((o) => o.results), ratios: outcomes.flatMap((o) => o.ratios) };
}
