// NATS JetStream, as the relay uses it (docs/durability.md): streams created
// or updated idempotently by every edge at start (stream-setup.ts), publishes
// that resolve only once stored (retried with the same message id until a
// deadline, since a stream elects a new leader in seconds: durable-publish.ts),
// reads of a stream (a follower in order from a sequence, and pages:
// stream-reader.ts), and a key-value bucket. This file is whether JetStream
// is there and ready (at start, after a reconnect, an account that gets it),
// when the streams are made sure of or made again, and the key-value calls.
// It knows nothing of hubs or sessions: the pub/sub domain names the streams
// and subjects.
//
// Written for nats-server 2.9 (Debian's): ephemeral consumers are created by
// name with a start sequence (never "deliver new", which a reset turns into a
// replay from 1 or a gap), checked for contiguous delivery sequences, and
// recreated from the last stream sequence + 1 when their heartbeats stop
// (2.9 may place a new consumer on an offline node: the create times out and
// is retried; stream-reader.ts). Key-value compare-and-set is not relied on
// (it is not atomic in 2.9 clusters before 2.9.21); a delete may name a
// revision as a guard.
import { TimedWaits } from '../collections/timed-waits.ts';
import type { JetStreamClient, JetStreamManager, KV, NatsConnection } from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { DurablePublisher } from './durable-publish.ts';
import type { NatsBus } from './nats.ts';
import { StorePublisher } from './stream-publisher.ts';
import { REPLICATED_STREAMS_SINCE, versionBelow } from './nats-server-version.ts';
import {
  errorCode,
  JS_NOT_ENABLED_FOR_ACCOUNT,
  StoreConflict,
  StoreError,
  STREAM_NOT_FOUND,
  StreamDeleting,
  StreamSealed,
  StreamTaken,
  WRONG_LAST_SEQUENCE,
} from './jetstream-errors.ts';
import { StreamReader, type Follower, type ReadOptions, type StoredMessage } from './stream-reader.ts';
import { StreamSetup, infoUnlessGone, streamIdOf, type BucketSpec, type StreamSpec } from './stream-setup.ts';

export type { BucketSpec, StreamSpec } from './stream-setup.ts';

export interface JetStreamOptions {
  /** Undefined: 3 when the cluster has 3 or more servers, else 1. */
  replicas?: number;
  storage: 'file' | 'memory';
  publishTimeoutMs: number;
  /** Bound on one JetStream API call. */
  requestTimeoutMs: number;
  /** While the account has no JetStream: how often it is asked again (default ACCOUNT_RECHECK_MS). */
  accountRecheckMs?: number;
  /** How long a publish goes on past an unanswered try (`bus.jetstream.unsureRetryMs`; default UNSURE_RETRY_MS, durable-publish.ts). */
  unsureRetryMs?: number;
}

export type JetStreamState = 'waiting' | 'ready' | 'unavailable';

/** Pause between attempts at something JetStream refused for now (no leader, consumer on an offline node). */
const RETRY_MS = 250;
/**
 * While the server says the account has no JetStream, it is asked again this
 * often: an operator who enables it (a nats-server config reload, an account
 * JWT pushed) need not restart the edges.
 */
const ACCOUNT_RECHECK_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RESTORE_INTERVAL_MS = 1000;

function conflictOr(err: unknown, key: string): unknown {
  return errorCode(err).apiCode === WRONG_LAST_SEQUENCE ? new StoreConflict(`${key} was written by another since`) : err;
}

/** JetStream's answer that it is not there: for the account, or (no responders) on a server that says it has none. */
function notEnabled(err: unknown, nc: NatsConnection): boolean {
  const { code, apiCode } = errorCode(err);
  return apiCode === JS_NOT_ENABLED_FOR_ACCOUNT || (code === '503' && apiCode === undefined && !nc.info?.jetstream);
}

export const NOT_ENABLED =
  'JetStream is not enabled on the NATS server: start nats-server with JetStream (-js, or a jetstream block in its config), or set bus.jetstream.enabled to false';

export class JetStreamAccess {
  state: JetStreamState = 'waiting';
  /** Why JetStream cannot be used now, for readiness and failed acks. */
  problem: string | undefined = 'JetStream has not answered yet';
  private jsm: JetStreamManager | undefined;
  private js: JetStreamClient | undefined;
  private kv: KV | undefined;
  private publisher: StorePublisher | undefined;
  private closed = false;
  /** whenSettled()'s waits. */
  private readonly readyWaiters = new TimedWaits();
  /** Told each time JetStream becomes ready: at start, and after a server without it gave way to one with it. */
  private readonly readyListeners: (() => void)[] = [];
  /** Followers and page reads of the streams. */
  private readonly reader: StreamReader;
  /** Making sure of the streams and the bucket, with the copies they are made with. */
  private readonly setup: StreamSetup;
  /** Publishes that resolve once stored, and which streams store nothing now. */
  private readonly publishing: DurablePublisher;
  /** Every stream the relay needs: those given to start() and those added since (a hub added on reload). */
  private readonly streams: StreamSpec[] = [];
  private bucket: BucketSpec | undefined;
  /** A look for streams that are gone (restoreStreams), at most one at a time and one per RESTORE_INTERVAL_MS. */
  private restoring = false;
  private lastRestoreAt = -Infinity;
  private establishing = false;
  /** Set while unavailable because the server reached had no JetStream (checkServer): a server with it makes sure again. */
  private serverLackedIt = false;
  /** While unavailable because the account has no JetStream: the next time it is asked again. */
  private accountRecheck: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: NatsBus,
    private readonly options: JetStreamOptions,
    private readonly log: Logger,
  ) {
    this.reader = new StreamReader({
      bus,
      log,
      clients: () => this.ready,
      manager: () => this.jsm,
      closed: () => this.closed,
      restoreIfNoStream: (err, reason) => this.restoreIfNoStream(err, reason),
    });
    this.setup = new StreamSetup(options, log);
    this.publishing = new DurablePublisher({
      bus,
      log,
      options,
      state: () => this.state,
      problem: () => this.problem,
      publisher: () => this.publisher,
      manager: () => this.jsm,
      streams: () => this.streams,
      closed: () => this.closed,
      restoreStreams: (reason) => this.restoreStreams(reason),
      sealed: (stream) => this.streamSealed(stream),
    });
    bus.onConnectionChange((connected) => {
      if (!connected) return;
      // What was sent on the connection gone is not ordered with what is sent on this one, and is tried again now.
      this.publishing.reconnected();
      this.publisher?.reconnected();
      this.reader.reconnected();
      this.checkServer();
      // A server restarted with memory storage (or a cluster that lost every copy) comes back without the streams.
      this.restoreStreams('reconnected');
    });
  }

  /**
   * After a reconnect: the server reached may have no JetStream (one
   * restarted without it). Durable hubs are then unavailable, as /$relay/ready
   * and each refused publish say, until a server with JetStream is reached
   * again, when the streams are made sure of once more.
   */
  private checkServer(): void {
    const nc = this.bus.connection;
    if (this.closed || !this.bucket || !nc) return;
    if (nc.info?.jetstream === true) {
      // Back on a server with JetStream after one without (an account without it stays as it was).
      if (this.state !== 'unavailable' || !this.serverLackedIt) return;
      this.serverLackedIt = false;
      this.state = 'waiting';
      this.answered = false;
      this.problem = 'JetStream has not answered yet';
      void this.establish();
      return;
    }
    if (this.state !== 'ready' || !this.jsm) return;
    // The server says it has none: asked, to be sure (JetStream might still answer through it).
    const jsm = this.jsm;
    jsm.getAccountInfo().then(
      () => undefined,
      (err) => {
        if (this.closed || this.state !== 'ready' || this.bus.connection !== nc || !notEnabled(err, nc)) return;
        this.serverLackedIt = true;
        this.state = 'unavailable';
        this.problem = NOT_ENABLED;
        this.log.error({ event: 'jetstream.unavailable', reason: this.problem });
      },
    );
  }

  /**
   * Asks again, after a while, whether the account has JetStream now; once it
   * has, makes sure of the streams and the bucket as at start. A server
   * without JetStream at all is checkServer's (it changes on a reconnect).
   */
  private recheckAccountLater(): void {
    clearTimeout(this.accountRecheck);
    this.accountRecheck = setTimeout(() => void this.recheckAccount(), this.options.accountRecheckMs ?? ACCOUNT_RECHECK_MS);
    this.accountRecheck.unref();
  }

  private async recheckAccount(): Promise<void> {
    this.accountRecheck = undefined;
    if (this.closed || this.state !== 'unavailable' || this.serverLackedIt) return;
    const nc = this.bus.connection;
    try {
      if (!nc) throw new Error('no connection to NATS');
      const jsm = await nc.jetstreamManager({ timeout: this.options.requestTimeoutMs });
      await jsm.getAccountInfo();
    } catch {
      if (!this.closed && this.state === 'unavailable' && !this.serverLackedIt) this.recheckAccountLater();
      return;
    }
    if (this.closed || this.state !== 'unavailable' || this.serverLackedIt) return;
    this.log.info({ event: 'jetstream.enabled', detail: 'the account has JetStream now' });
    this.state = 'waiting';
    this.answered = false;
    this.problem = 'JetStream has not answered yet';
    void this.establish();
  }

  /** Calls `listener` each time JetStream becomes ready (the streams and the bucket made sure of). */
  onReady(listener: () => void): void {
    this.readyListeners.push(listener);
  }

  /**
   * Waits for the bus and for JetStream, then creates or updates the streams
   * and the bucket; keeps trying (JetStream may still be electing its leaders)
   * until it works or the server says JetStream is not enabled.
   */
  async start(streams: StreamSpec[], bucket: BucketSpec): Promise<void> {
    this.streams.push(...streams);
    this.bucket = bucket;
    await this.establish();
  }

  /** start()'s work, again after a server without JetStream gave way to one with it; one at a time. */
  private async establish(): Promise<void> {
    if (this.establishing) return;
    this.establishing = true;
    try {
      await this.establishOnce();
    } finally {
      this.establishing = false;
    }
  }

  private async establishOnce(): Promise<void> {
    const bucket = this.bucket!;
    for (let attempt = 0; !this.closed; attempt++) {
      const nc = await this.connection();
      if (!nc) return;
      try {
        const jsm = await nc.jetstreamManager({ timeout: this.options.requestTimeoutMs });
        await jsm.getAccountInfo();
        // JetStream answers: whoever waits only to know whether it is there need not wait for the streams.
        this.answered = true;
        this.readyWaiters.wakeAll();
        this.setup.replicas = this.options.replicas ?? (this.bus.clusterSize >= 3 ? 3 : 1);
        // By index: a stream added while this runs is created too.
        for (let i = 0; i < this.streams.length; i++) await this.setup.ensureStream(jsm, this.streams[i]);
        const js = nc.jetstream({ timeout: this.options.requestTimeoutMs });
        this.kv = await this.setup.ensureBucket(jsm, js, bucket);
        this.jsm = jsm;
        this.js = js;
        // Made again after a server without JetStream gave way to one with it: the old one stops listening (its waits retry).
        this.publisher?.close();
        this.publisher = new StorePublisher(nc);
        this.state = 'ready';
        this.problem = undefined;
        // Said before ready: whoever reads ready has read this.
        const version = this.bus.serverVersion;
        if (this.setup.replicas > 1 && version !== undefined && versionBelow(version, REPLICATED_STREAMS_SINCE)) {
          this.log.warn({
            event: 'jetstream.server_outdated',
            version,
            least: REPLICATED_STREAMS_SINCE,
            hint: `the copies of a replicated stream can disagree on nats-server before ${REPLICATED_STREAMS_SINCE} (docs/durability.md): events may then be lost or repeated after a NATS server restarts; upgrade the NATS servers`,
          });
        }
        this.log.info({ event: 'jetstream.ready', streams: this.streams.length, replicas: this.setup.replicas, storage: this.options.storage });
        this.readyWaiters.wakeAll();
        for (const listener of this.readyListeners) listener();
        return;
      } catch (err) {
        if (notEnabled(err, nc)) {
          this.serverLackedIt = nc.info?.jetstream !== true;
          this.state = 'unavailable';
          this.problem = NOT_ENABLED;
          this.log.error({ event: 'jetstream.unavailable', reason: this.problem });
          this.readyWaiters.wakeAll();
          if (!this.serverLackedIt) this.recheckAccountLater();
          return;
        }
        this.problem = `JetStream is not ready: ${(err as Error).message}`;
        if (err instanceof StreamTaken || err instanceof StreamSealed) this.setup.sayUnusable(err, attempt);
        // A stream deleted a moment ago (the operator's answer to one sealed or taken) is made again once it settles: no warning.
        else if (attempt % 20 === 0 && !(err instanceof StreamDeleting)) this.log.warn({ event: 'jetstream.waiting', err: (err as Error).message });
        await sleep(RETRY_MS);
      }
    }
  }

  /**
   * A publish refused by a stream sealed since JetStream was made sure of (by hand; none can unseal it): as an edge
   * that starts with it, this one serves none of its durable hubs and says why (readiness, jetstream.stream_sealed)
   * until the stream is deleted and made again (establish). Not a stream `degraded` names, as one without its leader
   * is: that passes, while this stream stores nothing until an operator acts, as one of another retention policy.
   * Before, the edge stayed ready, storing true, and every publish to that hub failed 503 (found by the JetStream
   * drift review).
   */
  private streamSealed(stream: string): void {
    if (this.closed || this.state !== 'ready') return;
    this.state = 'waiting';
    this.problem = `JetStream is not ready: ${new StreamSealed(stream).message}`;
    void this.establish();
  }

  /**
   * A stream needed since start (a durable hub added on reload): created now
   * when JetStream is ready, else with the others when it gets ready. Keeps
   * trying until it is created or JetStream is closed.
   */
  async addStream(spec: StreamSpec): Promise<void> {
    if (this.streams.some((s) => s.name === spec.name)) return;
    this.streams.push(spec);
    for (let attempt = 0; !this.closed && this.state !== 'unavailable' && this.streams.includes(spec); attempt++) {
      if (this.state !== 'ready' || !this.jsm) {
        // Made with the others once JetStream is ready. whenSettled returns at once once JetStream has
        // answered (its streams may still be in the making): a pause then, never a loop without one.
        await (this.answered ? sleep(RETRY_MS) : this.whenSettled(this.options.publishTimeoutMs));
        continue;
      }
      try {
        await this.setup.ensureStream(this.jsm, spec);
        this.log.info({ event: 'jetstream.stream_added', stream: spec.name });
        return;
      } catch (err) {
        if (err instanceof StreamTaken || err instanceof StreamSealed) this.setup.sayUnusable(err, attempt);
        else if (attempt % 20 === 0) this.log.warn({ event: 'jetstream.stream_add_failed', stream: spec.name, err: (err as Error).message });
        await sleep(RETRY_MS);
      }
    }
  }

  /**
   * A stream no longer needed (its hub removed by a reload): not made again when
   * JetStream is made sure of again or a stream is found missing. What it holds
   * stays on the servers until an operator deletes it.
   */
  forgetStream(name: string): void {
    const i = this.streams.findIndex((s) => s.name === name);
    if (i >= 0) this.streams.splice(i, 1);
  }

  /** JetStream answered once (it is there; its streams may still be in the making). */
  answered = false;

  /** Resolves once JetStream answered (or said it is not enabled), or `ms` passed. */
  whenSettled(ms: number): Promise<void> {
    if (this.state !== 'waiting' || this.answered) return Promise.resolve();
    return this.readyWaiters.wait(ms);
  }

  private async connection(): Promise<NatsConnection | undefined> {
    while (!this.closed) {
      const nc = this.bus.connection;
      if (nc && this.bus.connected) return nc;
      await sleep(RETRY_MS);
    }
    return undefined;
  }

  /**
   * Makes the streams and the bucket that are gone again: a NATS server
   * restarted with memory storage, a cluster that lost every copy, an
   * operator's delete. What they held is lost; without this, every publish to
   * the hub was refused until the edge restarted. Runs at most once per
   * RESTORE_INTERVAL_MS (it is asked for at each follower retry and refused publish).
   */
  /** `err` says the stream asked for is not there: look for every missing stream and make it again. */
  private restoreIfNoStream(err: unknown, reason: string): void {
    if (errorCode(err).apiCode === STREAM_NOT_FOUND) this.restoreStreams(reason);
  }

  private restoreStreams(reason: string): void {
    if (this.restoring || this.closed || this.state !== 'ready' || performance.now() - this.lastRestoreAt < RESTORE_INTERVAL_MS) return;
    this.restoring = true;
    this.lastRestoreAt = performance.now();
    void (async () => {
      const { jsm, js } = this.ready;
      const gone = async (name: string) => (await infoUnlessGone(jsm, name)) === undefined;
      // A stream (or the bucket) deleted a moment ago is made again once its delete has surely ended (StreamSetup.foundOrSettled).
      const onceSettled = async <T>(make: () => Promise<T>): Promise<T> => {
        for (;;) {
          try {
            return await make();
          } catch (err) {
            if (!(err instanceof StreamDeleting) || this.closed) throw err;
            await sleep(err.settleMs);
          }
        }
      };
      for (const spec of [...this.streams]) {
        if (!(await gone(spec.name))) continue;
        await onceSettled(() => this.setup.ensureStream(jsm, spec));
        this.log.warn({ event: 'jetstream.stream_recreated', stream: spec.name, reason, hint: 'the stream was gone with what it held' });
      }
      const bucket = this.bucket;
      if (bucket && (await gone(`KV_${bucket.name}`))) {
        this.kv = await onceSettled(() => this.setup.ensureBucket(jsm, js, bucket));
        this.log.warn({ event: 'jetstream.stream_recreated', stream: `KV_${bucket.name}`, reason, hint: 'the session bucket was gone with what it held' });
      }
    })()
      .catch((err) => this.log.warn({ event: 'jetstream.restore_failed', reason, err: (err as Error).message }))
      .finally(() => (this.restoring = false));
  }

  private get ready(): { jsm: JetStreamManager; js: JetStreamClient; kv: KV } {
    if (this.state !== 'ready' || !this.jsm || !this.js || !this.kv) throw new StoreError(this.problem ?? 'JetStream is not ready');
    return { jsm: this.jsm, js: this.js, kv: this.kv };
  }

  // --- publishing -------------------------------------------------------------------

  /**
   * Stores one message; resolves with its stream sequence once JetStream acknowledged it, retried with the same
   * message id until a deadline; StoreError when it could not be stored (durable-publish.ts).
   */
  publish(subject: string, data: Uint8Array, msgId: string): Promise<{ seq: number; duplicate: boolean }> {
    return this.publishing.publish(subject, data, msgId);
  }

  /**
   * The streams JetStream stores nothing in now and why (`RELAY_chat: ...`),
   * one per line of readiness's `degraded`; empty while every stream stores.
   */
  get storeFailures(): string[] {
    return this.publishing.storeFailures;
  }

  /** The streams this edge's followers cannot read, JetStream refusing them a consumer by a limit, and why (stream-reader.ts). */
  get unreadStreams(): string[] {
    return this.reader.unreadStreams();
  }

  /** Each stream the relay needs, and whether JetStream stores in it now (durable-publish.ts). */
  storingByStream(): Map<string, boolean> {
    return this.publishing.storingByStream();
  }

  // --- reading ----------------------------------------------------------------------

  /**
   * The first and last sequence a stream holds now, and which making of it
   * this is (`madeAs`: a stream lost and made again has another; streamIdOf).
   */
  async bounds(stream: string): Promise<{ first: number; last: number; madeAs: string }> {
    try {
      const info = await this.ready.jsm.streams.info(stream);
      return { first: info.state.first_seq, last: info.state.last_seq, madeAs: streamIdOf(info.config.description, info.created) };
    } catch (err) {
      // A hub about to read a stream that is not there (deleted, or skipped while a reload changed the list): made again.
      this.restoreIfNoStream(err, 'a stream asked where it ends was not there');
      throw err;
    }
  }

  /**
   * Hands every message of `stream` from `fromSeq` on to `onMessage`, in order, each once, until stop()
   * (stream-reader.ts).
   */
  follow(stream: string, fromSeq: number, onMessage: (m: StoredMessage) => void, onGap?: (expected: number, got: number) => void): Follower {
    return this.reader.follow(stream, fromSeq, onMessage, onGap);
  }

  /** A page of `stream`'s messages from `fromSeq` (stream-reader.ts). */
  read(stream: string, options: ReadOptions): Promise<StoredMessage[]> {
    return this.reader.read(stream, options);
  }

  // --- key-value -------------------------------------------------------------------

  /** The value under `key` with its revision (the stream sequence that wrote it), or undefined (never written, deleted or expired). */
  async entry(key: string): Promise<{ value: Uint8Array; revision: number } | undefined> {
    try {
      const entry = await this.ready.kv.get(key);
      return entry && entry.operation === 'PUT' ? { value: entry.value, revision: entry.revision } : undefined;
    } catch (err) {
      throw this.keyValueFailed(err, key);
    }
  }

  /** Stores `value` under `key`; its revision. With `previous` (a revision above 0), only if that is still its revision (StoreConflict otherwise). */
  async put(key: string, value: Uint8Array, previous?: number): Promise<number> {
    try {
      return await this.ready.kv.put(key, value, previous ? { previousSeq: previous } : undefined);
    } catch (err) {
      throw this.keyValueFailed(err, key);
    }
  }

  /**
   * A key-value call failed: a conflict is the caller's to handle; anything else may mean the bucket
   * is gone (deleted, or kept by a server restarted with memory storage while this edge stayed
   * connected elsewhere), so look for missing streams (at most once a second) and make them again.
   */
  private keyValueFailed(err: unknown, key: string): unknown {
    const failure = conflictOr(err, key);
    if (!(failure instanceof StoreConflict)) this.restoreStreams('the session bucket did not answer');
    return failure;
  }

  close(): void {
    this.closed = true;
    this.publishing.close();
    clearTimeout(this.accountRecheck);
    this.publisher?.close();
    this.reader.close();
    this.readyWaiters.wakeAll();
  }
}
