// A relay run under valgrind's callgrind for the instruction-count benches
// (http-instructions.ts, fanout-instructions.ts): started with counting off,
// counting switched on and off around the measured work, and the main
// thread's dump read for its instruction totals.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startProcess, type Started } from './processes.ts';

/** The launcher's allocator setting (bin/edge-relay), given here since valgrind runs node itself. */
const GLIBC_TUNABLES = 'glibc.malloc.trim_threshold=67108864:glibc.malloc.top_pad=16777216';

export interface CallgrindRelay extends Started {
  port: number;
}

/** `edge-relay serve --config configFile` under callgrind, its dumps in `dir`; `nodeFlags` go to node. */
export async function startRelayUnderCallgrind(dir: string, configFile: string, nodeFlags: string[] = []): Promise<CallgrindRelay> {
  const started = await startProcess(
    'valgrind',
    ['--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', `--callgrind-out-file=${join(dir, 'callgrind.out')}`, process.execPath, ...nodeFlags, `${ROOT}bin/edge-relay.js`, 'serve', '--config', configFile],
    /listening on http:\/\/127\.0\.0\.1:(\d+)/,
    { timeoutMs: 180_000, env: { ...process.env, GLIBC_TUNABLES } },
  );
  return { ...started, port: Number(started.match[1]) };
}

/** Turns counting on or off in the process `pid` runs under callgrind. */
export function countInstructions(pid: number, on: boolean): void {
  execFileSync('callgrind_control', ['-i', on ? 'on' : 'off', String(pid)], { stdio: 'ignore' });
}

/** Has callgrind write its dumps now. */
export function dumpCounts(pid: number): void {
  execFileSync('callgrind_control', ['-d', String(pid)], { stdio: 'ignore' });
}

export interface MainThreadCount {
  /** The dump of the main thread (thread 1): `callgrind.out.PID-01`. */
  dump: string;
  /** Instructions in all. */
  total: number;
  /** Of them, in V8's garbage collector (inclusive of what it calls). */
  gc: number;
}

/** Reads the main thread's dump that callgrind wrote into `dir`. */
export function mainThreadCount(dir: string): MainThreadCount {
  const mainThread = readdirSync(dir).find((f) => /^callgrind\.out\.\d+-01$/.test(f));
  if (!mainThread) throw new Error(`no callgrind dump of the main thread in ${dir}`);
  const dump = join(dir, mainThread);
  const inclusive = execFileSync('callgrind_annotate', ['--inclusive=yes', dump], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const count = (pattern: RegExp) => Number(inclusive.split('\n').find((line) => pattern.test(line))?.trim().split(/\s+/)[0].replace(/,/g, '') ?? 0);
  return { dump, total: count(/PROGRAM TOTALS/), gc: count(/Heap::CollectGarbage\(/) };
}
