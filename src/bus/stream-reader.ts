// Reading a JetStream stream, as durable hubs do (docs/durability.md): a
// follower that hands on every message from a sequence in order, each once,
// and goes on with a new consumer when its consumer stops answering (its NATS
// node died, the server restarted, the stream was made again or lost its
// tail: stream-resume.ts decides where to go on from); and pages of a range,
// for a session's replay and the history API. The streams themselves, and
// whether JetStream is ready, are jetstream.ts's.
import { AckPolicy, DeliverPolicy, nanos, nuid, type ConsumerConfig, type ConsumerInfo, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type StreamInfo, type Subscription } from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { errorCode, MAXIMUM_CONSUMERS, NO_MESSAGE_FOUND, StoreError } from './jetstream-errors.ts';
import type { NatsBus } from './nats.ts';
import { REPLICATED_STREAMS_SINCE } from './nats-server-version.ts';
import { MSG_ID_HEADER } from './stream-publisher.ts';
import { pullOnce } from './stream-pull.ts';
import { FOLLOW_MEMORY, FollowPosition, type RecentlyHandedOn } from './stream-resume.ts';

/** Pause before a follower's next consumer, after one could not be made or ended. */
const RETRY_MS = 250;
/** A consumer whose heartbeats stop this long is recreated (nats.js: heartbeat = expires / 2). */
const CONSUME_EXPIRES_MS = 5000;
/**
 * How long a follower's consumer may be silent, when it should not be, before the server is asked whether it still
 * holds a pull request of the follower's: nats-server before 2.9.16 ends a pull request that expires while it has a
 * message to deliver without the 408 that says so (nats-io/nats-server#3942), and nats.js, still counting that
 * request's messages as coming, asks for no more: the follower stood still until two heartbeats were missed (5 to
 * 7.5 s). It should not be silent when the last message said more are pending, or when no pull was asked for
 * longer than one lives (CONSUME_EXPIRES_MS): every pull ends with messages or a 408 that nats.js answers with the next.
 */
const PULL_LOST_MS = 500;
/** Messages a consumer asks for at once. */
const CONSUME_BATCH = 1000;
/** A page read's pause after a pull that ended at once with nothing, before it asks again. */
const EMPTY_PULL_PAUSE_MS = 50;
/** What a stored message takes on a pull beyond its payload (subject, headers): NATS counts them in `max_bytes`. */
const SUBJECT_AND_HEADER_ROOM = 64 * 1024;
/** The server drops a consumer nobody pulls from for this long. */
const CONSUMER_INACTIVE_MS = 60_000;
/**
 * How many times a consumer is made again when the server placed it on another server than the stream's leader
 * (a server picks one of the stream's, at random but not evenly: in a soak on 2.9.10 with three, 30 % of page reads'
 * consumers landed on the leader, whose many consumers may count against it; at that rate 50 tries miss it once in
 * 50 million, 20 tries, the first choice, missed it once in that soak).
 */
const PLACEMENT_TRIES = 50;
/**
 * How often a follower asks which server leads its stream, and goes on with a new consumer if another than when its
 * consumer was made does and the consumer is not on it: the election advisories (watchLeaders) are sent at most
 * once, and an edge misses those sent while its connection to NATS moves, or all of them when its NATS user may not
 * subscribe to them (a soak heard 12 of 15 elections). One stream info request per follower this often.
 */
const LEADER_CHECK_MS = 5000;
/** JetStream's advisory that a stream elected a leader; the stream's name is the last token. */
export const LEADER_ELECTED = '$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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


/** A page read: sequences from `fromSeq` to `toSeq`, only those on `subject`, at most `limit` and about `maxBytes`, within `timeoutMs`. */
export interface ReadOptions {
  fromSeq: number;
  toSeq?: number;
  subject?: string;
  limit: number;
  maxBytes?: number;
  timeoutMs: number;
}

/** What a reader needs of the JetStream access it reads for (jetstream.ts). */
export interface StreamReaderContext {
  readonly bus: NatsBus;
  readonly log: Logger;
  /** JetStream's clients while it is ready; throws StoreError with why otherwise. */
  clients(): { jsm: JetStreamManager; js: JetStreamClient };
  /** The JetStream manager, ready or not: a consumer is deleted with it (best effort). */
  manager(): JetStreamManager | undefined;
  /** True once the access is closed: followers end. */
  closed(): boolean;
  /** A call failed: if its stream is gone, the streams are made again. */
  restoreIfNoStream(err: unknown, reason: string): void;
}

interface FollowerEntry {
  readonly stream: string;
  /** Why JetStream refuses it a consumer while that is not something a moment cures (unreadStreams). */
  refused?: string;
  stop(): void;
  /** Ends the consumer read now: the follower goes on with a new one (compared with what it handed on last). */
  newConsumer(reason: string, detail?: object): void;
}

export class StreamReader {
  private readonly followers = new Set<FollowerEntry>();
  /** The consumers followers read now: dropped (and made again) when the connection to NATS is made again. */
  private readonly consuming = new Set<ConsumerMessages>();
  /** The subscription to streams' leader elections (watchLeaders), once made; kept when refused, so as not to ask again. */
  private leaderWatch: Subscription | undefined;

  constructor(private readonly c: StreamReaderContext) {}

  /**
   * After a reconnect a consumer may have lived on the server that went away, and nats.js then waits on it silently:
   * each follower starts again after the last message it handed on. A leader watch the server refused (nats.js closes
   * a subscription refused by its permissions) is asked for again as they do: the permissions may have changed.
   */
  reconnected(): void {
    if (this.leaderWatch?.isClosed()) this.leaderWatch = undefined;
    for (const msgs of this.consuming) msgs.stop();
  }

  /**
   * A follower's consumer lives on one server and reads that server's copy of
   * the stream. When the stream elects another leader whose copy numbers its
   * messages otherwise (nats-server 2.9.10 did: lower, after a leader change),
   * the messages stored next come under sequences the consumer has passed and
   * are never delivered to it. Each follower of a stream whose leader changed
   * goes on with a new consumer, which reads the last messages again and
   * tells them apart by id (stream-resume.ts). One subscription per edge, made
   * once NATS is connected; the edges' NATS user must be allowed to subscribe
   * to it (deploy/nats.conf).
   */
  private watchLeaders(): void {
    const nc = this.c.bus.connection;
    if (this.leaderWatch || !nc) return;
    this.leaderWatch = nc.subscribe(`${LEADER_ELECTED}.*`, {
      callback: (err, msg) => {
        if (err) {
          this.c.log.warn({
            event: 'jetstream.leader_watch_refused',
            err: err.message,
            hint: `followers of durable hubs go on with the same consumer when a stream elects another leader (an old nats-server may then skip events): allow this edge's NATS user to subscribe to ${LEADER_ELECTED}.*`,
          });
          return;
        }
        const stream = msg.subject.slice(LEADER_ELECTED.length + 1);
        let leader: unknown;
        try {
          leader = (JSON.parse(new TextDecoder().decode(msg.data)) as { leader?: unknown }).leader;
        } catch {
          leader = undefined;
        }
        for (const follower of this.followers) if (follower.stream === stream) follower.newConsumer('leader_changed', typeof leader === 'string' ? { leader } : {});
      },
    });
  }

  /**
   * The streams a follower cannot read because JetStream refuses it a consumer by a limit (the account's or the
   * stream's max_consumers) and why, `RELAY_chat: ...`; empty when none. Such an edge delivers nothing of that hub
   * to its clients: readiness says so (before, it stayed ready, and only follow_retry said why).
   */
  unreadStreams(): string[] {
    return [...this.followers].flatMap((f) => (f.refused === undefined ? [] : [`${f.stream}: ${f.refused}`]));
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
    /** A leader elected while the next consumer was being made: it may have been made on the old leader's copy. */
    let resetAsked: { reason: string; detail: object } | undefined;
    const position = new FollowPosition(fromSeq, FOLLOW_MEMORY, {
      renumbered: (note) =>
        this.c.log.warn({
          event: 'jetstream.stream_renumbered',
          stream,
          ...note,
          hint: `this consumer's NATS server holds a message under another sequence than the server read before (their copies of the stream disagree; seen with nats-server 2.9.10): following it by message id; use nats-server ${REPLICATED_STREAMS_SINCE} or later`,
        }),
      rewritten: ({ next, verdict, read, storedAfterMs }) =>
        this.c.log.error({
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
    const follower: FollowerEntry & Follower = {
      stream,
      refused: undefined,
      get position() {
        return position.next - 1;
      },
      stop: () => {
        stopped = true;
        this.followers.delete(follower);
        current?.stop();
      },
      newConsumer: (reason: string, detail: object = {}) => {
        if (stopped) return;
        if (!current) {
          resetAsked = { reason, detail };
          return;
        }
        this.c.log.warn({ event: 'jetstream.follow_reset', stream, reason, next: position.next, ...detail });
        current.stop();
      },
    };
    this.followers.add(follower);
    void (async () => {
      for (let attempt = 0; !stopped && !this.c.closed(); attempt++) {
        this.watchLeaders();
        resetAsked = undefined;
        let msgs: ConsumerMessages;
        let ci: ConsumerInfo | undefined;
        let info: StreamInfo;
        try {
          const { jsm, js } = this.c.clients();
          info = await jsm.streams.info(stream);
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
            this.c.log.warn({ event: 'jetstream.stream_reset', stream, next: position.next, from: first, created: { was: created, now: info.created }, hint: 'the stream was made again: following it from its start' });
            position.reset(first);
          }
          // Kept while undecided: the next consumer compares again.
          if (created === undefined || start !== 'unknown') created = info.created;
          // The last messages handed on are read again, each compared with what was handed on under its
          // sequence (stream-resume.ts): the same one is skipped, another one means the stream was rewritten.
          const from = position.rereadFrom(Math.max(1, info.state.first_seq), info.state.last_seq);
          const byTime = position.startFromMs;
          // By time: from the millisecond of the latest message handed on (it, and others of that millisecond
          // handed on, are known by their ids; a later one of that millisecond is new).
          ci = await this.addOnLeader(jsm, stream, info.cluster?.leader, 'edge', {
            ...(byTime !== undefined
              ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(byTime).toISOString() }
              : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }),
            ack_policy: AckPolicy.None,
            mem_storage: true,
            num_replicas: 1,
            inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
          }, () => stopped);
          msgs = await js.consumers.getPullConsumerFor(ci).consume({ max_messages: CONSUME_BATCH, expires: CONSUME_EXPIRES_MS });
        } catch (err) {
          if (errorCode(err).apiCode === MAXIMUM_CONSUMERS) follower.refused = (err as Error).message;
          if (attempt % 20 === 0) this.c.log.warn({ event: 'jetstream.follow_retry', stream, err: (err as Error).message });
          this.c.restoreIfNoStream(err, 'a follower found no stream');
          if (ci) this.c.manager()?.consumers.delete(stream, ci.name).catch(() => undefined);
          await sleep(RETRY_MS);
          continue;
        }
        const name = ci.name;
        follower.refused = undefined;
        current = msgs;
        this.consuming.add(msgs);
        if (stopped) msgs.stop();
        else {
          // Set by newConsumer while the consumer was made (TypeScript cannot see a closure assign it).
          const asked = resetAsked as { reason: string; detail: object } | undefined;
          if (asked) follower.newConsumer(asked.reason, asked.detail);
        }
        // A consumer renews its pull every CONSUME_EXPIRES_MS; silence for twice
        // that means nobody serves it (heartbeats are not always reported).
        let lastSign = performance.now();
        /** When nats.js last asked for messages, and what the last message said the consumer holds after it (PULL_LOST_MS). */
        let lastPull = performance.now();
        let lastPending = 0;
        let lastProbe = 0;
        let probing = false;
        const probePull = () => {
          const now = performance.now();
          if (probing || now - lastSign < PULL_LOST_MS || now - lastProbe < PULL_LOST_MS) return;
          if (lastPending === 0 && now - lastPull < CONSUME_EXPIRES_MS + PULL_LOST_MS) return;
          const jsm = this.c.manager();
          if (!jsm) return;
          probing = true;
          lastProbe = now;
          jsm.consumers
            .info(stream, name)
            .then((info) => {
              if (info.num_waiting > 0 || current !== msgs) return;
              follower.newConsumer('pull_lost', { pending: info.num_pending, silentMs: Math.round(performance.now() - lastSign), hint: 'the NATS server ended a pull request without telling (nats-server before 2.9.16 does when one expires as messages come): reading on with a new consumer' });
            })
            .catch(() => undefined)
            .finally(() => {
              probing = false;
            });
        };
        const leaderCheck = this.leaderCheck(stream, info.cluster?.leader, ci.cluster?.leader, (leader) => follower.newConsumer('leader_changed', { leader, seen: 'leader_check' }));
        const watchdog = setInterval(() => {
          leaderCheck.tick();
          probePull();
          if (performance.now() - lastSign < 2 * CONSUME_EXPIRES_MS) return;
          this.c.log.warn({ event: 'jetstream.follow_reset', stream, reason: 'silent', next: position.next });
          msgs.stop();
        }, 250);
        watchdog.unref();
        void (async () => {
          for await (const status of await msgs.status()) {
            lastSign = performance.now();
            if (status.type === 'next') lastPull = lastSign;
            if (['heartbeats_missed', 'consumer_deleted', 'consumer_not_found', 'stream_not_found'].includes(status.type)) {
              this.c.log.warn({ event: 'jetstream.follow_reset', stream, reason: status.type, next: position.next });
              msgs.stop();
            }
          }
        })().catch(() => undefined);
        let delivered = 0;
        position.newConsumer();
        try {
          for await (const m of msgs) {
            lastSign = performance.now();
            // A consumer the server rebuilt starts its delivery sequence again: start afresh from `next` (said, as
            // every other new consumer is: a follower silently making one stands still for a while).
            if (m.info.deliverySequence !== delivered + 1) {
              this.c.log.warn({ event: 'jetstream.follow_reset', stream, reason: 'delivery_restarted', next: position.next, delivered, got: m.info.deliverySequence });
              msgs.stop();
              break;
            }
            delivered = m.info.deliverySequence;
            lastPending = m.info.pending;
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
          this.c.log.warn({ event: 'jetstream.follow_error', stream, err: (err as Error).message });
        }
        clearInterval(watchdog);
        leaderCheck.stop();
        this.consuming.delete(msgs);
        if (current === msgs) current = undefined;
        this.c.manager()?.consumers.delete(stream, name).catch(() => undefined);
        if (!stopped) await sleep(RETRY_MS);
      }
    })();
    return follower;
  }

  /**
   * Asks, every LEADER_CHECK_MS of ticks, which server leads `stream`, and calls `changed` once when another than
   * `leaderWhenMade` (the leader named just before the consumer was made) does and the consumer is not `on` it. One
   * question at a time; one unanswered is let be (a consumer whose server went silent is the watchdog's). After
   * stop() (the consumer's reading ended), an answer still out calls nothing.
   */
  private leaderCheck(stream: string, leaderWhenMade: string | undefined, on: string | undefined, changed: (leader: string) => void): { tick(): void; stop(): void } {
    let lastAsked = performance.now();
    let asking = false;
    let done = false;
    return {
      tick: () => {
        if (done || asking || performance.now() - lastAsked < LEADER_CHECK_MS) return;
        const jsm = this.c.manager();
        if (!jsm || this.c.closed()) return;
        asking = true;
        lastAsked = performance.now();
        jsm.streams
          .info(stream)
          .then((now) => {
            const leader = now.cluster?.leader;
            if (done || leader === undefined || leader === leaderWhenMade || leader === on) return;
            done = true;
            changed(leader);
          })
          .catch(() => undefined)
          .finally(() => {
            asking = false;
          });
      },
      stop: () => {
        done = true;
      },
    };
  }

  /**
   * A consumer of `stream` on the server that leads it (`leader`, as the stream's info named it just before), named
   * `prefix`_ and a random tail. A consumer of one copy reads that server's copy of the stream, and the server
   * places a consumer on any server holding one. The copies should be alike, but nats-server 2.9.10's were seen
   * apart: after its leader was frozen and another elected, the old leader's copy lacked 9 acknowledged messages
   * for good and numbered the rest lower, and a follower whose new consumer was placed there never had those
   * messages (a chaos soak; the other edges' followers, on the leader, had them). The leader's copy is the one
   * every write was acknowledged by: a consumer placed elsewhere is deleted and made again, up to PLACEMENT_TRIES
   * times, or until `enough()` says to stop looking (the read's deadline passed, the follower stopped): then the
   * last one made is taken. Without a leader named (one server, or none elected now) the first one is taken.
   */
  private async addOnLeader(
    jsm: JetStreamManager,
    stream: string,
    leader: string | undefined,
    prefix: string,
    config: Partial<ConsumerConfig>,
    enough: () => boolean,
  ): Promise<ConsumerInfo> {
    for (let tries = 1; ; tries++) {
      const name = `${prefix}_${nuid.next()}`;
      let ci: ConsumerInfo;
      try {
        ci = await jsm.consumers.add(stream, { ...config, name });
      } catch (err) {
        // It may have been made all the same (an answer lost): it goes when nobody pulls from it, or now.
        jsm.consumers.delete(stream, name).catch(() => undefined);
        throw err;
      }
      const on = ci.cluster?.leader;
      if (leader === undefined || on === undefined || on === leader || this.c.closed() || enough()) return ci;
      if (tries >= PLACEMENT_TRIES) {
        this.c.log.warn({ event: 'jetstream.consumer_off_leader', stream, leader, on, tries, hint: 'reading a copy of the stream on another server than its leader: with nats-server before 2.10.14 that copy may lack or renumber messages' });
        return ci;
      }
      jsm.consumers.delete(stream, name).catch(() => undefined);
    }
  }

  /**
   * A follower that starts after `seq` remembers that message (its store time) as if it had handed it on:
   * one that hands nothing on before the stream loses its tail (a quiet hub) still finds where it was.
   * Says whether the stream holds it (`gone`: aged out, deleted, or a stream made again), or `unknown` (no answer).
   */
  private async rememberStart(stream: string, seq: number, handedOn: RecentlyHandedOn): Promise<'remembered' | 'gone' | 'unknown'> {
    try {
      const stored = await this.c.clients().jsm.streams.getMessage(stream, { seq });
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
  async read(stream: string, options: ReadOptions): Promise<StoredMessage[]> {
    const { jsm } = this.c.clients();
    const out: StoredMessage[] = [];
    const maxBytes = options.maxBytes ?? Infinity;
    let bytes = 0;
    const deadline = performance.now() + options.timeoutMs;
    // On the stream's leader, as a follower's consumer is: a replay then joins its follower in one numbering.
    const leader = (await jsm.streams.info(stream)).cluster?.leader;
    const consumerFrom = (seq: number) =>
      this.addOnLeader(jsm, stream, leader, 'read', {
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: seq,
        ack_policy: AckPolicy.None,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: nanos(10_000),
        ...(options.subject ? { filter_subject: options.subject } : {}),
      }, () => performance.now() >= deadline);
    // The next stream sequence the page needs: where a consumer begins again when deliveries were lost.
    let nextSeq = Math.max(1, options.fromSeq);
    let ci = await consumerFrom(nextSeq);
    try {
      let pending = ci.num_pending;
      // Deliveries of this consumer read so far. A pull that ended here before the server's answer did (its wait
      // over on a loaded edge while the server still sent) lost what came after, delivered all the same (no acks):
      // the next pull's first delivery jumps, or the consumer counts more delivered than read. The page then goes
      // on from `nextSeq` with a new consumer. Before, a jump refused the page (503 under load: eight readers of
      // 8 MiB pages each, CI), and deliveries lost at the end of a page went unseen: the page came back short.
      let delivered = 0;
      while (pending > 0 && out.length < options.limit && bytes < maxBytes) {
        const left = deadline - performance.now();
        if (left <= 0) throw new StoreError('the stream did not answer in time');
        const nc = this.c.bus.connection;
        if (!nc) throw new StoreError('NATS is not connected');
        // With a byte bound the server sends no more than the bytes left (the next message always fits: at least a
        // whole max_payload), so a page of large messages costs about its bound on the wire and in memory; counted
        // by message alone, a batch of 1,000 came whole and all but the page was dropped here.
        const pulledAt = performance.now();
        const pulled = await pullOnce(nc, stream, ci.name, {
          batch: Math.min(CONSUME_BATCH, options.limit - out.length, pending),
          maxBytes: maxBytes === Infinity ? undefined : Math.max(maxBytes - bytes, this.c.bus.maxPayload + SUBJECT_AND_HEADER_ROOM),
          expiresMs: Math.max(1000, Math.min(left, 5000)),
        });
        // Refused, it would be refused again: the read fails now (before, it was taken for "nothing came" and asked
        // again at once, thousands of times a second, until the deadline).
        if (pulled.refused !== undefined) throw new StoreError(`the stream refused a read (${pulled.refused})`);
        const msgs = pulled.messages;
        let lost = false;
        for (const m of msgs) {
          if (m.delivered !== delivered + 1) {
            lost = true;
            break;
          }
          delivered = m.delivered;
          pending = m.pending;
          if (options.toSeq !== undefined && m.seq > options.toSeq) {
            pending = 0;
            break;
          }
          out.push({ seq: m.seq, subject: m.subject, data: m.data });
          nextSeq = m.seq + 1;
          bytes += m.data.length;
          if (out.length >= options.limit || pending === 0 || bytes >= maxBytes) break;
        }
        // Nothing came in time, or this side gave the pull up (what came after is lost): the end only if the server
        // now counts nothing pending (messages aged out since) and nothing delivered that was not read, else ask
        // again until the deadline. A short answer here would read as "the stream holds no more". Asked at once
        // after a pull given up with some of its deliveries: before, the next pull waited out its expiry for those
        // the consumer had already sent, and a read with less than that left was refused (found by review).
        const pageDone = pending === 0 || out.length >= options.limit || bytes >= maxBytes;
        if (!lost && !pageDone && (msgs.length === 0 || pulled.gaveUp)) {
          // Ended at once with nothing (the next message past the bytes asked for: stored under a larger max_payload):
          // a pause before asking again, rather than a loop as fast as the server answers.
          if (msgs.length === 0 && performance.now() - pulledAt < EMPTY_PULL_PAUSE_MS) await new Promise((r) => setTimeout(r, EMPTY_PULL_PAUSE_MS));
          const info = await jsm.consumers.info(stream, ci.name);
          pending = info.num_pending;
          lost = info.delivered.consumer_seq > delivered;
        }
        if (lost) {
          this.c.log.debug({ event: 'jetstream.read_resumed', stream, from: nextSeq, read: out.length });
          jsm.consumers.delete(stream, ci.name).catch(() => undefined);
          ci = await consumerFrom(nextSeq);
          delivered = 0;
          pending = ci.num_pending;
        }
      }
    } finally {
      jsm.consumers.delete(stream, ci.name).catch(() => undefined);
    }
    return out;
  }

  close(): void {
    for (const follower of [...this.followers]) follower.stop();
    if (this.leaderWatch && !this.leaderWatch.isClosed()) this.leaderWatch.unsubscribe();
  }
}
