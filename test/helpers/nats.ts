// Real nats-server processes for tests: one alone, or a cluster of three on
// 127.0.0.1 (full mesh through routes). Ports are picked by the server (-1) on
// first start and kept, so a killed node restarts where it was. Every process
// is killed in the test's after hook, even when the test fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';
import { until, withTimeout } from './wait.ts';

export interface NatsNode {
  name: string;
  /** nats://127.0.0.1:port */
  url: string;
  port: number;
  routePort: number;
  monitorPort: number;
  running(): boolean;
  /** SIGKILL: the node vanishes without a goodbye. */
  kill(): Promise<void>;
  /** Starts it again on the same ports. */
  restart(): Promise<void>;
  /** Routes this node has to other nodes (from /routez). */
  routes(): Promise<number>;
}

interface Ports {
  port: number;
  routePort: number;
  monitorPort: number;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return withTimeout(new Promise<void>((r) => child.once('exit', () => r())), 5000, 'nats-server exit');
}

async function spawnNats(name: string, ports: Ports, routes: string[], dir: string): Promise<{ child: ChildProcess; ports: Ports }> {
  const args = [
    '-a', '127.0.0.1', '-p', String(ports.port), '-m', String(ports.monitorPort), '-n', name,
    '--cluster', `nats://127.0.0.1:${ports.routePort}`, '--cluster_name', 'edge-relay-test',
  ];
  if (routes.length > 0) args.push('--routes', routes.join(','));
  const child = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  let log = '';
  const found = await withTimeout(
    new Promise<Ports>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        log = (log + d.toString()).slice(-16384);
        const client = /Listening for client connections on [\d.]+:(\d+)/.exec(log);
        const route = /Listening for route connections on [\d.]+:(\d+)/.exec(log);
        const monitor = /Starting http monitor on [\d.]+:(\d+)/.exec(log);
        if (client && route && monitor) {
          resolve({ port: Number(client[1]), routePort: Number(route[1]), monitorPort: Number(monitor[1]) });
        }
      });
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`nats-server exited with ${code}: ${log}`)));
    }),
    10000,
    `nats-server ${name} to listen`,
  ).catch(async (err) => {
    child.kill('SIGKILL');
    throw err;
  });
  child.stderr!.resume();
  return { child, ports: found };
}

export async function startNatsServer(t: Pick<TestContext, 'after'>, name = 'n1', routes: string[] = []): Promise<NatsNode> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-nats-'));
  let { child, ports } = await spawnNats(name, { port: -1, routePort: -1, monitorPort: -1 }, routes, dir);
  cleanupFor(t).after(async () => {
    child.kill('SIGKILL');
    await waitExit(child).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const node: NatsNode = {
    name,
    url: `nats://127.0.0.1:${ports.port}`,
    port: ports.port,
    routePort: ports.routePort,
    monitorPort: ports.monitorPort,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: async () => {
      child.kill('SIGKILL');
      await waitExit(child);
    },
    restart: async () => {
      ({ child } = await spawnNats(name, ports, routes, dir));
    },
    routes: async () => {
      const res = await fetch(`http://127.0.0.1:${ports.monitorPort}/routez`, { signal: AbortSignal.timeout(2000) });
      return ((await res.json()) as { num_routes: number }).num_routes;
    },
  };
  return node;
}

/** Three nodes routed to each other; resolves once every node sees the other two. */
export async function startNatsCluster(t: Pick<TestContext, 'after'>, size = 3): Promise<NatsNode[]> {
  const first = await startNatsServer(t, 'n1');
  const seed = `nats://127.0.0.1:${first.routePort}`;
  const nodes = [first];
  for (let i = 2; i <= size; i++) nodes.push(await startNatsServer(t, `n${i}`, [seed]));
  await waitForMesh(nodes);
  return nodes;
}

/** Waits until every running node has a route to every other running node. */
export async function waitForMesh(nodes: NatsNode[], ms = 15000): Promise<void> {
  const live = nodes.filter((n) => n.running());
  const counts = new Map<NatsNode, number>();
  const deadline = Date.now() + ms;
  for (;;) {
    for (const n of live) counts.set(n, await n.routes().catch(() => -1));
    if (live.every((n) => counts.get(n) === live.length - 1)) return;
    if (Date.now() > deadline) throw new Error(`NATS cluster did not form: ${[...counts.values()].join(',')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

