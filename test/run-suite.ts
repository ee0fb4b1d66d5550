// `npm test`: node's test runner (through tsx) over every test file, in two
// runs side by side. The clusters' lane runs one file at a time the files that
// start a NATS cluster, three or more edges, `serve --workers` with two or
// more, the bench or the browser, so two of them never share the two cores
// (two edges on one nats-server run with the others: until 2026-12-07 they
// ran in the clusters' lane, which then took 597 s beside the others' 552 s,
// the suite 599 s; with those four files moved: 545 s and 556 s, 557 s). The other
// run takes every other file: light files (at most one nats-server, openssl
// keys, a short command), whose time is mostly start-up (tsx's loader and the
// relay's modules) and waits on timers and sockets, and files with one or two
// relay processes or edges, the CLI or a client script. Those files share
// processes, ten to one (./suite/shared-processes.ts: a file that measures
// its own process's memory keeps one of its own), three processes at a time:
// one file a process, that run took 552-678 s and its files 640 s of CPU,
// the suite 1,000-1,175 s of CPU and 545-678 s; six to one, that run 443 s,
// the suite 830 s of CPU and 505 s; ten to one, 402 s, 800 s and 498 s
// (2026-12-07, the same machine, all 1,339 tests passing each time). The
// clusters' lane is then the longer. Each file runs in a suite of its name
// with the timeout it had as a file of its own; the runner's bounds a group,
// and a process still alive 30 s after its files' tests ended fails, naming
// what kept it alive (a file of its own would have hit its 120 s).
// Until 2026-12-05 the light files ran first, alone, and the others
// then in a lane of their own beside the clusters': the cores sat idle a
// quarter of the time (605 s for 906 s of CPU on 2 cores) and the suite came
// within seconds of its 10 minutes; side by side it took 499-522 s for the
// same CPU. A file's lane follows what it starts, not its folder: a file
// under test/cluster/ with one edge runs with the others. The bench and the
// browser come last in the clusters' lane, after a run of the rest of it:
// the other run has most likely ended by then.
//
// `npm test -- FILE...` runs just those files, one at a time, each in a
// process of its own. Either way the
// output ends with each failed test again (./suite/failure-summary.ts): CI
// keeps only the tail of what a run printed. The report of the shared
// processes' run begins with the files each of them ran.
//
// The relays and commands the tests start run as users run them, through
// bin/edge-relay: from the CLI's bundle (made here first when a source
// changed), which took the suite from 1,162 s of CPU (650 s wall) through
// tsx to 838 s (487 s).
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleToRun } from '../bin/bundle.mjs';
import { failureSummary } from './suite/failure-summary.ts';
import { dealIntoGroups, FILES_PER_PROCESS, needsOwnProcess, writeSharedEntries } from './suite/shared-processes.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TEST_TIMEOUT_MS = 120000;

/** Calls that start a NATS cluster (with its edges), the bench or the browser: such files run in the clusters' lane. */
const STARTS_CLUSTERS = /\b(startNatsCluster|startCluster|openBrowser|runQuick|runBench)\(/;
/** One edge (a relay process on NATS) per call: a file with EDGES_FOR_CLUSTERS or more such calls runs in the clusters' lane. */
const STARTS_EDGE = /\bstartEdge\(/g;
const EDGES_FOR_CLUSTERS = 3;
/** `serve --workers N` with N of two or more: a primary and its workers, each an edge. */
const STARTS_WORKERS = /'--workers',\s*'([2-9]|\d\d+)'/;
/**
 * How long a shared process may stay alive after its files' tests ended (./suite/shared-processes.ts): long enough
 * for child processes and sockets to close, far shorter than the group's timeout.
 */
const LINGER_MS = 30000;
/** Files outside the clusters' lane run in this many processes at a time (see the top of this file). */
const OTHERS_CONCURRENCY = 3;

/** Whether a file starts three or more edges, a NATS cluster, the bench or the browser. */
function startsClusters(source: string): boolean {
  return STARTS_CLUSTERS.test(source) || STARTS_WORKERS.test(source) || (source.match(STARTS_EDGE)?.length ?? 0) >= EDGES_FOR_CLUSTERS;
}
/** The bench and the browser keep both cores busy: last in their lane, when the other lane has most likely ended. */
const KEEPS_CORES_BUSY = /\b(openBrowser|runQuick|runBench)\(/;

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : testFiles(path);
    return entry.name.endsWith('.test.ts') ? [relative(ROOT, path)] : [];
  });
}

/** Everything the runs printed, for the failures repeated at the end. */
const reports: Buffer[] = [];

/** How a run of node's test runner is made and reported. */
interface RunOptions {
  /** How many files (processes) at a time. */
  concurrency: number;
  /** The runner's `--test-timeout`: each file's, and each test's where nothing closer sets one. */
  timeoutMs?: number;
  /** Its output in one piece when it ends, not as it comes (so two lanes' reports do not mix). */
  held?: boolean;
  /** What the files are, on the report's first line. */
  what?: string;
  /** Lines of their own after that one. */
  notes?: string[];
}

/** Runs `files` with node's test runner, its output passed on to ours. */
function runTests(files: string[], { concurrency, timeoutMs = TEST_TIMEOUT_MS, held = false, what = `${files.length} files`, notes = [] }: RunOptions): Promise<number> {
  if (files.length === 0) return Promise.resolve(0);
  const args = ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeoutMs}`, '--test-reporter=tap', ...files];
  const out: Buffer[] = [Buffer.from([`# node ${args.slice(0, 5).join(' ')} (${what})`, ...notes.map((note) => `# ${note}`), ''].join('\n'))];
  if (!held) process.stdout.write(out[0]);
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const take = (d: Buffer) => {
    out.push(d);
    if (!held) process.stdout.write(d);
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      const report = Buffer.concat(out);
      if (held) process.stdout.write(report);
      reports.push(report);
      resolve(signal ? 1 : (code ?? 1));
    }),
  );
}

// The CLI's bundle made now, if a source changed since it was (bin/bundle.mjs), rather than by the first processes
// the tests start, several at once.
bundleToRun();

const chosen = process.argv.slice(2);
if (chosen.length > 0) {
  process.exitCode = await runTests(chosen, { concurrency: 1 });
} else {
  const files = testFiles(join(ROOT, 'test')).sort();
  const source = (file: string) => readFileSync(join(ROOT, file), 'utf8');
  const clusters = files.filter((file) => startsClusters(source(file)));
  const others = files.filter((file) => !clusters.includes(file));
  // node's test runner orders the files it is given by name: the busy ones go in a run of their own.
  const busy = clusters.filter((file) => KEEPS_CORES_BUSY.test(source(file)));
  const clusterLane = async () => {
    const calm = await runTests(clusters.filter((file) => !busy.includes(file)), { concurrency: 1 });
    return (await runTests(busy, { concurrency: 1 })) || calm;
  };
  const othersLane = async () => {
    // Every file through an entry, those that keep a process of their own too: each file is then bounded by its
    // suite's TEST_TIMEOUT_MS, and the runner's timeout bounds a whole group.
    const alone = others.filter((file) => needsOwnProcess(source(file)));
    const groups = [...dealIntoGroups(others.filter((file) => !alone.includes(file)), FILES_PER_PROCESS), ...alone.map((file) => [file])];
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-suite-'));
    try {
      const entries = writeSharedEntries(groups, dir, ROOT, { perFileTimeoutMs: TEST_TIMEOUT_MS, lingerMs: LINGER_MS });
      return await runTests(
        entries.map((entry) => entry.path),
        {
          concurrency: OTHERS_CONCURRENCY,
          timeoutMs: TEST_TIMEOUT_MS * (FILES_PER_PROCESS + 1),
          held: true,
          what: `${others.length} files in ${entries.length} processes, ${alone.length} of them alone`,
          notes: entries.map((entry) => `${relative(dir, entry.path)}: ${entry.files.join(' ')}`),
        },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const [first, second] = await Promise.all([clusterLane(), othersLane()]);
  process.exitCode = first || second;
}
process.stdout.write(failureSummary(Buffer.concat(reports).toString('utf8')));
