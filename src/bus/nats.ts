// The NATS bus: the way to scale out. Uses the `nats` client; connects in the
// background and keeps reconnecting forever, so the relay starts and serves
// local traffic while NATS is away (it reports not-ready meanwhile: ops/health).
// Subscriptions made before the first connection are kept here and made once
// it is up; after that the client itself re-subscribes on every reconnect.
// Credentials from files (a .creds file, an NKey seed) are read at every
// connect and reconnect, so a rotated file is used without a restart.
import { readFileSync } from 'node:fs';
import {
  connect,
  createInbox,
  credsAuthenticator,
  DebugEvents,
  ErrorCode,
  Events,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { BusError, tooLargeForBus, type Bus, type BusHandler, type BusSubscription, type GatherOptions } from './bus.ts';
import { DIAL_FAILED, fixNodeTransport, unsentBytes } from './nats-transport.ts';

fixNodeTransport();

/** Reasons a failed reconnect to one server is logged for, at most, until connected again (bus.reconnect_failed). */
const MAX_RECONNECT_REASONS = 8;

/**
 * How long close() waits for the server to take what this node sent (its
 * drain's flush) before it closes the connection anyway: a frozen server
 * (SIGSTOP, a black-holed link) never answers, and the drain alone waited for
 * good, so an edge told to stop never exited.
 */
const DRAIN_MS = 3000;

/**
 * Bytes that may wait unsent to the server, in its max_payloads, over what a
 * republish sends at once (republishBytes). A server that stopped reading
 * (frozen, cut off) is judged stale only after maxPingOut unanswered pings;
 * until then, everything published waited in this process's memory (1.3 GB in
 * 20 s of 512 KiB messages, seen by review). Past the bound the connection is
 * taken as unavailable for sending, until half of it went out.
 */
const UNSENT_PAYLOADS = 4;
/** How often a backlogged connection is looked at until it clears. */
const BACKLOG_WATCH_MS = 100;

export interface NatsBusOptions {
  servers: string[];
  randomizeServers: boolean;
  name: string;
  user?: string;
  pass?: string;
  token?: string;
  /** A NATS credentials file (user JWT and NKey seed). */
  credsFile?: string;
  /** A file holding an NKey seed. */
  nkeyFile?: string;
  /** TLS to the servers: CA, and a client certificate when they verify clients. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  reconnectTimeWaitMs: number;
  /** Bound on one connection attempt (TCP, TLS, authentication); nats.js's 20 s when not given. */
  connectTimeoutMs?: number;
  pingIntervalMs: number;
  /** Bound on flush() while connected; while disconnected it resolves at once. */
  flushTimeoutMs: number;
  /**
   * Most the pub/sub replay sends at once when the connection is back (bus.replayBufferBytes), which the bound on
   * bytes waiting unsent leaves room for (UNSENT_PAYLOADS); 0 when not given.
   */
  republishBytes?: number;
}

interface Entry {
  subject: string;
  queue?: string;
  handler: BusHandler;
  sub?: Subscription;
  active: boolean;
}

export class NatsBus implements Bus {
  readonly kind = 'nats' as const;
  readonly reachesOtherNodes = true;
  private nc: NatsConnection | undefined;
  private isConnected = false;
  /** Why each server refused the attempts to connect again since the connection was lost (said once each). */
  private readonly reconnectReasons = new Map<string, Set<string>>();
  /** When the latest ping its server answered was sent (Date.now()), and when the last one was sent (notePing). */
  private answeredAt: number | undefined;
  private lastPingAt: number | undefined;
  /** Pings unanswered at the last ping tick. */
  private pendingPings = 0;
  /** More was waiting unsent than unsentLimit, and half of it has not gone yet. */
  private overLimit = false;
  /** While overLimit: looks at what waits unsent until it clears. */
  private backlogWatch: NodeJS.Timeout | undefined;
  private readonly backlogListeners: ((backlogged: boolean) => void)[] = [];
  private closing = false;
  private readonly entries = new Set<Entry>();
  private readonly listeners: ((connected: boolean) => void)[] = [];
  /** Messages not sent because NATS was unreachable: this outage, and since start. */
  private dropped = 0;
  droppedTotal = 0;
  private readonly started: Promise<void>;
  private retryTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly options: NatsBusOptions,
    private readonly log: Logger,
  ) {
    this.started = this.start();
  }

  get connected(): boolean {
    return this.isConnected;
  }

  /** The NATS connection while there is one (JetStream uses it: jetstream.ts). */
  get connection(): NatsConnection | undefined {
    return this.nc && !this.nc.isClosed() ? this.nc : undefined;
  }

  /** Servers of the cluster this edge knows of: those it was given and those the server advertises. */
  get clusterSize(): number {
    const urls = new Set([...this.options.servers, ...(this.nc?.info?.connect_urls ?? []).map((u) => `nats://${u}`)]);
    return urls.size;
  }

  /** The version of the NATS server this edge is connected to, if connected. */
  get serverVersion(): string | undefined {
    return this.nc?.info?.version;
  }

  /** Whether the server this edge is connected to has JetStream on (its INFO says), if connected. */
  get serverHasJetStream(): boolean | undefined {
    return this.nc?.info === undefined ? undefined : this.nc.info.jetstream === true;
  }

  get maxPayload(): number {
    return this.nc?.info?.max_payload ?? 1024 * 1024;
  }

  /** Bytes handed to the connection that its server has not taken yet (what the kernel holds aside). */
  get unsentBytes(): number {
    return this.nc ? unsentBytes(this.nc) : 0;
  }

  /** Past this many bytes unsent, publish() drops and request() refuses as while disconnected. */
  get unsentLimit(): number {
    return (this.options.republishBytes ?? 0) + UNSENT_PAYLOADS * this.maxPayload;
  }

  /** True while more waits unsent than unsentLimit, until half of that went out (its server stopped reading). */
  get backlogged(): boolean {
    if (!this.isConnected) return false;
    const unsent = this.unsentBytes;
    const limit = this.unsentLimit;
    if (!this.overLimit && unsent > limit) {
      this.overLimit = true;
      this.log.warn({ event: 'bus.backlogged', server: this.nc?.getServer(), unsentBytes: unsent, limit });
      // Looked at again until it clears, not only when something is sent: what was dropped meanwhile is sent again
      // then (onBacklogChange), also when nothing else is sent after.
      this.backlogWatch = setInterval(() => void this.backlogged, BACKLOG_WATCH_MS);
      this.backlogWatch.unref();
      for (const listener of this.backlogListeners) listener(true);
    } else if (this.overLimit && unsent <= limit / 2) {
      this.overLimit = false;
      clearInterval(this.backlogWatch);
      this.log.info({ event: 'bus.backlog_cleared', server: this.nc?.getServer(), messages: this.dropped });
      this.dropped = 0;
      for (const listener of this.backlogListeners) listener(false);
    }
    return this.overLimit;
  }

  onBacklogChange(listener: (backlogged: boolean) => void): void {
    this.backlogListeners.push(listener);
  }

  /** Tries the servers until one answers (or close() is called); then the client reconnects by itself. */
  private async start(): Promise<void> {
    const o = this.options;
    for (let attempt = 0; !this.closing; attempt++) {
      try {
        this.nc = await connect({
          servers: o.servers,
          noRandomize: !o.randomizeServers,
          name: o.name,
          user: o.user,
          pass: o.pass,
          token: o.token,
          authenticator: authenticatorFor(o),
          tls: o.tls ? { ...o.tls } : undefined,
          maxReconnectAttempts: -1,
          // nats.js otherwise closes for good after two refusals of the credentials in a row (a password
          // or creds file rotated on the server before the edge's): the edge keeps trying, and says so.
          ignoreAuthErrorAbort: true,
          reconnectTimeWait: o.reconnectTimeWaitMs,
          timeout: o.connectTimeoutMs,
          reconnectJitter: Math.min(100, o.reconnectTimeWaitMs),
          pingInterval: o.pingIntervalMs,
          maxPingOut: 2,
          // nats.js otherwise captures a stack for every request it makes (consumer pulls, key-value reads).
          noAsyncTraces: true,
          [DIAL_FAILED]: (server: string, err: unknown) => this.reconnectFailed(server, err),
        } as Parameters<typeof connect>[0]);
        break;
      } catch (err) {
        if (attempt === 0) this.log.warn({ event: 'bus.unreachable', err: (err as Error).message });
        // close() came during this attempt: no pause before the loop ends (it would hold close() for reconnectTimeWaitMs).
        if (this.closing) break;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          this.retryTimer = setTimeout(resolve, o.reconnectTimeWaitMs);
        });
      }
    }
    const nc = this.nc;
    if (!nc) return;
    if (this.closing) {
      await nc.close();
      return;
    }
    for (const entry of this.entries) this.attach(entry);
    this.setConnected(true, nc.getServer());
    void this.watch(nc);
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === Events.Disconnect) this.setConnected(false, String(status.data));
      else if (status.type === Events.Reconnect) this.setConnected(true, String(status.data));
      else if (status.type === Events.Error) this.log.warn({ event: 'bus.error', err: String(status.data) });
      else if (status.type === DebugEvents.PingTimer) this.notePing(Number(status.data) - 1);
    }
    // The status stream ends when the connection closes: by close(), or by nats.js giving up, which it should not.
    if (this.closing) return;
    const err = await nc.closed();
    this.setConnected(false, 'closed');
    this.log.error({ event: 'bus.closed', err: err?.message, hint: 'the NATS client closed its connection and will not reconnect: restart this edge' });
  }

  /**
   * nats.js is about to send a ping, with `pending` of its earlier ones unanswered: with none, the one sent at the
   * last tick was answered, and the server took everything sent before it (lastAnsweredAt).
   */
  private notePing(pending: number): void {
    const now = Date.now();
    if (pending === 0 && this.lastPingAt !== undefined) this.answeredAt = this.lastPingAt;
    this.pendingPings = Number.isFinite(pending) ? Math.max(0, pending) : 0;
    this.lastPingAt = now;
  }

  /** Of the connection now, or of the one lost last (read as the bus says it is lost). */
  get lastAnsweredAt(): number | undefined {
    return this.answeredAt;
  }

  get unansweredPings(): number {
    return this.isConnected ? this.pendingPings : 0;
  }

  /**
   * An attempt to connect again failed: said once per server and reason, since the client keeps trying every
   * reconnectTimeWaitMs (before, nothing was said: a server back with a certificate this edge does not trust left
   * bus.disconnected as the last word for as long as it lasted). The first connection's attempts are bus.unreachable.
   */
  private reconnectFailed(server: string, err: unknown): void {
    if (!this.nc || this.closing) return;
    const reason = reasonOf(err);
    // Each reason once per server, however they alternate (refused, a timeout, refused...: the last one alone was
    // remembered, and each change was said again), and at most MAX_RECONNECT_REASONS of them.
    const said = this.reconnectReasons.get(server) ?? new Set<string>();
    if (said.has(reason) || said.size >= MAX_RECONNECT_REASONS) return;
    said.add(reason);
    this.reconnectReasons.set(server, said);
    this.log.warn({ event: 'bus.reconnect_failed', server, err: reason });
  }

  private setConnected(connected: boolean, server: string): void {
    if (this.isConnected === connected) return;
    this.isConnected = connected;
    // Each server's next failure is news again.
    this.reconnectReasons.clear();
    // A new connection: its server took nothing yet, and has missed no ping.
    if (connected) this.answeredAt = this.lastPingAt = Date.now();
    this.pendingPings = 0;
    // What waited unsent went with the connection: a new one starts with nothing.
    this.overLimit = false;
    clearInterval(this.backlogWatch);
    if (connected) this.log.info({ event: 'bus.connected', server, version: this.serverVersion, maxPayload: this.maxPayload });
    else this.log.warn({ event: 'bus.disconnected', server });
    if (connected && this.dropped > 0) {
      this.log.warn({ event: 'bus.dropped_while_disconnected', messages: this.dropped });
      this.dropped = 0;
    }
    for (const listener of this.listeners) listener(connected);
  }

  private attach(entry: Entry): void {
    entry.sub = this.nc!.subscribe(entry.subject, {
      queue: entry.queue,
      callback: (err, msg) => {
        if (err || !entry.active) return;
        try {
          entry.handler({ subject: msg.subject, data: msg.data, reply: msg.reply || undefined });
        } catch (error) {
          this.log.error({ event: 'bus.handler_failed', subject: msg.subject, err: String(error) });
        }
      },
    });
  }

  subscribe(subject: string, handler: BusHandler, options: { queue?: string } = {}): BusSubscription {
    const entry: Entry = { subject, queue: options.queue, handler, active: true };
    this.entries.add(entry);
    if (this.nc && !this.nc.isClosed()) this.attach(entry);
    return {
      unsubscribe: () => {
        if (!entry.active) return;
        entry.active = false;
        this.entries.delete(entry);
        if (entry.sub && !this.nc?.isClosed()) entry.sub.unsubscribe();
      },
      drain: () => {
        if (!entry.active || !this.entries.delete(entry)) return;
        // Its handler runs on until nats.js has heard the server take the interest away and handed on what came before.
        if (entry.sub && !this.nc?.isClosed()) {
          entry.sub
            .drain()
            .catch(() => undefined)
            .finally(() => (entry.active = false));
        } else entry.active = false;
      },
    };
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    if (data.length > this.maxPayload) throw tooLargeForBus(data.length, this.maxPayload);
    // Without a connection there is nobody to tell: the client would discard
    // it at the reconnect anyway. Pub/sub events are re-sent from
    // pubsub/replaying-feed.ts once the bus is back. Likewise while the
    // server takes nothing (backlogged): it is frozen or cut off, and what is
    // queued for it goes with the connection once nats.js judges it stale.
    if (!this.nc || this.nc.isClosed() || !this.isConnected || this.backlogged) {
      this.dropped++;
      this.droppedTotal++;
      return;
    }
    try {
      this.nc.publish(subject, data, reply ? { reply } : undefined);
    } catch (err) {
      const failure = toBusError(err);
      if (failure.code === 'TooLarge') throw failure;
      // The last part of a drain at shutdown (nats.js takes no more publishes while it flushes): as without a connection.
      this.dropped++;
      this.droppedTotal++;
    }
  }

  async request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const nc = this.nc;
    if (!nc || !this.isConnected || this.backlogged) throw new BusError('Unavailable');
    if (data.length > this.maxPayload) throw tooLargeForBus(data.length, this.maxPayload);
    try {
      return (await nc.request(subject, data, { timeout: timeoutMs })).data;
    } catch (err) {
      throw toBusError(err);
    }
  }

  gather(subject: string, data: Uint8Array, options: GatherOptions): Promise<Uint8Array[]> {
    const nc = this.nc;
    if (!nc || !this.isConnected || this.backlogged) return Promise.reject(new BusError('Unavailable'));
    if (data.length > this.maxPayload) return Promise.reject(tooLargeForBus(data.length, this.maxPayload));
    return new Promise((resolve) => {
      const answers: Uint8Array[] = [];
      let stall: NodeJS.Timeout | undefined;
      let ended = false;
      const close = () => {
        clearTimeout(timer);
        clearTimeout(stall);
        if (!nc.isClosed()) sub.unsubscribe();
      };
      const done = () => {
        clearTimeout(stall);
        if (!ended) resolve(answers);
        ended = true;
        // Answers still to come are listened for until maxWaitMs (the timer) when the caller reads them late.
        // Listening late keeps nothing alive: a process with nothing else to do (a stopped edge) ends meanwhile.
        if (options.late) timer.unref();
        if (!options.late) close();
      };
      const timer = setTimeout(() => {
        done();
        close();
      }, options.maxWaitMs);
      const inbox = createInbox();
      const sub = nc.subscribe(inbox, {
        callback: (err, msg) => {
          // Nobody subscribed: the server answers 503 at once.
          if (err || msg.headers?.code === 503) {
            done();
            return close();
          }
          if (ended) return options.late?.(msg.data);
          answers.push(msg.data);
          clearTimeout(stall);
          if (!options.awaiting?.(answers)) stall = setTimeout(done, options.stallMs);
        },
      });
      nc.publish(subject, data, { reply: inbox });
    });
  }

  async roundTrip(): Promise<number | undefined> {
    const ms = await this.askServer((nc) => nc.rtt());
    return ms === undefined ? undefined : ms / 1000;
  }

  async flush(): Promise<void> {
    await this.askServer((nc) => nc.flush());
  }

  /** A round trip to the server, bounded by flushTimeoutMs; undefined while disconnected, on error or past the bound. */
  private async askServer<T>(ask: (nc: NatsConnection) => Promise<T>): Promise<T | undefined> {
    const nc = this.nc;
    if (!nc || !this.isConnected) return undefined;
    return within(ask(nc), this.options.flushTimeoutMs);
  }

  onConnectionChange(listener: (connected: boolean) => void): void {
    this.listeners.push(listener);
  }

  /** Sends what is buffered and leaves the cluster. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.backlogWatch);
    this.wake?.();
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      // Draining needs the server; without it (and sometimes even after a
      // drain that resolved) the client would go on reconnecting: close it.
      if (this.isConnected) {
        await within(nc.drain(), DRAIN_MS);
      }
      if (!nc.isClosed()) await nc.close().catch(() => undefined);
    }
    this.isConnected = false;
    // An attempt under way may take up to connectTimeoutMs; start() closes a connection made after this.
    await within(this.started, DRAIN_MS);
  }
}

/** What `work` resolves with, or undefined when it fails or takes longer than `ms`. */
async function within<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const answer = await Promise.race([work.catch(() => undefined), new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  clearTimeout(timer);
  return answer;
}

/** A connection error as said in the log: nats.js wraps TLS and refused connections, and the cause is in the chained error. */
function reasonOf(err: unknown): string {
  const message = (err as Error | undefined)?.message ?? String(err);
  const chained = (err as { chainedError?: Error } | undefined)?.chainedError?.message;
  return chained && !message.includes(chained) ? `${message}: ${chained}` : message;
}

function toBusError(err: unknown): BusError {
  const code = (err as NatsError).code;
  if (code === ErrorCode.NoResponders) return new BusError('NoResponders');
  if (code === ErrorCode.Timeout) return new BusError('Timeout');
  if (code === ErrorCode.MaxPayloadExceeded) return new BusError('TooLarge');
  return new BusError('Unavailable', (err as Error).message);
}

/** Reads the credentials file at each (re)connect; undefined for user/pass, token or no authentication. */
function authenticatorFor(o: NatsBusOptions): Authenticator | undefined {
  if (o.credsFile) {
    const file = o.credsFile;
    return credsAuthenticator(() => readFileSync(file));
  }
  if (o.nkeyFile) {
    const file = o.nkeyFile;
    return nkeyAuthenticator(() => new TextEncoder().encode(readFileSync(file, 'utf8').trim()));
  }
  return undefined;
}
