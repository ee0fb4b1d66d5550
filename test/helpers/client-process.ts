// Runs a client script in a child Node process, for clients whose TLS trust
// cannot be handed over in code (hyco-ws, hyco-https and the Azure SDKs take
// no CA option): the child gets NODE_EXTRA_CA_CERTS, which Node reads only at
// process start, exactly as a user would run them. The script is an ES
// module evaluated from the repository root (so it imports the packages the
// tests use); each line it prints is parsed as JSON. The child is killed at
// its bound and in clean-up.
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';
import { tracked } from './child-processes.ts';

export interface ScriptResult {
  code: number | null;
  /** stdout lines parsed as JSON (lines that are not JSON are kept as strings). */
  lines: unknown[];
  stderr: string;
}

const ROOT = new URL('../..', import.meta.url).pathname;

/** Runs `source` in a child with `env` added (and no inherited TLS settings); resolves when it exits, rejects past `ms`. */
export function runClientScript(t: Pick<TestContext, 'after'>, source: string, env: Record<string, string>, ms = 30000): Promise<ScriptResult> {
  const inherited = { ...process.env };
  delete inherited.NODE_EXTRA_CA_CERTS;
  delete inherited.NODE_TLS_REJECT_UNAUTHORIZED;
  const child = tracked(
    spawn(process.execPath, ['--input-type=module', '-e', source], {
      cwd: ROOT,
      env: { ...inherited, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  cleanupFor(t).after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-16384)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`client script still running after ${ms} ms; stdout: ${stdout.slice(-2000)} stderr: ${stderr.slice(-2000)}`));
    }, ms);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // 'close', not 'exit': the last lines it printed may not have been read at its exit.
    child.once('close', (code) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
          try {
            return JSON.parse(l) as unknown;
          } catch {
            return l;
          }
        });
      resolve({ code, lines, stderr });
    });
  });
}
