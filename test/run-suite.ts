// `npm test`: node's test runner (through tsx) over every test file, in
// several runs. Files that start no process that works beside their tests (no relay
// process, no NATS cluster, no CLI, browser or bench; one nats-server, an
// openssl key or a short synchronous command are light) run three at a time
// on the two cores: most of such a file's time is its start-up (tsx's loader
// and the relay's modules, about 1.1 s) and waits on timers and sockets, so
// two at a time left the cores idle half the time (measured: 211 s for 104
// files, 213 s of CPU; three at a time 150-163 s). Files that start such
// processes run after them in two lanes side by side, each lane one file at a
// time: the clusters' lane (any file that starts several edges, a NATS
// cluster, `serve --workers` with two or more, the bench or the browser) and
// the lane of the others (one relay process or edge, the CLI, a client
// script). So two clusters or benches never share the two cores, and a
// cluster shares them with one single-relay file at most. A file's lane
// follows what it starts, not its folder: a file under test/cluster/ with
// one edge runs in the others' lane. The bench and the browser come last in
// theirs, after a run of the rest of it: the other lane has most likely ended
// by then.
//
// `npm test -- FILE...` runs just those files, one at a time.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TEST_TIMEOUT_MS = 120000;

/**
 * Calls that start a process a file's tests then run beside, doing work of its
 * own (test/helpers/ and bench/lib/ wrap them; a new wrapper belongs here, or
 * its files run three at a time): relays, edges, NATS clusters, the CLI, client
 * scripts, the browser, the bench, any other spawned process. Not here: one
 * nats-server (startNatsServer; an edge's bus, idle between messages), openssl
 * making keys (makePki) and a command run to its end (spawnSync).
 */
const STARTS_PROCESSES =
  /\b(startRelayProcess|startServeProcess|startHostileRelay|startNatsCluster|startEdge|startCluster|runCli|runClientScript|openBrowser|runQuick|runBench|spawn|fork|execFile|execFileSync)\(/;

/** Calls that start a NATS cluster (with its edges), the bench or the browser: such files run in the clusters' lane. */
const STARTS_CLUSTERS = /\b(startNatsCluster|startCluster|openBrowser|runQuick|runBench)\(/;
/** One edge (a relay process on NATS) per call: a file with two or more such calls starts several edges. */
const STARTS_EDGE = /\bstartEdge\(/g;
/** `serve --workers N` with N of two or more: a primary and its workers, each an edge. */
const STARTS_WORKERS = /'--workers',\s*'([2-9]|\d\d+)'/;
/** Light files run this many at a time (see the top of this file). */
const LIGHT_CONCURRENCY = 3;

/** Whether a file starts several edges, a NATS cluster, the bench or the browser. */
function startsClusters(source: string): boolean {
  return STARTS_CLUSTERS.test(source) || STARTS_WORKERS.test(source) || (source.match(STARTS_EDGE)?.length ?? 0) >= 2;
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

/**
 * Runs `files` with node's test runner. Its output goes to ours as it comes,
 * or, with `held`, in one piece when it ends (so two lanes' reports do not mix).
 */
function runTests(files: string[], concurrency: number, held = false): Promise<number> {
  if (files.length === 0) return Promise.resolve(0);
  const args = ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${TEST_TIMEOUT_MS}`, ...files];
  const title = `# node ${args.slice(0, 5).join(' ')} (${files.length} files)\n`;
  if (!held) {
    process.stdout.write(title);
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'inherit' });
    return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ? 1 : (code ?? 1))));
  }
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [Buffer.from(title)];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => out.push(d));
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      process.stdout.write(Buffer.concat(out));
      resolve(signal ? 1 : (code ?? 1));
    }),
  );
}

const chosen = process.argv.slice(2);
if (chosen.length > 0) {
  process.exitCode = await runTests(chosen, 1);
} else {
  const files = testFiles(join(ROOT, 'test')).sort();
  const source = (file: string) => readFileSync(join(ROOT, file), 'utf8');
  const alone = files.filter((file) => STARTS_PROCESSES.test(source(file)));
  const sideBySide = files.filter((file) => !alone.includes(file));
  const clusters = alone.filter((file) => startsClusters(source(file)));
  const others = alone.filter((file) => !clusters.includes(file));
  const first = await runTests(sideBySide, LIGHT_CONCURRENCY);
  // node's test runner orders the files it is given by name: the busy ones go in a run of their own.
  const busy = clusters.filter((file) => KEEPS_CORES_BUSY.test(source(file)));
  const clusterLane = async () => {
    const calm = await runTests(clusters.filter((file) => !busy.includes(file)), 1);
    return (await runTests(busy, 1)) || calm;
  };
  const [second, third] = await Promise.all([clusterLane(), runTests(others, 1, true)]);
  process.exitCode = first || second || third;
}
