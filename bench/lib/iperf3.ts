// iperf3, a TCP throughput generator nobody here wrote, as a cross-check of
// our own transfers: one stream from `iperf3 -c` through whatever listens on
// `port` to an iperf3 server, for a number of seconds. The figure is what the
// server received per second, after a first second left out (`-O 1`: TCP's
// slow start and each system's warm-up, as the other rows warm up before they
// count; reviewed 2026-12-05). The generator's CPU is the client's (read when
// it is reaped) and the server's (its sink); the system's is `pids`'.
import { CpuMeter, reapedChildrenCpu, runCommand, treeCpuTimes } from './processes.ts';

export interface Iperf3Figures {
  bytesPerSec: number;
  bytes: number;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

/** Seconds at the start that iperf3 sends but leaves out of its figures (quick mode leaves none out: its figures only show the path runs). */
const OMIT_SECONDS = 1;

interface Iperf3Json {
  error?: string;
  end: { sum_received: { bytes: number; bits_per_second: number } };
}

export async function runIperf3(port: number, seconds: number, serverPid: number, pids: number[], omitSeconds = OMIT_SECONDS): Promise<Iperf3Figures> {
  const reapedBefore = reapedChildrenCpu();
  const sinkBefore = treeCpuTimes(serverPid);
  const meter = new CpuMeter(pids);
  const t0 = performance.now();
  const out = await runCommand('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-O', String(omitSeconds), '-J'], (seconds + omitSeconds + 30) * 1000);
  const wall = (performance.now() - t0) / 1000;
  const cpu = meter.read();
  const sinkAfter = treeCpuTimes(serverPid);
  const report = JSON.parse(out) as Iperf3Json;
  if (report.error) throw new Error(`iperf3: ${report.error}`);
  const received = report.end.sum_received;
  if (!(received.bytes > 0)) throw new Error('iperf3: nothing received');
  const sinkSeconds = sinkAfter.user + sinkAfter.system - sinkBefore.user - sinkBefore.system;
  return {
    bytesPerSec: received.bits_per_second / 8,
    bytes: received.bytes,
    generatorCpu: (100 * (reapedChildrenCpu() - reapedBefore + sinkSeconds)) / wall,
    serverCpu: cpu.servers,
    serverKernelCpu: cpu.serversKernel,
  };
}
