// `npm test`: node's test runner (through tsx) over every test file, in two
// runs. Files that start no process that works beside their tests (no relay
// process, no NATS cluster, no CLI, browser or bench; one nats-server, an
// openssl key or a short synchronous command are light) run two at a time:
// two processes on two cores, most of each file's time being its start-up
// (tsx and the relay's modules). Files that start such processes run one at
// a time after them, as every file did before: a cluster or a bench beside
// another file would share its cores, and their timing-bounded waits with it.
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
 * its files run two at a time): relays, edges, NATS clusters, the CLI, client
 * scripts, the browser, the bench, any other spawned process. Not here: one
 * nats-server (startNatsServer; an edge's bus, idle between messages), openssl
 * making keys (makePki) and a command run to its end (spawnSync).
 */
const STARTS_PROCESSES =
  /\b(startRelayProcess|startServeProcess|startHostileRelay|startNatsCluster|startEdge|startCluster|runCli|runClientScript|openBrowser|runQuick|runBench|spawn|fork|execFile|execFileSync)\(/;

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : testFiles(path);
    return entry.name.endsWith('.test.ts') ? [relative(ROOT, path)] : [];
  });
}

function runTests(files: string[], concurrency: number): Promise<number> {
  if (files.length === 0) return Promise.resolve(0);
  const args = ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${TEST_TIMEOUT_MS}`, ...files];
  process.stdout.write(`# node ${args.slice(0, 5).join(' ')} (${files.length} files)\n`);
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'inherit' });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ? 1 : (code ?? 1))));
}

const chosen = process.argv.slice(2);
if (chosen.length > 0) {
  process.exitCode = await runTests(chosen, 1);
} else {
  const files = testFiles(join(ROOT, 'test')).sort();
  const alone = files.filter((file) => STARTS_PROCESSES.test(readFileSync(join(ROOT, file), 'utf8')));
  const sideBySide = files.filter((file) => !alone.includes(file));
  const first = await runTests(sideBySide, 2);
  const second = await runTests(alone, 1);
  process.exitCode = first || second;
}
