// Real nats-server processes for tests: one alone, or a cluster of three on
// 127.0.0.1 (full mesh through routes). Ports are picked by the server (-1) on
// first start and kept, so a killed node restarts where it was. A node may be
// given a config file (TLS, an authorization block, operator mode: see
// nats-auth.ts); the command line's address, ports and JetStream settings
// still apply. Every process is killed in the test's after hook, even when
// the test fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';
import { allThreadsStopped } from './process-state.ts';
import { until, withTimeout } from './wait.ts';
import { tracked } from './child-processes.ts';
import { connect } from 'nats';

export interface NatsNode {
  name: string;
  /** nats://127.0.0.1:port */
  url: string;
  port: number;
  routePort: number;
  monitorPort: number;
  /** Its JetStream store folder, kept across restart(). */
  storeDir: string;
  running(): boolean;
  /** SIGKILL: the node vanishes without a goodbye. */
  kill(): Promise<void>;
  /** Starts it again on the same client and route ports, a new monitoring port (with `jetstream: false`, without JetStream: a server restarted without -js). */
  restart(options?: { jetstream?: boolean }): Promise<void>;
  /** Other nodes this node has a route to (from /routez). */
  routes(): Promise<number>;
  /**
   * Writes `config` as its config file and has it read again (SIGHUP); only for a node started with a config.
   * A reload does not apply the command line again: the node's name is written in for it (nats-server refuses
   * a reload that changes it), and JetStream goes off unless `config` has a jetstream block.
   */
  reconfigure(config: string): void;
  /**
   * SIGSTOP, resolved once every thread of the server is stopped. The kernel stops each thread of a busy process
   * only when it next runs: on a loaded machine a server signalled this way still answered a publish sent right
   * after `pkill -STOP` returned (its threads `R`, not `T`, in /proc). The test's end sends SIGCONT.
   */
  freeze(): Promise<void>;
  /** SIGCONT: a frozen server runs again. */
  thaw(): void;
}

interface Ports {
  port: number;
  /** 0 for a node that is not part of a cluster. */
  routePort: number;
  monitorPort: number;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return withTimeout(new Promise<void>((r) => child.once('exit', () => r())), 5000, 'nats-server exit');
}

/** Listens on 127.0.0.1:`port` (0: any) and closes again; the port, or undefined when it is taken. */
async function tryListen(port: number): Promise<number | undefined> {
  const server = createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!bound) return undefined;
  const { port: got } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return got;
}

/** The kernel's range of ephemeral ports: what listen(0), nats-server's `-1` and outgoing connections draw from. */
function ephemeralPorts(): { low: number; high: number } {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return { low, high };
  } catch {
    // Not Linux: assume the usual range.
  }
  return { low: 32768, high: 60999 };
}

/** Ports freePort() gave in this process: a second caller drawing one of them before its first bound it got it too. */
const portsGiven = new Set<number>();

/** Whether a nats-server ended at its start because one of its ports was taken meanwhile (by another process of the suite). */
function portTaken(err: unknown): boolean {
  return err instanceof Error && /address already in use/.test(err.message);
}

/**
 * A port free right now on 127.0.0.1 for a node to bind later (a cluster's
 * route ports must be known before its nodes start). Taken from below the
 * ephemeral range, so that no process asking for any port (the other nodes'
 * client and monitor ports, relays, outgoing connections) is given it in the
 * meantime: a route port drawn from the ephemeral range was once taken that way
 * before its node started ("bind: address already in use").
 */
export async function freePort(): Promise<number> {
  const FIRST = 10000;
  const { low } = ephemeralPorts();
  if (low - FIRST >= 1000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const candidate = FIRST + Math.floor(Math.random() * (low - FIRST));
      // Not one given before in this process: it may not be bound yet (a cluster's ports are drawn side by side).
      if (portsGiven.has(candidate)) continue;
      const port = await tryListen(candidate);
      if (port !== undefined) {
        portsGiven.add(port);
        return port;
      }
    }
  }
  const port = await tryListen(0);
  if (port === undefined) throw new Error('no free port on 127.0.0.1');
  return port;
}

/**
 * Starts nats-server with JetStream (its store in the node's own temp dir,
 * kept across restart()). A cluster node lists every node's route, itself
 * included, as clustered JetStream requires configured routes.
 */
async function spawnNats(name: string, ports: Ports, routes: string[], dir: string, configFile?: string, jetstream = true): Promise<{ child: ChildProcess; ports: Ports }> {
  const args = ['-a', '127.0.0.1', '-p', String(ports.port), '-m', String(ports.monitorPort), '-n', name, ...(jetstream ? ['-js', '-sd', join(dir, 'jetstream')] : [])];
  if (configFile) args.unshift('-c', configFile);
  if (routes.length > 0) {
    args.push('--cluster', `nats://127.0.0.1:${ports.routePort}`, '--cluster_name', 'edge-relay-test', '--routes', routes.join(','));
  }
  const child = tracked(spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir }));
  let log = '';
  const found = await withTimeout(
    new Promise<Ports>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        log = (log + d.toString()).slice(-16384);
        const client = /Listening for client connections on [\d.]+:(\d+)/.exec(log);
        const route = /Listening for route connections on [\d.]+:(\d+)/.exec(log);
        const monitor = /Starting http monitor on [\d.]+:(\d+)/.exec(log);
        if (client && monitor && (route || routes.length === 0)) {
          resolve({ port: Number(client[1]), routePort: route ? Number(route[1]) : 0, monitorPort: Number(monitor[1]) });
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

/**
 * One nats-server with JetStream; with `cluster`, a node of that cluster (see
 * startNatsCluster); with `config`, that text as its config file (-c).
 */
export async function startNatsServer(
  t: Pick<TestContext, 'after'>,
  name = 'n1',
  cluster?: { routePort: number; routes: string[] },
  options: { config?: string } = {},
): Promise<NatsNode> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-nats-'));
  const configFile = options.config === undefined ? undefined : join(dir, 'nats-server.conf');
  if (configFile) writeFileSync(configFile, options.config!);
  // The client port from below the ephemeral range too: restart() binds it again, after a kill, and one of the
  // ephemeral range may be given to another process meanwhile (as the monitoring port once was).
  // A client port another process took between freePort() and the bind: tried again on another (a cluster's route
  // port cannot change here: startNatsCluster starts the cluster again).
  const first = async (tries = 3): Promise<{ child: ChildProcess; ports: Ports }> => {
    try {
      return await spawnNats(name, { port: await freePort(), routePort: cluster?.routePort ?? 0, monitorPort: -1 }, cluster?.routes ?? [], dir, configFile);
    } catch (err) {
      if (tries <= 1 || !portTaken(err) || (cluster && /router port/.test((err as Error).message))) throw err;
      return first(tries - 1);
    }
  };
  let { child, ports } = await first().catch((err) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  cleanupFor(t).after(async () => {
    child.kill('SIGKILL');
    await waitExit(child).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const alive = (process: ChildProcess) => process.exitCode === null && process.signalCode === null;
  const running = () => alive(child);
  const node: NatsNode = {
    name,
    url: `nats://127.0.0.1:${ports.port}`,
    port: ports.port,
    routePort: ports.routePort,
    monitorPort: ports.monitorPort,
    storeDir: join(dir, 'jetstream'),
    running,
    freeze: async () => {
      const frozen = child;
      frozen.kill('SIGSTOP');
      cleanupFor(t).after(() => {
        if (alive(frozen)) frozen.kill('SIGCONT');
      });
      await until(() => allThreadsStopped(frozen.pid!), 10000, `nats-server ${name} stopped`);
    },
    thaw: () => {
      if (running()) child.kill('SIGCONT');
    },
    kill: async () => {
      child.kill('SIGKILL');
      await waitExit(child);
    },
    restart: async (options = {}) => {
      // The same client and route ports (clients and the other nodes know them); a monitoring port of nats-server's
      // choosing, as another process may have taken the old one since (a suite's lanes run beside each other: seen
      // in CI, "can't listen to the monitor port: address already in use").
      const restarted = await spawnNats(name, { ...ports, monitorPort: -1 }, cluster?.routes ?? [], dir, configFile, options.jetstream ?? true);
      child = restarted.child;
      ports = { ...ports, monitorPort: restarted.ports.monitorPort };
      node.monitorPort = ports.monitorPort;
    },
    routes: async () => {
      const res = await fetch(`http://127.0.0.1:${ports.monitorPort}/routez`, { signal: AbortSignal.timeout(2000) });
      // Servers routed to, not connections: nats-server 2.10 pools several connections per route.
      const { routes = [] } = (await res.json()) as { routes?: { remote_id: string }[] };
      return new Set(routes.map((r) => r.remote_id)).size;
    },
    reconfigure: (config) => {
      if (!configFile) throw new Error('reconfigure: the node was started without a config');
      writeFileSync(configFile, `server_name: "${name}"\n${config}`);
      child.kill('SIGHUP');
    },
  };
  return node;
}

/**
 * `size` nodes routed to each other with JetStream; resolves once every node sees the others and JetStream answers.
 * With `config`, each node reads that text as its config file (an authorization block, say).
 */
export async function startNatsCluster(t: Pick<TestContext, 'after'>, size = 3, options: { config?: string } = {}): Promise<NatsNode[]> {
  let nodes: NatsNode[] | undefined;
  // A route port another process took before its node bound it (seen in a full suite: "Error listening on router
  // port ... address already in use"): the nodes that started are stopped, and the cluster is started again on new ports.
  for (let attempt = 1; !nodes; attempt++) {
    const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()));
    const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`);
    const started = await Promise.allSettled(routePorts.map((routePort, i) => startNatsServer(t, `n${i + 1}`, { routePort, routes }, options)));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (!failed) {
      nodes = started.map((r) => (r as PromiseFulfilledResult<NatsNode>).value);
      break;
    }
    for (const r of started) if (r.status === 'fulfilled') await r.value.kill();
    if (attempt >= 3 || !portTaken(failed.reason)) throw failed.reason;
  }
  await waitForMesh(nodes);
  await waitForJetStream(nodes);
  return nodes;
}

/** Waits until JetStream answers on every running node (a new cluster elects its meta leader first). */
export async function waitForJetStream(nodes: NatsNode[], ms = 30000): Promise<void> {
  const deadline = Date.now() + ms;
  for (const node of nodes.filter((n) => n.running())) {
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${node.monitorPort}/healthz?js-enabled-only=true`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
      const jsz = await fetch(`http://127.0.0.1:${node.monitorPort}/jsz`, { signal: AbortSignal.timeout(2000) })
        .then((r) => r.json() as Promise<{ meta_cluster?: { leader?: string } }>)
        .catch(() => undefined);
      if (res?.ok && (jsz?.meta_cluster === undefined || jsz.meta_cluster.leader)) break;
      if (Date.now() > deadline) throw new Error(`JetStream did not come up on ${node.name}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
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


/**
 * Deletes the stream of durable hub `hub` on the server at `natsUrl`, as an operator's delete does (or a
 * memory-storage server that restarted loses it); the edges make it again when they notice.
 */
export async function deleteHubStream(t: Pick<TestContext, 'after'>, natsUrl: string, hub: string): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  cleanupFor(t).after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  const stream = names.find((name) => name.endsWith(`_${hub.toLowerCase()}`));
  if (!stream) throw new Error(`no stream of hub ${hub} among ${names.join(', ')}`);
  await jsm.streams.delete(stream);
}
