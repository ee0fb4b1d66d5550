// `edge-relay serve --workers N`: N edge processes (node:cluster) sharing the
// listening port, each a separate edge on the NATS bus (docs/scaling-out.md,
// "Several workers on one machine"). The primary only starts them, relays
// signals, and passes connections between them: a listener's rendezvous leg
// that the kernel handed to one worker while the rendezvous waits in another
// (rendezvous ids name their worker) is sent, socket and all, to the worker
// that owns it, which reads it as if it had accepted it itself. A TLS
// connection cannot change process (its keys live in this one): it is relayed
// instead, through the other worker's private Unix socket, in a folder the
// primary made for its workers (mode 0700: no other user can bind a path
// there), marked with a secret the primary gave its workers.
import cluster, { type Worker } from 'node:cluster';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { failUpgrade } from '../hybrid/errors.ts';
import type { RestartOnlyValues } from './reload.ts';

/** The message that carries a connection from one worker to another, through the primary. */
interface HandOff {
  kind: 'edge-relay.handoff';
  to: number;
  /** The request head and any bytes read after it, base64: the new worker parses them again. */
  bytes: string;
}

/** A worker listens (on the shared port and on its private socket): the others may hand it connections from now on. */
interface Listening {
  kind: 'edge-relay.listening';
  /** The worker's private socket, for connections relayed by the others. */
  privateSocket: string;
}

/** A worker is ready (JetStream checked, if it has durable hubs): started, and taking SIGHUP. */
interface Ready {
  kind: 'edge-relay.ready';
  url: string;
}

/** A worker about to listen asks for the others' private sockets (the primary answers with Peers). */
interface PeersWanted {
  kind: 'edge-relay.peers-wanted';
}

/** A worker reloaded through POST /$relay/reload: the primary has the others reload too. */
interface ReloadOthers {
  kind: 'edge-relay.reload-others';
}

/** The primary asks a worker that listens whether its event loop still runs (it answers Pong). */
interface Ping {
  kind: 'edge-relay.ping';
}

interface Pong {
  kind: 'edge-relay.pong';
}

/** The private socket of every worker that listens, sent to each once all are up and whenever one comes or goes. */
interface Peers {
  kind: 'edge-relay.peers';
  sockets: Record<number, string>;
}

const WORKER_ENV = 'EDGE_RELAY_WORKER';
const SECRET_ENV = 'EDGE_RELAY_HANDOFF_SECRET';
/** The folder of the workers' private sockets (made by the primary, mode 0700). */
const SOCKETS_ENV = 'EDGE_RELAY_HANDOFF_DIR';
/** The node id the workers' names are made of: the primary's, as it resolved it (config/load.ts reads this variable). */
const NODE_ID_ENV = 'EDGE_RELAY_NODE_ID';
/** The primary's restart-only config values (JSON), which a worker starts with (reload.ts, RestartOnlyValues). */
const PINNED_ENV = 'EDGE_RELAY_WORKER_PINNED';
/** The header a relayed connection's request carries on a private socket. */
const HANDOFF_HEADER = 'x-edge-relay-handoff';
/** In a worker: the other workers' private sockets, by worker number. */
const peers = new Map<number, string>();

/** This process's worker number (1..N) when it runs as a worker of `serve --workers`, else undefined. */
export function workerIndex(): number | undefined {
  if (cluster.isPrimary) return undefined;
  const index = Number(process.env[WORKER_ENV]);
  return Number.isInteger(index) && index > 0 ? index : undefined;
}

/** In a worker: the primary's restart-only config values, to start with instead of the file's as it is now. */
export function pinnedAtStart(): RestartOnlyValues | undefined {
  const text = process.env[PINNED_ENV];
  return text ? (JSON.parse(text) as RestartOnlyValues) : undefined;
}

/** In a worker: where worker `index` listens for connections relayed by the others. */
export function privateSocketPath(index: number): string {
  const dir = process.env[SOCKETS_ENV];
  if (!dir) throw new Error(`${SOCKETS_ENV} is not set: a worker is started by serve --workers`);
  return join(dir, `w${index}.sock`);
}

/** The request as it came, head and all, for another process to parse again. */
function requestBytes(req: IncomingMessage, head: Buffer, extraHeaders: string[] = []): Buffer {
  let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const headers = [...req.rawHeaders, ...extraHeaders];
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return Buffer.concat([Buffer.from(text + '\r\n', 'latin1'), head]);
}

/**
 * In a worker: sends a connection to worker `to`; false when it cannot go: `to` is no worker that is up (a
 * number past N, one that died), and the leg is answered here (404 RendezvousNotFound), not closed unanswered.
 */
export function handOff(to: number, req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
  if (!peers.has(to)) return false;
  if ((socket as Socket & { encrypted?: boolean }).encrypted) return relayTo(to, req, socket, head);
  if (!process.send) return false;
  const message: HandOff = { kind: 'edge-relay.handoff', to, bytes: requestBytes(req, head).toString('base64') };
  // Stop reading here first: until the descriptor is closed in this process,
  // bytes the peer sends as soon as the other worker answers would be read
  // (and dropped) here instead of there.
  (socket as Socket & { _handle?: { readStop?(): number } })._handle?.readStop?.();
  // Node takes the descriptor away from the socket object here (and counts it
  // out of its server) but never closes that object: destroyed once sent,
  // without counting it out twice, it says 'close' to whatever counts it
  // (open sockets, connectionsPerNode, the shutdown drain).
  process.send(message, socket as Socket, undefined, () => letGoOfSent(socket as Socket));
  return true;
}

/** Closes the object a socket sent to another process leaves behind. */
function letGoOfSent(socket: Socket): void {
  (socket as Socket & { _server: unknown })._server = null;
  socket.destroy();
}

/** A TLS connection: its bytes go on, decrypted, to the other worker's private socket, marked as relayed by a worker. */
function relayTo(to: number, req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
  const path = peers.get(to);
  const secret = process.env[SECRET_ENV];
  if (!path || !secret) return false;
  const peer = connect(path);
  peer.setNoDelay(true);
  peer.write(requestBytes(req, head, [HANDOFF_HEADER, secret]));
  socket.pipe(peer);
  peer.pipe(socket);
  const close = () => {
    socket.destroy();
    peer.destroy();
  };
  socket.on('close', close);
  peer.on('close', close);
  peer.on('error', close);
  socket.on('error', close);
  return true;
}

/** On a private socket: true when the request was relayed by a worker of this command (the header is then removed). */
export function relayedByWorker(req: IncomingMessage): boolean {
  const given = req.headers[HANDOFF_HEADER];
  const secret = process.env[SECRET_ENV];
  delete req.headers[HANDOFF_HEADER];
  if (typeof given !== 'string' || !secret) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(secret);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** In a worker: connections other workers send here go to `adopt` with the bytes already read from them. */
export function onHandOff(adopt: (socket: Socket, bytes: Buffer) => void): void {
  process.on('message', (message: HandOff, socket?: Socket) => {
    if (message?.kind !== 'edge-relay.handoff' || !socket) return;
    adopt(socket, Buffer.from(message.bytes, 'base64'));
  });
}

/**
 * In a worker, before it listens: learns the others' private sockets, now and whenever one comes or goes. Before,
 * it learned them only once ready (after waiting for JetStream), while it already took connections on the shared
 * port: a worker started again answered legs for the others 404 RendezvousNotFound and their senders hung.
 */
export function followPeers(): Promise<void> {
  return new Promise((resolve) => {
    // The first answer is waited for, briefly: the primary answers at once unless it is gone.
    const timer = setTimeout(resolve, PEERS_WAIT_MS);
    timer.unref();
    process.on('message', (message: Peers) => {
      if (message?.kind !== 'edge-relay.peers') return;
      // The whole table each time: a worker that died is gone from it until it is back.
      peers.clear();
      for (const [index, path] of Object.entries(message.sockets)) peers.set(Number(index), path);
      clearTimeout(timer);
      resolve();
    });
    const wanted: PeersWanted = { kind: 'edge-relay.peers-wanted' };
    process.send?.(wanted);
  });
}

/** How long a worker about to listen waits for the table of the others. */
const PEERS_WAIT_MS = 2000;

/** In a worker, as soon as it listens: the others may hand it connections (TLS ones to `privateSocket`). */
export function announceListening(privateSocket: string): void {
  const message: Listening = { kind: 'edge-relay.listening', privateSocket };
  process.send?.(message);
}

/** In a worker, from its start: answers the primary's pings (from its event loop: a worker stuck in it answers none). */
export function answerPings(): void {
  process.on('message', (message: Ping) => {
    if (message?.kind !== 'edge-relay.ping' || !process.connected) return;
    const pong: Pong = { kind: 'edge-relay.pong' };
    process.send?.(pong);
  });
}

/** In a worker: tells the primary this edge is ready (started; SIGHUP may reach it now). */
export function announceReady(url: string): void {
  const message: Ready = { kind: 'edge-relay.ready', url };
  process.send?.(message);
}

/** In a worker: asks the primary to have every other worker reload (as SIGHUP does), after this one did. */
export function reloadOtherWorkers(): void {
  const message: ReloadOthers = { kind: 'edge-relay.reload-others' };
  process.send?.(message);
}

/** The longest socket path that works everywhere (sun_path holds 108 bytes on Linux, 104 on macOS, with the NUL). */
const MAX_SOCKET_PATH = 103;

/**
 * A folder for the workers' private sockets: mkdtemp makes it 0700, so only this user can make (or reach) a socket
 * in it. Under the temporary directory, or /tmp when that is too deep for a socket path (Node would cut the path
 * short: sockets outside the folder, two workers on one path).
 */
function socketFolder(count: number): string {
  for (const base of [tmpdir(), '/tmp']) {
    const dir = mkdtempSync(join(base, 'edge-relay-w-'));
    if (Buffer.byteLength(join(dir, `w${count}.sock`)) <= MAX_SOCKET_PATH) return dir;
    rmSync(dir, { recursive: true, force: true });
  }
  throw new Error(`no folder for the workers' sockets: paths under ${tmpdir()} and /tmp are longer than ${MAX_SOCKET_PATH} bytes`);
}

/** Pause before starting a worker again that exited on its own: doubling from this, up to RESTART_MAX_MS, while it keeps exiting within RESTART_STABLE_MS. */
const RESTART_FIRST_MS = 500;
const RESTART_MAX_MS = 30_000;
const RESTART_STABLE_MS = 60_000;

/** How often the primary pings each worker that listens, at most (a shorter watchdog pings more often). */
const PING_EVERY_MS = 1000;

/**
 * In the primary: forks `count` workers and passes connections between them;
 * resolves with the listening URL once every worker is up, or rejects when
 * one exits first. Each worker runs this same command. A worker that exits
 * later (a crash, the OOM killer) is started again under the same number,
 * sooner the longer it had run; the others stop relaying to it while it is
 * away. `ready` rejects with a WorkerStartError carrying the first worker's
 * exit code; `stop` resolves true when every worker ended with 0. Each
 * worker is the edge `nodeId`-wN: the primary's node id (its default has the
 * primary's pid, not each worker's), so a worker started again keeps its name.
 * A worker that listens and has answered no ping for `watchdogMs` (its event
 * loop stuck: an endless loop, a deadlock in native code, SIGSTOP) is killed
 * (SIGKILL) and started again, as one that crashed; 0 turns the watchdog off.
 */
export function startWorkers(count: number, nodeId: string, pinned: RestartOnlyValues, watchdogMs = 0): { ready: Promise<string>; signal(signal: NodeJS.Signals): void; stop(signal: NodeJS.Signals, graceMs: number): Promise<boolean> } {
  const workers = new Map<number, Worker>();
  /** Workers that said they are ready (a stop's exit code counts their exits). */
  const readyWorkers = new Set<Worker>();
  /**
   * Workers that listen: only these are sent SIGHUP. One still starting reads the config as it is anyway, and
   * before its handler is in place a SIGHUP would end it. One that listens and is not ready yet (waiting for NATS
   * or JetStream, up to bus.requestTimeoutMs and readyTimeoutMs) serves already and has its handler: it reloads
   * once ready (config.reload_deferred). Before, only ready workers were sent it, and such a worker never
   * reloaded (a SAS rule removed stayed valid on it until the next SIGHUP).
   */
  const listeningWorkers = new Set<Worker>();
  /**
   * Reloads asked for (SIGHUP to the primary, a worker's reload for the others), and how many had been when each
   * worker was started: one asked for after a worker read its config and before the primary heard that it listens
   * is sent to it when it does. Before, it was lost for that worker (its config stayed as it had read it; seen as a
   * CI failure of test/cluster/worker-restarts.test.ts on a loaded machine).
   */
  let reloads = 0;
  const reloadsAtFork = new Map<Worker, number>();
  const sockets: Record<number, string> = {};
  const restarts = new Map<number, { timer?: NodeJS.Timeout; delayMs: number }>();
  const secret = randomBytes(24).toString('base64url');
  const socketDir = socketFolder(count);
  const pinnedText = JSON.stringify(pinned);
  process.once('exit', () => rmSync(socketDir, { recursive: true, force: true }));
  let clean = true;
  let up = 0;
  let url = '';
  let stopping = false;
  let resolveReady!: (url: string) => void;
  let failReady!: (err: Error) => void;
  const ready = new Promise<string>((resolve, reject) => {
    resolveReady = resolve;
    failReady = reject;
  });
  /** Sends `worker` the private socket of every worker that listens. */
  const tell = (worker: Worker) => {
    const peersMessage: Peers = { kind: 'edge-relay.peers', sockets };
    if (worker.isConnected()) worker.send(peersMessage);
  };
  const tellPeers = () => {
    for (const w of workers.values()) tell(w);
  };
  /**
   * Workers the watchdog looks after (from when they listen): since when a ping of ours has gone unanswered
   * (undefined while none is), on a steady clock (a wall clock stepped forward is no silence).
   */
  const watched = new Map<Worker, { index: number; unansweredSince: number | undefined }>();
  const ping: Ping = { kind: 'edge-relay.ping' };
  const pingEveryMs = Math.max(50, Math.min(PING_EVERY_MS, Math.floor(watchdogMs / 4)));
  let lastTick = performance.now();
  const watchdog = watchdogMs > 0
    ? setInterval(() => {
      const now = performance.now();
      // This process itself was stopped or starved (the whole tree frozen and thawed: Ctrl-Z, a paused container):
      // the silence was everyone's, not a worker's. Pings start over.
      const late = now - lastTick > Math.max(3 * pingEveryMs, watchdogMs / 2);
      lastTick = now;
      if (stopping) return;
      for (const [worker, w] of watched) {
        if (late) w.unansweredSince = undefined;
        if (w.unansweredSince !== undefined && now - w.unansweredSince > watchdogMs) {
          watched.delete(worker);
          process.stderr.write(`edge-relay: worker ${w.index} answered no ping for ${Math.round((now - w.unansweredSince) / 1000)} s (--worker-watchdog): killing it\n`);
          worker.process.kill('SIGKILL');
        } else if (worker.isConnected()) {
          w.unansweredSince ??= now;
          worker.send(ping);
        }
      }
    }, pingEveryMs)
    : undefined;
  watchdog?.unref();
  const fork = (index: number) => {
    const worker = cluster.fork({ [WORKER_ENV]: String(index), [SECRET_ENV]: secret, [SOCKETS_ENV]: socketDir, [NODE_ID_ENV]: nodeId, [PINNED_ENV]: pinnedText });
    const startedAt = performance.now();
    workers.set(index, worker);
    reloadsAtFork.set(worker, reloads);
    // A message to a worker that has just died fails (EPIPE) before its exit is seen: an 'error' without a
    // listener would end this process and every worker with it. Its exit is handled below.
    worker.on('error', (err) => process.stderr.write(`edge-relay: worker ${index}: ${err.message}\n`));
    worker.on('message', (message: HandOff | Listening | Ready | PeersWanted | ReloadOthers | Pong, socket?: Socket) => {
      if (message?.kind === 'edge-relay.pong') {
        // Any answer shows its event loop runs: what is unanswered starts from the next ping.
        const w = watched.get(worker);
        if (w) w.unansweredSince = undefined;
      } else if (message?.kind === 'edge-relay.reload-others') {
        reloads++;
        for (const other of listeningWorkers) if (other !== worker) other.process.kill('SIGHUP');
      } else if (message?.kind === 'edge-relay.peers-wanted') {
        tell(worker);
      } else if (message?.kind === 'edge-relay.listening') {
        // Said by a worker that has exited since (its successor says it again): nothing to relay to.
        if (workers.get(index) !== worker) return;
        // Every worker relays to it from now on, as it takes its share of new connections from now on.
        sockets[index] = message.privateSocket;
        listeningWorkers.add(worker);
        if (reloads > (reloadsAtFork.get(worker) ?? reloads)) worker.process.kill('SIGHUP');
        watched.set(worker, { index, unansweredSince: undefined });
        tellPeers();
      } else if (message?.kind === 'edge-relay.ready') {
        readyWorkers.add(worker);
        url = message.url;
        if (up < count) {
          if (++up === count) resolveReady(url);
        } else {
          process.stderr.write(`edge-relay: worker ${index} is back\n`);
        }
      } else if (message?.kind === 'edge-relay.handoff' && socket) {
        const target = workers.get(message.to);
        // The copy here closes once sent: the sending worker's server waits
        // for this process to report every socket it received closed before
        // its close() completes.
        if (target?.isConnected() && sockets[message.to] !== undefined) target.send(message, socket, undefined, () => letGoOfSent(socket));
        // Its worker died (or is not listening yet) before the others heard: answered as the worker would have.
        // (A socket received here reads at once: a client that reset it must not end the primary.)
        else {
          socket.on('error', () => socket.destroy());
          failUpgrade(socket, 'RendezvousNotFound');
        }
      }
    });
    worker.on('exit', (code, signal) => {
      watched.delete(worker);
      listeningWorkers.delete(worker);
      reloadsAtFork.delete(worker);
      const wasReady = readyWorkers.delete(worker);
      // Killed past its drain, or a stop that failed: the command says so (70), not a quiet 0. (One still starting,
      // started again after a crash, ends by the stop signal itself before it has a handler: that is no failure.)
      if (stopping && code !== 0 && wasReady) clean = false;
      if (workers.get(index) === worker) workers.delete(index);
      if (up < count) return failReady(new WorkerStartError(index, code, signal));
      if (stopping) return;
      // The others stop relaying to it at once (its socket is gone with it; a new one comes with its successor).
      if (sockets[index] !== undefined) {
        delete sockets[index];
        tellPeers();
      }
      const restart = restarts.get(index) ?? { delayMs: RESTART_FIRST_MS };
      if (performance.now() - startedAt >= RESTART_STABLE_MS) restart.delayMs = RESTART_FIRST_MS;
      process.stderr.write(`edge-relay: worker ${index} exited (${signal ?? code}); starting it again in ${restart.delayMs} ms\n`);
      restart.timer = setTimeout(() => {
        restart.timer = undefined;
        if (!stopping) fork(index);
      }, restart.delayMs);
      restart.delayMs = Math.min(RESTART_MAX_MS, restart.delayMs * 2);
      restarts.set(index, restart);
    });
  };
  // Each worker accepts its connections from the shared port itself (before: node:cluster's round robin, where this
  // process accepts each one and keeps its copy until the worker says it took it: a connection on its way to a
  // worker that died stayed open here, unanswered, for good; nodejs/node#21940). The kernel spreads them (about
  // 40/60 with 2 workers and 1,000 connections opened at once, on 2 cores).
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  for (let index = 1; index <= count; index++) fork(index);
  return {
    ready,
    signal(signal) {
      if (signal === 'SIGHUP') reloads++;
      for (const worker of listeningWorkers) worker.process.kill(signal);
    },
    async stop(signal, graceMs) {
      stopping = true;
      clearInterval(watchdog);
      for (const restart of restarts.values()) clearTimeout(restart.timer);
      const exits = [...workers.values()].map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
      for (const worker of workers.values()) worker.process.kill(signal);
      const timer = setTimeout(() => {
        for (const worker of workers.values()) worker.process.kill('SIGKILL');
      }, graceMs);
      await Promise.all(exits);
      clearTimeout(timer);
      return clean;
    },
  };
}

/** A worker that exited before every worker was ready; `exitCode` is its own (78 for a config it could not use), else 1. */
export class WorkerStartError extends Error {
  readonly exitCode: number;

  constructor(index: number, code: number | null, signal: string | null) {
    super(`worker ${index} exited (${signal ?? code}) before it was ready`);
    this.exitCode = code !== null && code > 0 ? code : 1;
  }
}

export const isPrimaryProcess = (): boolean => cluster.isPrimary;
