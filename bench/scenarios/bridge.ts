// Bridge throughput: what a tunnel user runs end to end. TCP bytes go into
// `edge-relay bridge -L`, through a relayed WebSocket on the relay to
// `edge-relay bridge -R`, and out as TCP to the receiver: three processes
// between sender and receiver. Against it, the same bytes through socat and
// through haproxy in tcp mode (one process between), and over a plain
// loopback connection (none). Measured twice in the same run: with our
// sender and counting sink (the median of three 1 GiB transfers) and with
// iperf3 (one stream, `iperf3 -c` to an `iperf3 -s`), so the figures do not
// rest on our generator alone.
import { runIperf3, type Iperf3Figures } from '../lib/iperf3.ts';
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { startBridgeChain, startHaproxy, startIperf3Server, startRelay, startSocat } from '../lib/systems.ts';
import { median, overTcp, tcpSink, type Transfer } from '../lib/transfer.ts';
import { startAll } from '../lib/processes.ts';
import type { Mode, Outcome } from './index.ts';

const BRIDGE = 'edge-relay bridge -L -> relay -> bridge -R';
const SOCAT = 'socat';
const HAPROXY = 'haproxy (tcp mode)';
const DIRECT = 'plain TCP over loopback';

interface Path {
  system: string;
  ours: boolean;
  /** Where the sender connects. */
  port: number;
  /** The processes between sender and receiver. */
  pids: number[];
}

function ratiosFor(scenario: string, rate: Map<string, number>): Ratio[] {
  const ours = rate.get(BRIDGE)!;
  return [
    { scenario, ours: BRIDGE, peer: SOCAT, ratio: ours / rate.get(SOCAT)!, target: 1 },
    { scenario, ours: BRIDGE, peer: HAPROXY, ratio: ours / rate.get(HAPROXY)! },
    { scenario, ours: BRIDGE, peer: DIRECT, ratio: ours / rate.get(DIRECT)! },
  ];
}

export async function bridgeScenario(mode: Mode): Promise<Outcome> {
  const total = (mode === 'quick' ? 16 : 1024) * 1024 * 1024;
  const runs = mode === 'quick' ? 1 : 3;
  const iperfSeconds = mode === 'quick' ? 1 : 5;
  const started: { stop(): Promise<void> }[] = [];
  const sink = await tcpSink();
  const results: ScenarioResult[] = [];
  const ratios: Ratio[] = [];
  try {
    const [iperf, relay] = await startAll(started, [startIperf3Server(), startRelay()] as const);
    // One chain, socat and haproxy per receiver: our sink, and iperf3's (started side by side).
    const paths = async (target: number, entity: string): Promise<Path[]> => {
      const [chain, socat, haproxy] = await startAll(started, [startBridgeChain(relay.port, target, entity), startSocat(target, { fork: true }), startHaproxy(target)] as const);
      return [
        { system: BRIDGE, ours: true, port: chain.port, pids: [relay.pid, ...chain.pids] },
        { system: SOCAT, ours: false, port: socat.port, pids: [socat.pid] },
        { system: HAPROXY, ours: false, port: haproxy.port, pids: [haproxy.pid] },
        { system: DIRECT, ours: false, port: target, pids: [] },
      ];
    };
    const [toSink, toIperf] = await Promise.all([paths(sink.port, 'bench-bridge'), paths(iperf.port, 'bench-bridge-iperf3')]);

    const scenario = `bridge ${total / 1024 / 1024} MiB`;
    const rate = new Map<string, number>();
    for (const p of toSink) {
      process.stderr.write(`  ${scenario}: ${p.system}\n`);
      const t: Transfer = await median(runs, () => overTcp(p.port, sink.received, total, p.pids));
      rate.set(p.system, t.bytesPerSec);
      results.push({
        scenario,
        system: p.system,
        ours: p.ours,
        value: t.bytesPerSec / 1048576,
        unit: 'MiB/s',
        figures: { bytesPerSec: t.bytesPerSec, bytes: total, generatorCpu: t.generatorCpu, serverCpu: t.serverCpu, serverKernelCpu: t.serverKernelCpu },
      });
    }
    ratios.push(...ratiosFor(scenario, rate));

    const iperfScenario = `bridge, iperf3 ${iperfSeconds} s`;
    const iperfRate = new Map<string, number>();
    for (const p of toIperf) {
      process.stderr.write(`  ${iperfScenario}: ${p.system}\n`);
      const f: Iperf3Figures = await runIperf3(p.port, iperfSeconds, iperf.pid, p.pids);
      iperfRate.set(p.system, f.bytesPerSec);
      results.push({ scenario: iperfScenario, system: p.system, ours: p.ours, value: f.bytesPerSec / 1048576, unit: 'MiB/s', figures: { ...f } });
    }
    ratios.push(...ratiosFor(iperfScenario, iperfRate));
  } finally {
    for (const s of started.reverse()) await s.stop();
    for (const s of sink.sockets) s.destroy();
    sink.server.close();
  }
  return { results, ratios };
}
