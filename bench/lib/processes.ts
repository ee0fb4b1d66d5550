// Processes the bench starts (our relay, nats-server, mosquitto, socat, peer
// servers), all on 127.0.0.1, all killed when the bench exits however it
// exits; and the per-process readings the tables report (CPU time, RSS).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children = new Set<ChildProcess>();
const dirs = new Set<string>();

function killEverything(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', killEverything);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killEverything();
    process.exit(130);
  });
}

export const ROOT = new URL('../..', import.meta.url).pathname;

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bench-'));
  dirs.add(dir);
  return dir;
}

export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** A port free at the time of asking (for servers that cannot take port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface Started {
  child: ChildProcess;
  pid: number;
  /** The first match of `ready` in the process's output. */
  match: RegExpExecArray;
  stop(): Promise<void>;
}

/** Spawns a process and waits (bounded) until its stdout or stderr matches `ready`. */
export async function startProcess(command: string, args: string[], ready: RegExp, options: { timeoutMs?: number; cwd?: string } = {}): Promise<Started> {
  const child = spawn(command, args, { cwd: options.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} did not start in time:\n${output.slice(-2000)}`)), options.timeoutMs ?? 15000);
    const onData = (d: Buffer) => {
      output = (output + d.toString()).slice(-65536);
      const m = ready.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code}:\n${output.slice(-2000)}`));
    });
  });
  // Keep draining output so a chatty process never blocks on a full pipe.
  child.stdout!.resume();
  child.stderr!.resume();
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
    children.delete(child);
  };
  return { child, pid: child.pid!, match, stop };
}

const CLOCK_TICKS = 100;

/** CPU time a process has used, in seconds: in user space and in the kernel. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
}

/** Resident set size, bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/**
 * Measures the CPU share (percent of one core) of this process and of `pids`
 * over a span, and how much of the servers' share was spent in the kernel
 * (on loopback, a write runs the receiver's TCP path too).
 */
export class CpuMeter {
  private readonly startSelf = process.cpuUsage();
  private readonly startOthers: { user: number; system: number }[];
  private readonly startedAt = performance.now();

  constructor(private readonly pids: number[]) {
    this.startOthers = pids.map(cpuTimes);
  }

  read(): { generator: number; servers: number; serversKernel: number } {
    const seconds = (performance.now() - this.startedAt) / 1000;
    const self = process.cpuUsage(this.startSelf);
    let user = 0;
    let system = 0;
    this.pids.forEach((pid, i) => {
      const now = cpuTimes(pid);
      user += now.user - this.startOthers[i].user;
      system += now.system - this.startOthers[i].system;
    });
    return {
      generator: (100 * (self.user + self.system)) / 1e6 / seconds,
      servers: (100 * (user + system)) / seconds,
      serversKernel: (100 * system) / seconds,
    };
  }
}

export function writeTemp(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}
