// wrk, an HTTP load generator nobody here wrote, as a cross-check of our own
// (lean-http.ts): `wrk -t1 -cN` against a URL for a number of seconds, with a
// Lua `done` hook that prints the figures as one JSON line (wrk's own summary
// has no p99.9 and rounds). Latencies are wrk's, per request, closed loop
// like ours. The generator's CPU is wrk's own, read when it is reaped.
import { CpuMeter, reapedChildrenCpu, runCommand, tempDir, writeTemp } from './processes.ts';

const DONE_HOOK = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH-WRK {"requests":%d,"durationUs":%d,"socketErrors":%d,"statusErrors":%d,"p50":%d,"p99":%d,"p999":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
`;

let script: string | undefined;

export interface WrkFigures {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

/**
 * `wrk -t1 -c<connections> -d<seconds>s` against http://127.0.0.1:port/path; `pids` are the system's processes (CPU).
 * With `warmSeconds`, a run that long comes first and is not counted, as our generator warms each row up: without
 * it a row of a system that idled while the others were loaded counted its first requests (a Node process's first
 * second after a pause, code warming up) where our generator's did not, and the two generators measured two things.
 */
export async function runWrk(port: number, path: string, connections: number, seconds: number, pids: number[], warmSeconds = 0): Promise<WrkFigures> {
  script ??= writeTemp(tempDir(), 'done.lua', DONE_HOOK);
  if (warmSeconds > 0) {
    await runCommand('wrk', ['-t1', `-c${connections}`, `-d${warmSeconds}s`, '--timeout', '10s', `http://127.0.0.1:${port}${path}`], (warmSeconds + 30) * 1000);
  }
  const reapedBefore = reapedChildrenCpu();
  const meter = new CpuMeter(pids);
  const t0 = performance.now();
  const out = await runCommand(
    'wrk',
    ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, `http://127.0.0.1:${port}${path}`],
    (seconds + 30) * 1000,
  );
  const wall = (performance.now() - t0) / 1000;
  const cpu = meter.read();
  const line = /BENCH-WRK (\{.*\})/.exec(out);
  if (!line) throw new Error(`wrk printed no figures:\n${out.slice(-2000)}`);
  const f = JSON.parse(line[1]) as { requests: number; durationUs: number; socketErrors: number; statusErrors: number; p50: number; p99: number; p999: number };
  // Every request must have been answered 200 on a kept-alive connection: a
  // connection error (refused, reset, timed out) fails the row, as our own
  // generator does, rather than leaving a rate with holes in it.
  if (f.statusErrors > 0 || f.socketErrors > 0) throw new Error(`wrk: ${f.statusErrors} non-2xx answers, ${f.socketErrors} socket errors (connect, read, write, timeout)`);
  if (f.requests === 0) throw new Error('wrk: no request completed');
  return {
    requestsPerSec: f.requests / (f.durationUs / 1e6),
    p50Ms: f.p50 / 1000,
    p99Ms: f.p99 / 1000,
    p999Ms: f.p999 / 1000,
    generatorCpu: (100 * (reapedChildrenCpu() - reapedBefore)) / wall,
    serverCpu: cpu.servers,
    serverKernelCpu: cpu.serversKernel,
  };
}
