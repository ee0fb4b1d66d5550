// NATS JetStream, as the relay uses it (docs/durability.md): streams created
// or updated idempotently by every edge at start, publishes that resolve only
// once stored (retried with the same message id until a deadline, since a
// stream elects a new leader in seconds), a follower that reads a stream in
// order from a sequence and survives the loss of the NATS node holding its
// consumer, range and subject reads, and a key-value bucket. It knows nothing
// of hubs or sessions: the pub/sub domain names the streams and subjects.
//
// Written for nats-server 2.9 (Debian's): ephemeral consumers are created by
// name with a start sequence (never "deliver new", which a reset turns into a
// replay from 1 or a gap), checked for contiguous delivery sequences, and
// recreated from the last stream sequence + 1 when their heartbeats stop
// (2.9 may place a new consumer on an offline node: the create times out and
// is retried). Key-value compare-and-set is not relied on (it is not atomic in
// 2.9 clusters before 2.9.21); a delete may name a revision as a guard.
import { randomBytes } from 'node:crypto';
import { TimedWaits } from '../collections/timed-waits.ts';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  nuid,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  type NatsError,
} from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { tooLargeForBus } from './bus.ts';
import type { NatsBus } from './nats.ts';
import { MSG_ID_HEADER, StorePublisher, storedBytes } from './stream-publisher.ts';
import { REPLICATED_STREAMS_SINCE, versionBelow } from './nats-server-version.ts';
import { pullOnce } from './stream-pull.ts';
import { PublishOrder } from './publish-order.ts';
import { FollowPosition, type RecentlyHandedOn } from './stream-resume.ts';
import { subjectMatches } from './subject-match.ts';

/** Why an event was not stored, in words a client can be given. */
export class StoreError extends Error {}

/** A conditional key-value delete found another revision than the one it was made against. */
export class StoreConflict extends Error {}

/** A stream of the name a durable hub needs exists and holds other subjects: left as it is, the hub not served. */
export class StreamTaken extends Error {
  constructor(
    readonly stream: string,
    readonly subjects: string[],
  ) {
    super(
      `stream ${stream} exists and holds other subjects (${subjects.join(', ')}): another deployment's (give each deployment its own ` +
        'bus.jetstream.streamPrefix) or this one\'s under an earlier bus.subjectPrefix (delete the stream, or go back to that prefix)',
    );
  }
}

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

export interface StoredMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
}

export interface Follower {
  /** The last stream sequence handed on (0 before the first). */
  readonly position: number;
  stop(): void;
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
/** A consumer whose heartbeats stop this long is recreated (nats.js: heartbeat = expires / 2). */
const CONSUME_EXPIRES_MS = 5000;
/** Messages a consumer asks for at once. */
const CONSUME_BATCH = 1000;
/** A page read's pause after a pull that ended at once with nothing, before it asks again. */
const EMPTY_PULL_PAUSE_MS = 50;
/** What a stored message takes on a pull beyond its payload (subject, headers): NATS counts them in `max_bytes`. */
const SUBJECT_AND_HEADER_ROOM = 64 * 1024;
/** The server drops a consumer nobody pulls from for this long. */
const CONSUMER_INACTIVE_MS = 60_000;
/** How many of the messages a follower handed on last it remembers (sequence, id, store time) and reads again with each new consumer (stream-resume.ts). */
const FOLLOW_MEMORY = 64;

const JS_NOT_ENABLED_FOR_ACCOUNT = 10039;
const STREAM_CONFIG_DIFFERS = 10058;
const STREAM_NOT_FOUND = 10059;
const NO_MESSAGE_FOUND = 10037;
const NOT_CLUSTERED = 10074;
/** "wrong last sequence": a delete expecting a key's revision found another. */
const WRONG_LAST_SEQUENCE = 10071;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RESTORE_INTERVAL_MS = 1000;

function errorCode(err: unknown): { code?: string; apiCode?: number } {
  const e = err as NatsError & { api_error?: { err_code?: number } };
  return { code: e?.code, apiCode: e?.api_error?.err_code };
}

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
  private readonly followers = new Set<{ stop(): void }>();
  /** The consumers followers read now: dropped (and made again) when the connection to NATS is made again. */
  private readonly consuming = new Set<ConsumerMessages>();
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
    // After a reconnect a consumer may have lived on the server that went away,
    // and nats.js then waits on it silently: start again from the last sequence.
    bus.onConnectionChange((connected) => {
      if (!connected) return;
      // What was sent on the connection gone is not ordered with what is sent on this one, and is tried again now.
      this.order.reconnected();
      this.publisher?.reconnected();
      for (const msgs of this.consuming) msgs.stop();
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
          if (left <= 0 && !turn.troubled) last = 'earlier events of its stream were not stored yet, and it is not stored before them';
        }
        if (left <= 0) {
          if (this.state === 'ready' && this.bus.connected) this.storeFailed(stream, last);
          throw notStored(last, unsure);
        }
        if (this.state !== 'ready' || !this.bus.connected) {
          // Publishing while disconnected would be dropped by the client at the reconnect.
          last = this.state === 'unavailable' ? this.problem! : this.bus.connected ? (this.problem ?? 'JetStream is not ready') : 'the NATS bus is unreachable';
          if (this.state === 'unavailable') throw notStored(last, unsure);
          await sleep(Math.min(RETRY_MS, left));
          continue;
        }
        if (this.bus.backlogged) {
          // Its server takes nothing (frozen, cut off) and is not judged stale yet: what went out waits in this
          // process's memory. Nothing more goes until it clears (bus bound on bytes unsent); the message waits here.
          last = 'the NATS server takes nothing this edge sends';
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
   * Hands every message of `stream` from `fromSeq` on to `onMessage`, in
   * order, each once, until stop(). A consumer that stops answering (its NATS
   * node died, the server restarted) is replaced by one that starts after
   * the last message handed on.
   */
  follow(stream: string, fromSeq: number, onMessage: (m: StoredMessage) => void, onGap?: (expected: number, got: number) => void): Follower {
    let stopped = false;
    let current: ConsumerMessages | undefined;
    const position = new FollowPosition(fromSeq, FOLLOW_MEMORY, {
      renumbered: (note) =>
        this.log.warn({
          event: 'jetstream.stream_renumbered',
          stream,
          ...note,
          hint: `this consumer's NATS server holds a message under another sequence than the server read before (their copies of the stream disagree; seen with nats-server 2.9.10): following it by message id; use nats-server ${REPLICATED_STREAMS_SINCE} or later`,
        }),
      rewritten: ({ next, verdict, read, storedAfterMs }) =>
        this.log.error({
          event: 'jetstream.stream_rewritten',
          stream,
          next,
          // What was read, and why it counts as a rewrite.
          verdict,
          read: { seq: read.seq, id: read.id, storedAt: new Date(read.ms).toISOString() },
          ...(verdict === 'rewritten' ? { from: read.seq } : { storedAfter: new Date(storedAfterMs!).toISOString() }),
          hint: 'the stream lost messages it had acknowledged (every server holding it stopped at once?) and stored new ones under their sequences: following it from there',
        }),
    });
    /** When the stream followed was made: another time means it was made again, and sequences start over. */
    let created: string | undefined;
    const follower = {
      get position() {
        return position.next - 1;
      },
      stop: () => {
        stopped = true;
        this.followers.delete(follower);
        current?.stop();
      },
    };
    this.followers.add(follower);
    void (async () => {
      for (let attempt = 0; !stopped && !this.closed; attempt++) {
        const name = `edge_${nuid.next()}`;
        let msgs: ConsumerMessages;
        try {
          const { jsm, js } = this.ready;
          const info = await jsm.streams.info(stream);
          const { handedOn } = position;
          // A follower that remembers nothing (it handed none on) remembers the message before where it is.
          const start = handedOn.empty && position.next > 1 ? await this.rememberStart(stream, position.next - 1, handedOn) : undefined;
          // Another creation time means the stream was made again, if nothing remembered says otherwise: the
          // servers of a replicated stream each keep their own (nats-server 2.10 answers with the leader's, and
          // they differ by milliseconds; an empty stream's changes when a server restarts), and with messages
          // remembered, those read again tell (a stream made again holds others, stored after them: followed by
          // store time, stream-resume.ts). Without an answer about the message before, nothing is decided.
          if (created !== undefined && info.created !== created && handedOn.empty && start !== 'unknown') {
            const first = Math.max(1, info.state.first_seq);
            this.log.warn({ event: 'jetstream.stream_reset', stream, next: position.next, from: first, created: { was: created, now: info.created }, hint: 'the stream was made again: following it from its start' });
            position.reset(first);
          }
          // Kept while undecided: the next consumer compares again.
          if (created === undefined || start !== 'unknown') created = info.created;
          // The last messages handed on are read again, each compared with what was handed on under its
          // sequence (stream-resume.ts): the same one is skipped, another one means the stream was rewritten.
          // And the stream's last FOLLOW_MEMORY messages whatever it says: a stream that lost more than is
          // remembered holds its new messages below what is remembered, stored after it (a state behind gives
          // old ones, which are skipped).
          const first = Math.max(1, info.state.first_seq);
          const { next } = position;
          const from = Math.min(next, handedOn.oldestFrom(first) ?? next, Math.max(first, info.state.last_seq + 1 - FOLLOW_MEMORY));
          const byTime = position.startFromMs;
          // By time: from the millisecond of the latest message handed on (it, and others of that millisecond
          // handed on, are known by their ids; a later one of that millisecond is new).
          const ci = await jsm.consumers.add(stream, {
            name,
            ...(byTime !== undefined
              ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(byTime).toISOString() }
              : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }),
            ack_policy: AckPolicy.None,
            mem_storage: true,
            num_replicas: 1,
            inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
          });
          msgs = await js.consumers.getPullConsumerFor(ci).consume({ max_messages: CONSUME_BATCH, expires: CONSUME_EXPIRES_MS });
        } catch (err) {
          if (attempt % 20 === 0) this.log.warn({ event: 'jetstream.follow_retry', stream, err: (err as Error).message });
          this.restoreIfNoStream(err, 'a follower found no stream');
          this.jsm?.consumers.delete(stream, name).catch(() => undefined);
          await sleep(RETRY_MS);
          continue;
        }
        current = msgs;
        this.consuming.add(msgs);
        if (stopped) msgs.stop();
        // A consumer renews its pull every CONSUME_EXPIRES_MS; silence for twice
        // that means nobody serves it (heartbeats are not always reported).
        let lastSign = performance.now();
        const watchdog = setInterval(() => {
          if (performance.now() - lastSign < 2 * CONSUME_EXPIRES_MS) return;
          this.log.warn({ event: 'jetstream.follow_reset', stream, reason: 'silent', next: position.next });
          msgs.stop();
        }, 1000);
        watchdog.unref();
        void (async () => {
          for await (const status of await msgs.status()) {
            lastSign = performance.now();
            if (['heartbeats_missed', 'consumer_deleted', 'consumer_not_found', 'stream_not_found'].includes(status.type)) {
              this.log.warn({ event: 'jetstream.follow_reset', stream, reason: status.type, next: position.next });
              msgs.stop();
            }
          }
        })().catch(() => undefined);
        let delivered = 0;
        position.newConsumer();
        try {
          for await (const m of msgs) {
            lastSign = performance.now();
            // A consumer the server rebuilt starts its delivery sequence again: start afresh from `next`.
            if (m.info.deliverySequence !== delivered + 1) {
              msgs.stop();
              break;
            }
            delivered = m.info.deliverySequence;
            const step = position.take({ seq: m.seq, id: m.headers?.get(MSG_ID_HEADER) || undefined, ms: Math.floor(m.info.timestampNanos / 1e6) });
            if (step.kind === 'skip') continue;
            if (step.kind === 'byTime') {
              msgs.stop();
              break;
            }
            if (step.gapFrom !== undefined) onGap?.(step.gapFrom, m.seq);
            onMessage({ seq: m.seq, subject: m.subject, data: m.data });
          }
        } catch (err) {
          this.log.warn({ event: 'jetstream.follow_error', stream, err: (err as Error).message });
        }
        clearInterval(watchdog);
        this.consuming.delete(msgs);
        this.jsm?.consumers.delete(stream, name).catch(() => undefined);
        if (!stopped) await sleep(RETRY_MS);
      }
    })();
    return follower;
  }

  /**
   * A follower that starts after `seq` remembers that message (its store time) as if it had handed it on:
   * one that hands nothing on before the stream loses its tail (a quiet hub) still finds where it was.
   * Says whether the stream holds it (`gone`: aged out, deleted, or a stream made again), or `unknown` (no answer).
   */
  private async rememberStart(stream: string, seq: number, handedOn: RecentlyHandedOn): Promise<'remembered' | 'gone' | 'unknown'> {
    try {
      const stored = await this.ready.jsm.streams.getMessage(stream, { seq });
      handedOn.add({ seq, id: stored.header?.get(MSG_ID_HEADER) || undefined, ms: Date.parse(stored.timestamp) });
      return 'remembered';
    } catch (err) {
      return errorCode(err).apiCode === NO_MESSAGE_FOUND ? 'gone' : 'unknown';
    }
  }

  /**
   * Messages of `stream` with sequences from `fromSeq` to `toSeq`, optionally
   * only those on `subject`, at most `limit`, and no more once `maxBytes` of
   * message data have been read (at least one message). Each page is an
   * ephemeral consumer that the server forgets if this edge vanishes.
   */
  async read(stream: string, options: { fromSeq: number; toSeq?: number; subject?: string; limit: number; maxBytes?: number; timeoutMs: number }): Promise<StoredMessage[]> {
    const { jsm } = this.ready;
    const out: StoredMessage[] = [];
    const maxBytes = options.maxBytes ?? Infinity;
    let bytes = 0;
    const deadline = performance.now() + options.timeoutMs;
    const ci = await jsm.consumers.add(stream, {
      name: `read_${nuid.next()}`,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, options.fromSeq),
      ack_policy: AckPolicy.None,
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: nanos(10_000),
      ...(options.subject ? { filter_subject: options.subject } : {}),
    });
    try {
      let pending = ci.num_pending;
      // Deliveries of this consumer so far: a pull that ended here before the server's answer did lost what came
      // after, delivered all the same; the next pull's first delivery then jumps, and the page is refused, not
      // handed on with a hole (a replay would skip those events; a history page would leave them out).
      let delivered = 0;
      while (pending > 0 && out.length < options.limit && bytes < maxBytes) {
        const left = deadline - performance.now();
        if (left <= 0) throw new StoreError('the stream did not answer in time');
        const nc = this.bus.connection;
        if (!nc) throw new StoreError('NATS is not connected');
        // With a byte bound the server sends no more than the bytes left (the next message always fits: at least a
        // whole max_payload), so a page of large messages costs about its bound on the wire and in memory; counted
        // by message alone, a batch of 1,000 came whole and all but the page was dropped here.
        const pulledAt = performance.now();
        const pulled = await pullOnce(nc, stream, ci.name, {
          batch: Math.min(CONSUME_BATCH, options.limit - out.length, pending),
          maxBytes: maxBytes === Infinity ? undefined : Math.max(maxBytes - bytes, this.bus.maxPayload + SUBJECT_AND_HEADER_ROOM),
          expiresMs: Math.max(1000, Math.min(left, 5000)),
        });
        // Refused, it would be refused again: the read fails now (before, it was taken for "nothing came" and asked
        // again at once, thousands of times a second, until the deadline).
        if (pulled.refused !== undefined) throw new StoreError(`the stream refused a read (${pulled.refused})`);
        const msgs = pulled.messages;
        for (const m of msgs) {
          if (m.delivered !== ++delivered) throw new StoreError('the stream answered too slowly: part of a page was lost on the way');
          pending = m.pending;
          if (options.toSeq !== undefined && m.seq > options.toSeq) {
            pending = 0;
            break;
          }
          out.push({ seq: m.seq, subject: m.subject, data: m.data });
          bytes += m.data.length;
          if (out.length >= options.limit || pending === 0 || bytes >= maxBytes) break;
        }
        // Nothing came in time: the end only if the server now counts nothing pending (messages aged out since),
        // else ask again until the deadline. A short answer here would read as "the stream holds no more".
        if (msgs.length === 0) {
          // Ended at once with nothing (the next message past the bytes asked for: stored under a larger max_payload):
          // a pause before asking again, rather than a loop as fast as the server answers.
          if (performance.now() - pulledAt < EMPTY_PULL_PAUSE_MS) await new Promise((r) => setTimeout(r, EMPTY_PULL_PAUSE_MS));
          pending = (await jsm.consumers.info(stream, ci.name)).num_pending;
        }
      }
    } finally {
      jsm.consumers.delete(stream, ci.name).catch(() => undefined);
    }
    return out;
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
    for (const follower of [...this.followers]) follower.stop();
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
