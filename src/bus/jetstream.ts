// NATS JetStream, as the relay uses it (docs/durability.md): streams created
// or updated idempotently by every edge at start, publishes that resolve only
// once stored (retried with the same message id until a deadline, since a
// stream elects a new leader in seconds), reads of a stream (a follower in
// order from a sequence, and pages: stream-reader.ts), and a key-value bucket.
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
import { randomBytes } from 'node:crypto';
import { TimedWaits } from '../collections/timed-waits.ts';
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
} from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { tooLargeForBus } from './bus.ts';
import type { NatsBus } from './nats.ts';
import { StorePublisher, storedBytes } from './stream-publisher.ts';
import { REPLICATED_STREAMS_SINCE, versionBelow } from './nats-server-version.ts';
import { PublishOrder } from './publish-order.ts';
import {
  errorCode,
  JS_NOT_ENABLED_FOR_ACCOUNT,
  NOT_CLUSTERED,
  StoreConflict,
  StoreError,
  STREAM_CONFIG_DIFFERS,
  STREAM_NOT_FOUND,
  StreamTaken,
  WRONG_LAST_SEQUENCE,
} from './jetstream-errors.ts';
import { StreamReader, type Follower, type ReadOptions, type StoredMessage } from './stream-reader.ts';
import { subjectMatches } from './subject-match.ts';

export interface JetStreamOptions {
  /** Undefined: 3 when the cluster has 3 or more servers, else 1. */
  replicas?: number;
  storage: 'file' | 'memory';
  publishTimeoutMs: number;
  /** Bound on one JetStream API call. */
  requestTimeoutMs: number;
  /** While the account has no JetStream: how often it is asked again (default ACCOUNT_RECHECK_MS). */
  accountRecheckMs?: number;
  /** How long a publish goes on past an unanswered try (`bus.jetstream.unsureRetryMs`; default UNSURE_RETRY_MS). */
  unsureRetryMs?: number;
}

export interface StreamSpec {
  name: string;
  subjects: string[];
  /** 0: no limit. */
  maxAgeMs: number;
  /** -1: no limit. */
  maxMessages: number;
  /** -1: no limit. */
  maxBytes: number;
}

export interface BucketSpec {
  name: string;
  /** Entries not written again for this long are dropped. */
  ttlMs: number;
}

export type JetStreamState = 'waiting' | 'ready' | 'unavailable';

/** Pause between attempts at something JetStream refused for now (no leader, consumer on an offline node). */
const RETRY_MS = 250;
/**
 * Once a try went out and nothing said whether it was stored (its server
 * froze, its connection broke), a publish goes on trying with the same id
 * this long past publishTimeoutMs before it gives up: well inside the
 * streams' duplicate window (120 s), so a late store of that try and a later
 * one are one message. Given up sooner, the publisher's retry (the Web PubSub
 * SDK draws a new ackId for it, so a new id) and the late store were two: a
 * chaos soak saw every subscriber get such an event twice.
 */
const UNSURE_RETRY_MS = 60_000;
/**
 * While the server says the account has no JetStream, it is asked again this
 * often: an operator who enables it (a nats-server config reload, an account
 * JWT pushed) need not restart the edges.
 */
const ACCOUNT_RECHECK_MS = 10_000;
/** While publishes fail unanswered, how often the streams are asked whether they answer again. */
const STORE_PROBE_MS = 1000;
/**
 * A replica the leader heard from longer ago than this is not counted towards its quorum. Raft heartbeats come
 * every second; nats-server itself counts a peer out only after 10 s (lostQuorumInterval), and a leader whose
 * peers were killed goes on naming itself leader, with them current, that long.
 */
const REPLICA_SILENT_NS = 3_000_000_000;


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RESTORE_INTERVAL_MS = 1000;

/** A publish given up: `unsure` when a try went out unanswered (it may still be stored, and is then delivered). */
function notStored(reason: string, unsure: boolean): StoreError {
  return new StoreError(unsure ? `not confirmed: ${reason} (it may still have been stored, and is then delivered)` : `not stored: ${reason}`);
}

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

/**
 * Whether a stream's cluster state says it stores: a lone server (no cluster), or a leader named and, with
 * replicas, a majority of the group heard from within REPLICA_SILENT_NS (the leader counts itself). A member left
 * alone answers (once its group has been without a leader for a while) with no leader named; a leader that has
 * lost its peers answers with itself named for up to 10 s, while every write it takes waits for a quorum.
 */
export function storesNow(cluster: { leader?: string; replicas?: { current: boolean; offline?: boolean; active: number }[] } | undefined): boolean {
  if (!cluster) return true;
  if (!cluster.leader) return false;
  const replicas = cluster.replicas ?? [];
  const heard = replicas.filter((r) => r.current && !r.offline && r.active < REPLICA_SILENT_NS).length;
  return 2 * (1 + heard) > 1 + replicas.length;
}

export class JetStreamAccess {
  state: JetStreamState = 'waiting';
  /** Why JetStream cannot be used now, for readiness and failed acks. */
  problem: string | undefined = 'JetStream has not answered yet';
  /**
   * Streams JetStream stores nothing in now, with why: a publish gave up unanswered (a stream without its leader:
   * its node died, or the cluster lost its quorum). Each is cleared by the next write stored to it, or once it
   * answers again (asked each STORE_PROBE_MS meanwhile); a write stored to another stream clears nothing (before,
   * one flag for all: a hub storing again hid one that did not).
   */
  private readonly failingStreams = new Map<string, string>();
  private storeProbe: NodeJS.Timeout | undefined;
  private probingStore = false;
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
  private replicas = 1;
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
  /** The order publishes to each stream try in while one of them is in trouble. */
  private readonly order = new PublishOrder();

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
    bus.onConnectionChange((connected) => {
      if (!connected) return;
      // What was sent on the connection gone is not ordered with what is sent on this one, and is tried again now.
      this.order.reconnected();
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
        this.replicas = this.options.replicas ?? (this.bus.clusterSize >= 3 ? 3 : 1);
        // By index: a stream added while this runs is created too.
        for (let i = 0; i < this.streams.length; i++) await this.ensureStream(jsm, this.streams[i]);
        const js = nc.jetstream({ timeout: this.options.requestTimeoutMs });
        this.kv = await this.ensureBucket(jsm, js, bucket);
        this.jsm = jsm;
        this.js = js;
        // Made again after a server without JetStream gave way to one with it: the old one stops listening (its waits retry).
        this.publisher?.close();
        this.publisher = new StorePublisher(nc);
        this.state = 'ready';
        this.problem = undefined;
        // Said before ready: whoever reads ready has read this.
        const version = this.bus.serverVersion;
        if (this.replicas > 1 && version !== undefined && versionBelow(version, REPLICATED_STREAMS_SINCE)) {
          this.log.warn({
            event: 'jetstream.server_outdated',
            version,
            least: REPLICATED_STREAMS_SINCE,
            hint: `the copies of a replicated stream can disagree on nats-server before ${REPLICATED_STREAMS_SINCE} (docs/durability.md): events may then be lost or repeated after a NATS server restarts; upgrade the NATS servers`,
          });
        }
        this.log.info({ event: 'jetstream.ready', streams: this.streams.length, replicas: this.replicas, storage: this.options.storage });
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
        if (err instanceof StreamTaken) this.sayTaken(err, attempt);
        else if (attempt % 20 === 0) this.log.warn({ event: 'jetstream.waiting', err: (err as Error).message });
        await sleep(RETRY_MS);
      }
    }
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
        await this.ensureStream(this.jsm, spec);
        this.log.info({ event: 'jetstream.stream_added', stream: spec.name });
        return;
      } catch (err) {
        if (err instanceof StreamTaken) this.sayTaken(err, attempt);
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

  private streamConfig(spec: StreamSpec) {
    const duplicateWindowMs = spec.maxAgeMs > 0 ? Math.min(120_000, spec.maxAgeMs) : 120_000;
    return {
      name: spec.name,
      subjects: spec.subjects,
      retention: RetentionPolicy.Limits,
      storage: this.options.storage === 'memory' ? StorageType.Memory : StorageType.File,
      max_age: nanos(spec.maxAgeMs),
      max_msgs: spec.maxMessages,
      max_bytes: spec.maxBytes,
      discard: DiscardPolicy.Old,
      duplicate_window: nanos(duplicateWindowMs),
      num_replicas: this.replicas,
      allow_direct: true,
      // Names this making of the stream (streamIdOf): kept by every later update, new when the stream is made again.
      description: `${STREAM_ID_PREFIX}${randomBytes(9).toString('base64url')}`,
    };
  }

  /** A stream found taken, at the `attempt`th try to make it sure: not something waiting cures, so an error, once a minute. */
  private sayTaken(err: StreamTaken, attempt: number): void {
    if (attempt % 240 === 0) this.log.error({ event: 'jetstream.stream_taken', stream: err.stream, subjects: err.subjects, hint: err.message });
  }

  private async ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<void> {
    const config = this.streamConfig(spec);
    try {
      await jsm.streams.add(config);
    } catch (err) {
      const { apiCode } = errorCode(err);
      if (apiCode === NOT_CLUSTERED && this.replicas > 1) {
        // A configured number of copies the server cannot keep is said, not dropped without a word (found by review).
        if (this.options.replicas !== undefined) {
          this.log.error({
            event: 'jetstream.replicas_lowered',
            configured: this.options.replicas,
            replicas: 1,
            hint: 'the NATS server is not clustered: streams and the session bucket keep one copy, and an event survives no loss of that server; run a NATS cluster, or set bus.jetstream.replicas to 1',
          });
        }
        this.replicas = 1;
        return this.ensureStream(jsm, spec);
      }
      if (apiCode !== STREAM_CONFIG_DIFFERS) throw err;
      const found = await jsm.streams.info(spec.name);
      // Holding other subjects: another deployment's stream with this name (same streamPrefix, or names that
      // run together: `x` + hub `y_z` and `x_y` + hub `z`), or this one's under an earlier bus.subjectPrefix.
      // Before, its subjects were made ours: the other deployment's edges then read our events as theirs.
      const theirs = [...(found.config.subjects ?? [])].sort();
      if (theirs.join(' ') !== [...spec.subjects].sort().join(' ')) throw new StreamTaken(spec.name, theirs);
      // Created by an edge (or a version) with other limits: take ours. Storage cannot change, and
      // replicas never go down: an edge that counted fewer servers (one of them down at its start, or
      // not advertised) must not take copies away from events already acknowledged.
      const { storage: _storage, ...update } = config;
      // The stream's id stays what its making gave it (a stream of an older edge, without one, gets one now).
      if (found.config.description?.startsWith(STREAM_ID_PREFIX)) update.description = found.config.description;
      const existing = found.config.num_replicas;
      if (existing > update.num_replicas) {
        this.log.warn({ event: 'jetstream.replicas_kept', stream: spec.name, replicas: existing, counted: update.num_replicas });
        update.num_replicas = existing;
      }
      await jsm.streams.update(spec.name, update);
    }
  }

  private async ensureBucket(jsm: JetStreamManager, js: JetStreamClient, bucket: BucketSpec): Promise<KV> {
    const storage = this.options.storage === 'memory' ? StorageType.Memory : StorageType.File;
    const kv = await js.views.kv(bucket.name, { replicas: this.replicas, history: 1, ttl: bucket.ttlMs, storage });
    // An existing bucket keeps its options: make its TTL ours, and its replicas ours if it has fewer (never fewer than it has).
    const stream = `KV_${bucket.name}`;
    const info = await jsm.streams.info(stream);
    const replicas = Math.max(info.config.num_replicas, this.replicas);
    if (info.config.max_age !== nanos(bucket.ttlMs) || info.config.num_replicas !== replicas) {
      await jsm.streams.update(stream, { max_age: nanos(bucket.ttlMs), num_replicas: replicas });
    }
    return kv;
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
      const gone = async (name: string) => {
        try {
          await jsm.streams.info(name);
          return false;
        } catch (err) {
          if (errorCode(err).apiCode === STREAM_NOT_FOUND) return true;
          throw err;
        }
      };
      for (const spec of [...this.streams]) {
        if (!(await gone(spec.name))) continue;
        await this.ensureStream(jsm, spec);
        this.log.warn({ event: 'jetstream.stream_recreated', stream: spec.name, reason, hint: 'the stream was gone with what it held' });
      }
      if (this.bucket && (await gone(`KV_${this.bucket.name}`))) {
        this.kv = await this.ensureBucket(jsm, js, this.bucket);
        this.log.warn({ event: 'jetstream.stream_recreated', stream: `KV_${this.bucket.name}`, reason, hint: 'the session bucket was gone with what it held' });
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
   * Stores one message; resolves with its stream sequence once JetStream
   * acknowledged it. Retries with the same message id (the stream drops a
   * repeat within its duplicate window) until publishTimeoutMs, or
   * UNSURE_RETRY_MS after a try that went out unanswered; throws
   * StoreError with the reason when it could not be stored, BusError('TooLarge') at once for a message over the
   * server's max_payload. `duplicate`: an earlier publish of `msgId` had stored it (never this call's own tries).
   */
  async publish(subject: string, data: Uint8Array, msgId: string): Promise<{ seq: number; duplicate: boolean }> {
    // Never stored, however often tried: refused at once (also while JetStream is not ready), not as a store that
    // failed (503 "try again"). The publisher says so too, for a server met later with a smaller max_payload.
    const bytes = storedBytes(data, msgId);
    if (bytes > this.bus.maxPayload) throw tooLargeForBus(bytes, this.bus.maxPayload);
    let deadline = performance.now() + this.options.publishTimeoutMs;
    let last = 'JetStream is not ready';
    /** A try went out and nothing said whether it was stored: it may have been (and is then delivered, maybe after later events). */
    let unsure = false;
    /**
     * Its last try reached JetStream's side and failed there: only then does giving up say the stream stores
     * nothing. Held back by the bus (backlogged, not connected) or behind earlier events of its stream, the
     * stream's state is unknown. Before, a backlog past publishTimeoutMs (a slow NATS link) marked the stream
     * failing in readiness though every try that went out was stored.
     */
    let failedAtStore = false;
    const stream = this.streamOf(subject);
    // While a publish of this stream is in trouble, its publishes try one at a time in the order they began (publish-order.ts).
    const turn = this.order.begin(stream);
    try {
      for (;;) {
        let left = this.closed ? 0 : deadline - performance.now();
        if (left > 0 && !this.order.mayTry(turn)) {
          // Woken, it may find the stream in trouble again (another call told to retry in the same turn): it waits on.
          do {
            await this.order.waitForTurn(turn, left);
            left = this.closed ? 0 : deadline - performance.now();
          } while (left > 0 && !this.order.mayTry(turn));
          if (left <= 0 && !turn.troubled) {
            last = 'earlier events of its stream were not stored yet, and it is not stored before them';
            // Those are held at the store (a lost leader: said at once, not when the first gives up at unsureRetryMs),
            // unless the bus holds them.
            failedAtStore = !this.bus.backlogged;
          }
        }
        if (left <= 0) {
          if (failedAtStore && this.state === 'ready' && this.bus.connected) this.storeFailed(stream, last);
          throw notStored(last, unsure);
        }
        if (this.state !== 'ready' || !this.bus.connected) {
          // Publishing while disconnected would be dropped by the client at the reconnect.
          last = this.state === 'unavailable' ? this.problem! : this.bus.connected ? (this.problem ?? 'JetStream is not ready') : 'the NATS bus is unreachable';
          if (this.state === 'unavailable') throw notStored(last, unsure);
          failedAtStore = false;
          await sleep(Math.min(RETRY_MS, left));
          continue;
        }
        if (this.bus.backlogged) {
          // Its server takes nothing (frozen, cut off) and is not judged stale yet: what went out waits in this
          // process's memory. Nothing more goes until it clears (bus bound on bytes unsent); the message waits here.
          last = 'the NATS server takes nothing this edge sends';
          failedAtStore = false;
          // Its stream's publishes go in order until it settles (publish-order.ts): one begun as the backlog clears
          // waits its turn. Before, each waiting call looked again on its own timer, and a later publish was stored
          // before the earlier ones that had waited.
          this.order.troubled(turn);
          await sleep(Math.min(RETRY_MS, left));
          continue;
        }
        const outcome = await this.publisher!.publish(subject, data, msgId, Math.max(100, Math.min(left, this.options.requestTimeoutMs)));
        if (outcome.kind === 'stored') {
          this.storeWorks(stream);
          // After a try of this call that went out unanswered, a duplicate is most likely that try, stored late: the
          // message is new to its sender (acked Duplicate, a client's first send read as an error). A message an
          // earlier call stored is then reported stored too, which is what it is.
          return { seq: outcome.seq, duplicate: outcome.duplicate && !unsure };
        }
        if (outcome.kind === 'tooLarge') throw tooLargeForBus(outcome.bytes, this.bus.maxPayload);
        if (outcome.kind === 'refused') throw notStored(`${outcome.code ? `JetStream error ${outcome.code}: ` : ''}${outcome.reason}`, false);
        last = outcome.reason;
        failedAtStore = true;
        this.order.troubled(turn);
        if (outcome.unsure && !unsure) {
          unsure = true;
          // Tried again with the same id until it is known to be stored (or UNSURE_RETRY_MS): see UNSURE_RETRY_MS.
          deadline = Math.max(deadline, performance.now() + (this.options.unsureRetryMs ?? UNSURE_RETRY_MS));
        }
        if (outcome.noStream) this.restoreStreams('no stream answered a publish');
        await sleep(Math.min(RETRY_MS, Math.max(0, deadline - performance.now())));
      }
    } finally {
      this.order.end(turn);
    }
  }

  /**
   * The streams JetStream stores nothing in now and why (`RELAY_chat: ...`),
   * one per line of readiness's `degraded`; empty while every stream stores.
   */
  get storeFailures(): string[] {
    return [...this.failingStreams].map(([stream, why]) => `${stream}: ${why}`);
  }

  /** Each stream the relay needs, and whether JetStream stores in it now (ready, and no publish to it gave up unanswered since one was stored). */
  storingByStream(): Map<string, boolean> {
    // Without the bus nothing is stored either: every durable publish is refused (before, 1 throughout a NATS outage).
    const storing = this.state === 'ready' && this.bus.connected;
    return new Map(this.streams.map((s) => [s.name, storing && !this.failingStreams.has(s.name)]));
  }

  /** The stream a subject is stored in (its name), or the subject itself when no stream takes it. */
  private streamOf(subject: string): string {
    return this.streams.find((s) => s.subjects.some((p) => subjectMatches(p, subject)))?.name ?? subject;
  }

  private storeFailed(stream: string, reason: string): void {
    if (!this.failingStreams.has(stream)) this.log.error({ event: 'jetstream.store_failing', stream, reason });
    this.failingStreams.set(stream, reason);
    if (this.storeProbe || this.closed) return;
    this.storeProbe = setInterval(() => void this.probeStore(), STORE_PROBE_MS);
    this.storeProbe.unref();
  }

  private storeWorks(stream: string): void {
    if (!this.failingStreams.delete(stream)) return;
    this.log.info({ event: 'jetstream.store_recovered', stream });
    if (this.failingStreams.size > 0) return;
    clearInterval(this.storeProbe);
    this.storeProbe = undefined;
  }

  /** Asks each failing stream whether it has its leader again: publishes to it can be stored again. */
  private async probeStore(): Promise<void> {
    if (this.probingStore || this.state !== 'ready' || !this.jsm || !this.bus.connected) return;
    this.probingStore = true;
    try {
      for (const stream of [...this.failingStreams.keys()]) {
        // A subject no stream takes (a stream removed on reload meanwhile): nothing to wait for.
        if (!this.streams.some((s) => s.name === stream)) {
          this.storeWorks(stream);
          continue;
        }
        try {
          const info = await this.jsm.streams.info(stream);
          if (storesNow(info.cluster)) this.storeWorks(stream);
        } catch {
          // Still without an answer: asked again at the next probe.
        }
      }
    } finally {
      this.probingStore = false;
    }
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
    clearInterval(this.storeProbe);
    clearTimeout(this.accountRecheck);
    this.publisher?.close();
    this.reader.close();
    this.readyWaiters.wakeAll();
  }
}

/** What starts the description of a stream the relay made, before the id of that making. */
const STREAM_ID_PREFIX = 'edge-relay stream ';

/**
 * Which making of a stream this is: the id the relay wrote in its description
 * when it made it (updates keep it), or, for a stream made before the relay
 * wrote one, when it was made. JetStream's `created` alone is no such id: a
 * file-backed stream updated between two restarts of its server comes back
 * with another (nats-server issue 8470, seen on 2.9.10), which made a history
 * read as started over.
 */
export function streamIdOf(description: string | undefined, created: string): string {
  return description?.startsWith(STREAM_ID_PREFIX) ? description.slice(STREAM_ID_PREFIX.length) : created;
}
