// node's test runner run as a child over files a test wrote, for the tests of
// how `npm test` runs and reports (test/suite/): its exit code and the TAP
// report it printed.
import { spawn } from 'node:child_process';
import { exitedWithOutput } from './exit.ts';

/** How long the runner may take before it is killed (its report then ends where it was). */
const RUNNER_MS = 30000;

/** Runs `node ...args` (the runner's flags and files) in `cwd`; resolves with its exit code and what it printed to stdout. */
export async function testRunnerReport(args: string[], cwd: string): Promise<{ code: number | null; report: string }> {
  // Without the variable node's test runner sets for the files it runs, which would make this one report to it, not print.
  const { NODE_TEST_CONTEXT: _ignored, ...env } = process.env;
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUNNER_MS);
  try {
    const code = await exitedWithOutput(child);
    return { code, report: Buffer.concat(out).toString('utf8') };
  } finally {
    clearTimeout(timer);
  }
}
