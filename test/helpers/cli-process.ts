// `edge-relay ARGS` (bin/edge-relay, the launcher users run) as a child process for the command
// line tests: its stdout lines and the tail of its stderr kept, SIGTERM in
// the test's clean-up (SIGKILL when it does not exit within 5 s).
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';
import { exitedWithOutput } from './exit.ts';
import { withTimeout } from './wait.ts';
import { tracked } from './child-processes.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

/** The command users run: a shell launcher that sets the allocator's environment and execs node (same pid). */
export const EDGE_RELAY_BIN = `${ROOT}bin/edge-relay`;

export interface CliProcess {
  /** Lines printed on stdout so far. */
  lines: string[];
  stderr(): string;
  exited: Promise<number | null>;
  /** The process id (the launcher execs node: the same process). */
  pid: number | undefined;
  /** Sends the process a signal (SIGTERM, as systemd or Ctrl-C would). */
  signal(signal: NodeJS.Signals): void;
}

export function runCli(t: Pick<TestContext, 'after'>, args: string[], env?: NodeJS.ProcessEnv): CliProcess {
  const child = tracked(spawn(EDGE_RELAY_BIN, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) }));
  cleanupFor(t).after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await withTimeout(exited, 5000, 'cli exit').catch(() => child.kill('SIGKILL'));
  });
  const lines: string[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
  child.stderr.on('data', (d: Buffer) => (err = (err + d).slice(-65536)));
  return { lines, stderr: () => err, exited: exitedWithOutput(child), pid: child.pid, signal: (signal) => void child.kill(signal) };
}

/**
 * `edge-relay ARGS` with its stdout (and `alsoStderr`, its stderr) closed by its reader at once, as a script that
 * read the line it wanted does, or `... | head -1`: the tail of its stderr kept otherwise; SIGKILL in the clean-up.
 */
export function runCliWithOutputClosed(t: Pick<TestContext, 'after'>, args: string[], alsoStderr: boolean) {
  const child = tracked(spawn(EDGE_RELAY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  cleanupFor(t).after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await withTimeout(exited, 5000, `edge-relay ${args[0]} killed`);
  });
  child.stdout.destroy();
  let err = '';
  if (alsoStderr) child.stderr.destroy();
  else child.stderr.on('data', (d: Buffer) => (err = (err + d).slice(-65536)));
  return { child, exited, stderr: () => err };
}
