// A relay run under valgrind's callgrind for the instruction-count benches
// (http-instructions.ts, fanout-instructions.ts): started with counting off,
// counting switched on and off around the measured work, and the main
// thread's dump read for its instruction totals.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, hasCommand, startProcess, type Started } from './processes.ts';

/** The launcher's allocator setting (bin/edge-relay), given here since valgrind runs node itself. */
const GLIBC_TUNABLES = 'glibc.malloc.trim_threshold=67108864:glibc.malloc.top_pad=16777216';

/** Ends the process (exit 2) saying what to install when valgrind's callgrind is not there; `bench` names the caller. */
export function requireCallgrind(bench: string): void {
  if (hasCommand('valgrind') && hasCommand('callgrind_annotate')) return;
  process.stderr.write(`${bench}: needs valgrind (apt-get install valgrind)\n`);
  process.exit(2);
}

/** Writes an instruction bench's figures to `out` (default bench/results/{bench}.json), with the time and node's version. */
export function writeCounts(bench: string, out: string | undefined, figures: object): void {
  const file = out ?? join(ROOT, `bench/results/${bench}.json`);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ at: new Date().toISOString(), node: process.version, ...figures }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
}

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

/** Node flags for a relay whose profile is kept: a perf map of its JIT code (`/tmp/perf-PID.map`), V8's log in `dir`. */
export function profilingFlags(dir: string): string[] {
  return ['--perf-basic-prof', `--logfile=${join(dir, 'v8.log')}`];
}

/** JIT code ranges from node's `--perf-basic-prof` map (moved to `keepAs`): start, end, name. */
function perfMap(pid: number, keepAs: string): { start: number; end: number; name: string }[] {
  const file = `/tmp/perf-${pid}.map`;
  if (!existsSync(file)) return [];
  copyFileSync(file, keepAs);
  const ranges = readFileSync(file, 'utf8').split('\n').flatMap((line) => {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    return m ? [{ start: parseInt(m[1], 16), end: parseInt(m[1], 16) + parseInt(m[2], 16), name: m[3] }] : [];
  });
  rmSync(file, { force: true });
  return ranges;
}

/** Copies the dump to `dir` and writes the top 40 functions by their own instructions, JIT addresses named. */
export function keepProfile(dir: string, kind: string, dump: string, pid: number): void {
  mkdirSync(dir, { recursive: true });
  copyFileSync(dump, join(dir, `callgrind.${kind}.out`));
  const ranges = perfMap(pid, join(dir, `perf.${kind}.map`));
  const nameOf = (address: number) => {
    // The last range holding the address: V8 may reuse code space, and a later entry is the code there now.
    for (let i = ranges.length - 1; i >= 0; i--) if (address >= ranges[i].start && address < ranges[i].end) return ranges[i].name;
    return undefined;
  };
  const self = execFileSync('callgrind_annotate', [dump], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const top = self
    .split('\n')
    .filter((line) => /^\s*[\d,]+ \(/.test(line) && !line.includes('PROGRAM TOTALS'))
    .slice(0, 40)
    .map((line) => line.replace(/\?\?\?:0x([0-9a-f]+) \[\?\?\?\]/, (all, hex: string) => nameOf(parseInt(hex, 16)) ?? all));
  writeFileSync(join(dir, `top.${kind}.txt`), `${top.join('\n')}\n`);
}
