// Bridge throughput: what a tunnel user runs end to end. TCP bytes go into
// `edge-relay bridge -L`, through a relayed WebSocket on the relay to
// `edge-relay bridge -R`, and out as TCP to the receiver: three processes
// between sender and receiver. Against it, the same bytes through socat and
// through haproxy in tcp mode (one process between), and over a plain
// loopback connection (none). Measured twice in the same run: with our
// sender and counting sink (1 GiB transfers) and with iperf3 (one stream,
// `iperf3 -c` to an `iperf3 -s`), so the figures do not rest on our generator
// alone. Each in three rounds (one in quick mode) of every path one after the
// other; a ratio is the median of the ratios within a round, a row the median run.
import { runIperf3, type Iperf3Figures } from '../lib/iperf3.ts';
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { startBridgeChain, startHaproxy, startIperf3Server, startRelay, startSocat } from '../lib/systems.ts';
import { overTcp, tcpSink, type Transfer } from '../lib/transfer.ts';
import { medianBy, pairedMedian, runRounds, runsOf } from '../lib/rounds.ts';
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

/** Each ratio the median over the rounds of ours / peer within a round, by rate. */
function ratiosFor(scenario: string, rounds: Map<string, { bytesPerSec: number }>[]): Ratio[] {
  const paired = (peer: string) => pairedMedian(rounds, BRIDGE, peer, (ours, p) => ours.bytesPerSec / p.bytesPerSec);
  const figure = rounds.length > 1 ? { figure: `MiB/s, median of ${rounds.length} rounds` } : {};
  return [
    { scenario, ours: BRIDGE, peer: SOCAT, ...figure, ratio: paired(SOCAT), target: 1 },
    { scenario, ours: BRIDGE, peer: HAPROXY, ...figure, ratio: paired(HAPROXY) },
    { scenario, ours: BRIDGE, peer: DIRECT, ...figure, ratio: paired(DIRECT) },
  ];
}

export async function bridgeScenario(mode: Mode): Promise<Outcome> {
  const total = (mode === 'quick' ? 16 : 1024) * 1024 * 1024;
  const roundCount = mode === 'quick' ? 1 : 3;
  const iperfSeconds = mode === 'quick' ? 1 : 5;
  // iperf3's warm-up second, left out of its figures, is left out of quick mode's run altogether.
  const iperfOmitSeconds = mode === 'quick' ? 0 : undefined;
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
    const transfers = await runRounds(roundCount, toSink, (p) => overTcp(p.port, sink.received, total, p.pids), scenario);
    for (const p of toSink) {
      const t: Transfer = medianBy(runsOf(transfers, p.system), (r) => r.bytesPerSec);
      results.push({
        scenario,
        system: p.system,
        ours: p.ours,
        value: t.bytesPerSec / 1048576,
        unit: 'MiB/s',
        figures: { bytesPerSec: t.bytesPerSec, bytes: total, generatorCpu: t.generatorCpu, serverCpu: t.serverCpu, serverKernelCpu: t.serverKernelCpu, rounds: roundCount },
      });
    }
    ratios.push(...ratiosFor(scenario, transfers));

    const iperfScenario = `bridge, iperf3 ${iperfSeconds} s`;
    const streams = await runRounds(roundCount, toIperf, (p) => runIperf3(p.port, iperfSeconds, iperf.pid, p.pids, iperfOmitSeconds), iperfScenario);
    for (const p of toIperf) {
      const f: Iperf3Figures = medianBy(runsOf(streams, p.system), (r) => r.bytesPerSec);
      results.push({ scenario: iperfScenario, system: p.system, ours: p.ours, value: f.bytesPerSec / 1048576, unit: 'MiB/s', figures: { ...f, rounds: roundCount } });
    }
    ratios.push(...ratiosFor(iperfScenario, streams));
  } finally {
    for (const s of started.reverse()) await s.stop();
    for (const s of sink.sockets) s.destroy();
    sink.server.close();
  }
  return { results, ratios };
}
