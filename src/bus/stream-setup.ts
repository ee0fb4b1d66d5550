// Making sure of the relay's JetStream streams and its key-value bucket
// (docs/durability.md): each created, or updated to the relay's limits, by
// every edge at start and whenever one is found gone, with its number of
// copies (never fewer than it has, one on a server that is not clustered)
// and an id for each making of a stream (streamIdOf). When to do so, and
// whether JetStream is ready, are jetstream.ts's: what a stream's
// configuration is reads here apart from that state machine.
import { randomBytes } from 'node:crypto';
import { DiscardPolicy, RetentionPolicy, StorageType, nanos, type JetStreamClient, type JetStreamManager, type KV, type StreamInfo } from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { errorCode, NOT_CLUSTERED, STREAM_CONFIG_DIFFERS, STREAM_NOT_FOUND, StreamDeleting, StreamSealed, StreamTaken } from './jetstream-errors.ts';

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

/** What setup reads of the JetStream options (JetStreamOptions in jetstream.ts). */
export interface StreamSetupOptions {
  /** Undefined: 3 when the cluster has 3 or more servers, else 1. */
  replicas?: number;
  storage: 'file' | 'memory';
}

/**
 * How long a file-stored stream this edge had found must stay gone before the edge makes it again. nats-server 2.9
 * takes a stream out of its account first, then removes its consumers, then its directory: a stream of the same
 * name made in between (seen: an edge retrying every 250 ms as an operator deleted a sealed stream, the delete slowed
 * by a loaded machine or by many consumers) gets that directory, and the delete's end removes its files. The new
 * stream then refused every publish ("error opening msg block file ...: no such file or directory", 503), or took
 * them into files already removed, lost at the server's restart, while the edge said it was ready. The delete gives
 * its own last step a second of retries; this is well past it.
 */
const DELETE_SETTLE_MS = 2500;

export class StreamSetup {
  /** The copies a stream and the bucket are made with: counted when JetStream answers (jetstream.ts), 1 once the server says it is not clustered. */
  replicas = 1;
  /** Streams this edge found on JetStream or made: one of them gone now was deleted (or lost) since. */
  private readonly found = new Set<string>();
  /** When each of those was first found gone (performance.now()), until it is made again. */
  private readonly goneSince = new Map<string, number>();

  constructor(
    private readonly options: StreamSetupOptions,
    private readonly log: Logger,
  ) {}

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
      // Said though they are JetStream's defaults: an update keeps what it is not given (nats.js merges the
      // stream's own config), and a stream made by hand or another tool with a per-subject limit dropped a
      // group's acknowledged events as the next came, one without acks answered no publish, one with a size
      // limit refused events as stores that failed (found by the JetStream drift review).
      max_msgs_per_subject: -1,
      max_msg_size: -1,
      no_ack: false,
      allow_rollup_hdrs: false,
      discard_new_per_subject: false,
      duplicate_window: nanos(duplicateWindowMs),
      num_replicas: this.replicas,
      allow_direct: true,
      // Names this making of the stream (streamIdOf): kept by every later update, new when the stream is made again.
      description: `${STREAM_ID_PREFIX}${randomBytes(9).toString('base64url')}`,
    };
  }

  /** A stream found taken or sealed, at the `attempt`th try to make it sure: not something waiting cures, so an error, once a minute. */
  sayUnusable(err: StreamTaken | StreamSealed, attempt: number): void {
    if (attempt % 240 !== 0) return;
    if (err instanceof StreamTaken) this.log.error({ event: 'jetstream.stream_taken', stream: err.stream, subjects: err.subjects, hint: err.message });
    else this.log.error({ event: 'jetstream.stream_sealed', stream: err.stream, hint: err.message });
  }

  /**
   * Creates the stream, or gives it the relay's settings. A file-stored stream this edge had found is never made
   * by an add that might fall inside its delete (foundOrSettled): taken over when there, made again only once it
   * has stayed gone for DELETE_SETTLE_MS (StreamDeleting until then: its caller tries again). StreamTaken,
   * StreamSealed when it is not the relay's to use.
   */
  async ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<void> {
    try {
      const found = await this.foundOrSettled(jsm, spec.name);
      // An update, not an add: if the stream is deleted meanwhile, it fails (not found) and makes nothing.
      if (found) return await this.takeOver(jsm, spec, found);
      await this.addOrTakeOver(jsm, spec);
      this.made(spec.name);
    } catch (err) {
      if (errorCode(err).apiCode !== NOT_CLUSTERED || this.replicas === 1) throw err;
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
  }

  /**
   * Whether the stream `name` (a hub's, or the bucket's) may be made by an add. A file-stored one this edge had found
   * is asked for first: its info when it is there (to be taken over, never added: an add right after an info that
   * found it could fall inside a delete begun since); gone, undefined once it has stayed gone DELETE_SETTLE_MS, and
   * StreamDeleting until then. Any other (memory-stored: no directory; never found: first start): undefined at once.
   */
  private async foundOrSettled(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
    if (this.options.storage !== 'file' || !this.found.has(name)) return undefined;
    const found = await infoUnlessGone(jsm, name);
    if (found) {
      this.goneSince.delete(name);
      return found;
    }
    const since = this.goneSince.get(name) ?? performance.now();
    this.goneSince.set(name, since);
    const settleMs = since + DELETE_SETTLE_MS - performance.now();
    if (settleMs > 0) throw new StreamDeleting(name, settleMs);
    return undefined;
  }

  /** The stream `name` was found or made: one gone later was deleted (or lost) since. */
  private made(name: string): void {
    this.found.add(name);
    this.goneSince.delete(name);
  }

  /** Makes the stream, or takes over the one of that name there is. */
  private async addOrTakeOver(jsm: JetStreamManager, spec: StreamSpec): Promise<void> {
    try {
      await jsm.streams.add(this.streamConfig(spec));
    } catch (err) {
      if (errorCode(err).apiCode !== STREAM_CONFIG_DIFFERS) throw err;
      await this.takeOver(jsm, spec, await jsm.streams.info(spec.name));
    }
  }

  /** Gives a stream found there (`found`) the relay's settings, unless it is another's or sealed. */
  private async takeOver(jsm: JetStreamManager, spec: StreamSpec, found: StreamInfo): Promise<void> {
    // Found, even one the relay may not use (sealed, taken): a delete of it is waited for before it is made again.
    this.made(spec.name);
    // Holding other subjects: another deployment's stream with this name (same streamPrefix, or names that
    // run together: `x` + hub `y_z` and `x_y` + hub `z`), or this one's under an earlier bus.subjectPrefix.
    // Before, its subjects were made ours: the other deployment's edges then read our events as theirs.
    const theirs = [...(found.config.subjects ?? [])].sort();
    if (theirs.join(' ') !== [...spec.subjects].sort().join(' ')) throw new StreamTaken(spec.name, theirs);
    // Sealed by hand: JetStream refuses every publish to it for good, and takes an update that keeps the seal
    // (nats.js merges the stream's config) without a word. Before, the edge was ready, storing true, and each
    // publish to the hub failed 503 (found by the JetStream drift review).
    if (found.config.sealed) throw new StreamSealed(spec.name);
    // Created by an edge (or a version) with other limits: take ours. Storage cannot change, and
    // replicas never go down: an edge that counted fewer servers (one of them down at its start, or
    // not advertised) must not take copies away from events already acknowledged.
    const { storage: _storage, ...update } = this.streamConfig(spec);
    // The stream's id stays what its making gave it (a stream of an older edge, without one, gets one now).
    if (found.config.description?.startsWith(STREAM_ID_PREFIX)) update.description = found.config.description;
    const existing = found.config.num_replicas;
    if (existing > update.num_replicas) {
      this.log.warn({ event: 'jetstream.replicas_kept', stream: spec.name, replicas: existing, counted: update.num_replicas });
      update.num_replicas = existing;
    }
    await jsm.streams.update(spec.name, update).catch((err: Error) => {
      // What JetStream will not change (retention, max_consumers, a sealed or deny-delete stream made so by hand)
      // names no stream: readiness and jetstream.waiting said only "can not change retention policy" (found by the
      // JetStream drift review). Its codes are kept for the callers that tell errors apart.
      throw Object.assign(new Error(`stream ${spec.name}: ${err.message}`), { code: (err as { code?: unknown }).code, api_error: (err as { api_error?: unknown }).api_error });
    });
  }

  /**
   * Opens the session bucket, made if it is not there, with the relay's limits. Its stream meets the same race as a
   * hub's (foundOrSettled): js.views.kv asks for the stream and adds it when that answer is "not found", which, on an
   * operator's delete of a file-stored bucket, fell inside the delete, and the bucket made again had no files (its
   * checkpoints acknowledged, then lost). Found there, the bucket is bound to (views.kv with bindOnly: no add).
   */
  async ensureBucket(jsm: JetStreamManager, js: JetStreamClient, bucket: BucketSpec): Promise<KV> {
    const stream = `KV_${bucket.name}`;
    const found = await this.foundOrSettled(jsm, stream);
    const storage = this.options.storage === 'memory' ? StorageType.Memory : StorageType.File;
    const kv = found
      ? await js.views.kv(bucket.name, { bindOnly: true, allow_direct: found.config.allow_direct })
      : await js.views.kv(bucket.name, { replicas: this.replicas, history: 1, ttl: bucket.ttlMs, storage });
    // An existing bucket keeps its options: make its TTL ours, and its replicas ours if it has fewer (never fewer than it has).
    // No size limits: a bucket made by hand (`nats kv add --max-value-size`, `--max-bucket-size`; discard new) refused
    // the checkpoints past them, and the sessions they were for could not be taken over (found by the JetStream drift review).
    // An update, as for a hub's stream: if the bucket is deleted meanwhile, it fails and makes nothing.
    const info = found ?? (await jsm.streams.info(stream));
    this.made(stream);
    const replicas = Math.max(info.config.num_replicas, this.replicas);
    const limits = { max_age: nanos(bucket.ttlMs), num_replicas: replicas, max_bytes: -1, max_msgs: -1, max_msg_size: -1 };
    if ((Object.keys(limits) as (keyof typeof limits)[]).some((key) => info.config[key] !== limits[key])) {
      await jsm.streams.update(stream, limits);
    }
    return kv;
  }
}

/** The stream's info, or undefined when JetStream says there is no such stream. */
export async function infoUnlessGone(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (errorCode(err).apiCode === STREAM_NOT_FOUND) return undefined;
    throw err;
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
