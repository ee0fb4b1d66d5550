// What tests start ends with their file, also when node's test runner ends
// the file for overrunning --test-timeout, which runs no after hook
// (test/helpers/child-processes.ts). Before: the processes lived on.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDirFor } from '../helpers/cleanup.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a file ended for overrunning --test-timeout takes a relay its test started and stopped with it (SIGKILL at its exit)', async (t) => {
  const runner = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=25000', '--test-reporter=tap', 'test/suite/fixtures/overruns-its-file.ts'], {
    cwd: ROOT,
    // Not as a file of this run (a runner told it is one reports in its own binary form). Its temporary folders
    // (the relay's config) in one of this test's: the file is ended before its own after hooks remove them.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined, TMPDIR: tempDirFor(t, 'edge-relay-overrun-') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let pid = 0;
  t.after(() => {
    runner.kill('SIGKILL');
    if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
  });
  let out = '';
  runner.stdout.on('data', (d: Buffer) => (out += d));
  runner.stderr.on('data', (d: Buffer) => (out += d));
  const exited = new Promise((resolve) => runner.once('exit', resolve));
  // A relay process starts in 1-2 s, on a loaded machine (the suite runs three files at a time) in up to ~10; the
  // runner may pass its file's output on only when the file ends, 25 s after its start.
  await until(() => /relay pid (\d+)/.test(out), 40000, 'the file to start its relay');
  pid = Number(/relay pid (\d+)/.exec(out)![1]);
  await withTimeout(exited, 40000, 'the runner to end');
  assert.match(out, /timed out after 25000ms/, `the file overran its timeout\n${out.slice(-1500)}`);
  await until(() => !alive(pid), 5000, `the relay ${pid} to be gone after its file ended`);
});
