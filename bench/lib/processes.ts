// Processes the bench starts (our relay, nats-server, mosquitto, socat,
// nginx, haproxy, iperf3, wrk, peer servers), all on 127.0.0.1, all killed
// when the bench exits however it exits (each in a process group of its own,
// so forking servers go with their workers); and the per-process readings the
// tables report (CPU time, RSS).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children = new Set<ChildProcess>();
const dirs = new Set<string>();

/** Signals the child's whole process group (it leads one: spawned detached). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // already gone
  }
}

function killEverything(): void {
  for (const child of children) signalGroup(child, 'SIGKILL');
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

/** What a server says when the port freePort gave was taken before it could bind it (nats-server, mosquitto, nginx, haproxy, socat, iperf3). */
const PORT_TAKEN = /address already in use|Address in use|EADDRINUSE/i;

/**
 * Runs `start`, which asks freePort for its ports, again (3 tries in all) when what it started could not bind one:
 * another process took the port between the asking and the binding (found by a clean-clone CI run: nats-server's
 * WebSocket port was taken by a test of the other lane, and the bench's memory scenario failed).
 */
export async function onFreePorts<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= 3 || !PORT_TAKEN.test((err as Error).message)) throw err;
    }
  }
}

export interface Started {
  child: ChildProcess;
  pid: number;
  /** The first match of `ready` in the process's output. */
  match: RegExpExecArray;
  stop(): Promise<void>;
}

/** Resolves once something accepts a TCP connection on 127.0.0.1:port (tried every 50 ms). */
function whenAccepting(port: number, isCancelled: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const attempt = () => {
      if (isCancelled()) return;
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/**
 * Spawns a process in a process group of its own and waits (bounded) until
 * its stdout or stderr matches `ready`, or, for servers that print nothing
 * when up (nginx, haproxy), until it accepts connections on `ready.port`.
 */
export async function startProcess(
  command: string,
  args: string[],
  ready: RegExp | { port: number },
  options: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Started> {
  const child = spawn(command, args, { cwd: options.cwd ?? ROOT, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  let output = '';
  let settled = false;
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      settled = true;
      reject(new Error(`${command} did not start in time:\n${output.slice(-2000)}`));
    }, options.timeoutMs ?? 15000);
    const onData = (d: Buffer) => {
      output = (output + d.toString()).slice(-65536);
      const m = ready instanceof RegExp ? ready.exec(output) : null;
      if (m) {
        settled = true;
        clearTimeout(timer);
        resolve(m);
      }
    };
    if (!(ready instanceof RegExp)) {
      void whenAccepting(ready.port, () => settled).then(() => {
        settled = true;
        clearTimeout(timer);
        resolve(Object.assign([String(ready.port)], { index: 0, input: '' }) as RegExpExecArray);
      });
    }
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (e) => {
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code}:\n${output.slice(-2000)}`));
    });
  }).catch((err: unknown) => {
    signalGroup(child, 'SIGKILL');
    throw err;
  });
  // Keep draining output so a chatty process never blocks on a full pipe.
  child.stdout!.resume();
  child.stderr!.resume();
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
    // Workers of a forking server (nginx, socat fork) that outlive their parent.
    signalGroup(child, 'SIGKILL');
    children.delete(child);
  };
  return { child, pid: child.pid!, match, stop };
}

/**
 * Starts things side by side; whatever started is added to `started` (to be
 * stopped), even when another one failed, and the first failure is thrown.
 */
export async function startAll<T extends readonly Promise<{ stop(): Promise<void> }>[]>(
  started: { stop(): Promise<void> }[],
  starting: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(starting);
  for (const s of settled) if (s.status === 'fulfilled') started.push(s.value);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

/**
 * Runs a command to completion (a load generator: wrk, iperf3 -c), bounded by
 * `timeoutMs`, and resolves with its stdout; rejects on a non-zero exit.
 * Its CPU time is read from this process's reaped-children times (see
 * reapedChildrenCpu), so the caller can report it as the generator's.
 */
export async function runCommand(command: string, args: string[], timeoutMs: number): Promise<string> {
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        signalGroup(child, 'SIGKILL');
        reject(new Error(`${command} ${args.join(' ')} did not finish in ${timeoutMs} ms`));
      }, timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(stdout);
        else reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${stderr}${stdout.slice(-2000)}`));
      });
    });
  } finally {
    children.delete(child);
  }
}

const CLOCK_TICKS = 100;

/** Fields of /proc/PID/stat from the state on (fields[0] is field 3 of proc(5)), or undefined when it is gone. */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Pids of the live descendants of `pid` (nginx workers, socat's forked children, cluster workers). */
function descendants(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const fields = statFields(Number(name));
    if (!fields) continue;
    const parent = Number(fields[1]);
    const list = byParent.get(parent) ?? [];
    list.push(Number(name));
    byParent.set(parent, list);
  }
  const out: number[] = [];
  const queue = [pid];
  for (let i = 0; i < queue.length && i < 10000; i++) {
    for (const child of byParent.get(queue[i]) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

/**
 * CPU time of a process tree, seconds: the process, its live descendants, and
 * the descendants it has already reaped (cutime/cstime), so a forking server
 * is counted whole however its workers come and go.
 */
export function treeCpuTimes(pid: number): { user: number; system: number } {
  let user = 0;
  let system = 0;
  for (const p of [pid, ...descendants(pid)]) {
    const fields = statFields(p);
    if (!fields) continue;
    user += Number(fields[11]) + Number(fields[13]);
    system += Number(fields[12]) + Number(fields[14]);
  }
  return { user: user / CLOCK_TICKS, system: system / CLOCK_TICKS };
}

/**
 * Write system calls (write and writev) a process tree has made so far, from
 * /proc/PID/io `syscw`: with the figure delivered, how many messages a server
 * puts into one socket write. send/sendmsg are not counted there; Node,
 * nats-server and nginx write sockets with write/writev. Undefined when no
 * process of the tree can be read.
 */
export function treeWriteCalls(pid: number): number | undefined {
  let calls: number | undefined;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      const io = readFileSync(`/proc/${p}/io`, 'utf8');
      calls = (calls ?? 0) + Number(/^syscw: (\d+)$/m.exec(io)![1]);
    } catch {
      // gone, or not ours to read
    }
  }
  return calls;
}

/** CPU seconds of this process's children that have exited and been reaped (runCommand's generators). */
export function reapedChildrenCpu(): number {
  const fields = statFields('self')!;
  return (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS;
}

/** Resident set size, bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/**
 * Measures the CPU share (percent of one core) of this process and of `pids`
 * (each with its descendants) over a span, and how much of the servers' share was spent in the kernel
 * (on loopback, a write runs the receiver's TCP path too).
 */
export class CpuMeter {
  private readonly startSelf = process.cpuUsage();
  private readonly startOthers: { user: number; system: number }[];
  private readonly startedAt = performance.now();

  constructor(private readonly pids: number[]) {
    this.startOthers = pids.map(treeCpuTimes);
  }

  read(): { generator: number; servers: number; serversKernel: number; perServer: number[] } {
    const seconds = (performance.now() - this.startedAt) / 1000;
    const self = process.cpuUsage(this.startSelf);
    let user = 0;
    let system = 0;
    const perServer: number[] = [];
    this.pids.forEach((pid, i) => {
      const now = treeCpuTimes(pid);
      const u = now.user - this.startOthers[i].user;
      const s = now.system - this.startOthers[i].system;
      user += u;
      system += s;
      perServer.push((100 * (u + s)) / seconds);
    });
    return {
      generator: (100 * (self.user + self.system)) / 1e6 / seconds,
      servers: (100 * (user + system)) / seconds,
      serversKernel: (100 * system) / seconds,
      perServer,
    };
  }
}

export function writeTemp(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}
