// What a relay run under valgrind's callgrind (`--separate-threads=yes`) counted
// in its main thread: the dump's file and its instruction totals, for the
// instruction-count benches (http-instructions.ts, fanout-instructions.ts).
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

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
