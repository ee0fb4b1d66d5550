// Durable publishes (docs/durability.md): a message resolves only once its
// stream stored it, tried again with the same message id until a deadline
// (a stream elects a new leader in seconds; longer after a try that went out
// unanswered), in order with the other publishes of its stream while one is
// in trouble (publish-order.ts); and which streams store nothing now, for
// readiness and the metrics, asked again each STORE_PROBE_MS until they
// answer. The wire side of a publish is stream-publisher.ts's; whether
// JetStream is ready, and making the streams again, are jetstream.ts's.
// Kept apart from jetstream.ts so that the retry policy reads on its own.
import type { JetStreamManager } from 'nats';
import type { Logger } from '../telemetry/logger.ts';
import { BusError, tooLargeForBus } from './bus.ts';
import { errorCode, StoreError, STREAM_NOT_FOUND, STREAM_SEALED, WRONG_LAST_SEQUENCE } from './jetstream-errors.ts';
import type { NatsBus } from './nats.ts';
import { PublishOrder } from './publish-order.ts';
import { streamIdOf, type StreamSpec } from './stream-setup.ts';
import { storedBytes, type StorePublisher } from './stream-publisher.ts';
import { subjectMatches } from './subject-match.ts';

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
 * What JetStream counts a stored message at beyond its subject, headers and data (a file store's record: length,
 * sequence, time, header length, checksum; 34 bytes, a memory store's 16), with room to spare.
 */
const STORE_RECORD_BYTES = 64;
/** While publishes fail unanswered, how often the streams are asked whether they answer again. */
const STORE_PROBE_MS = 1000;
/**
 * A replica the leader heard from longer ago than this is not counted towards its quorum. Raft heartbeats come
 * every second; nats-server itself counts a peer out only after 10 s (lostQuorumInterval), and a leader whose
 * peers were killed goes on naming itself leader, with them current, that long.
 */
const REPLICA_SILENT_NS = 3_000_000_000;
/**
 * The last token of the subject a lone server's stream is probed on (StorePublisher.probe): in the stream's subjects
 * (`<prefix>.ev.<hub>._probe`), and none an edge publishes or reads an event on (`.all`, `.ctl`, `.g.`, `.u.`, `.c.`).
 */
const PROBE_TOKEN = '_probe';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A publish given up: `unsure` when a try went out unanswered (it may still be stored, and is then delivered). */
function notStored(reason: string, unsure: boolean): StoreError {
  return new StoreError(unsure ? `not confirmed: ${reason} (it may still have been stored, and is then delivered)` : `not stored: ${reason}`);
}

/** A subject `pattern` (a stream's) takes: its wildcards made PROBE_TOKEN. */
export function probeSubject(pattern: string): string {
  return pattern
    .split('.')
    .map((token) => (token === '*' || token === '>' ? PROBE_TOKEN : token))
    .join('.');
}

/**
 * Whether a stream's cluster state says it stores: a leader named and, with replicas, a majority of the group heard
 * from within REPLICA_SILENT_NS (the leader counts itself). A member left alone answers (once its group has been
 * without a leader for a while) with no leader named; a leader that has lost its peers answers with itself named for
 * up to 10 s, while every write it takes waits for a quorum. A lone server has no cluster state to read: it answers a
 * stream's info from memory while every write to the stream fails (its files removed under it: "no such file or
 * directory", 503) or goes unanswered, so its stream is asked with a write instead (probeWrites; before, a lone
 * server's answer cleared a failing stream within a second, and readiness said it stored).
 */
export function storesNow(cluster: { leader?: string; replicas?: { current: boolean; offline?: boolean; active: number }[] }): boolean {
  if (!cluster.leader) return false;
  const replicas = cluster.replicas ?? [];
  const heard = replicas.filter((r) => r.current && !r.offline && r.active < REPLICA_SILENT_NS).length;
  return 2 * (1 + heard) > 1 + replicas.length;
}

/** What a durable publish needs of the JetStream access it publishes for (jetstream.ts). */
export interface DurablePublishContext {
  readonly bus: NatsBus;
  readonly log: Logger;
  readonly options: {
    publishTimeoutMs: number;
    /** Bound on one JetStream API call. */
    requestTimeoutMs: number;
    /** How long a publish goes on past an unanswered try (`bus.jetstream.unsureRetryMs`; default UNSURE_RETRY_MS). */
    unsureRetryMs?: number;
  };
  /** JetStream's state (JetStreamState) and, when not ready, why. */
  state(): 'waiting' | 'ready' | 'unavailable';
  problem(): string | undefined;
  /** The publisher of the connection JetStream was made sure on, once ready. */
  publisher(): StorePublisher | undefined;
  /** The JetStream manager, once ready: the failing streams are asked with it. */
  manager(): JetStreamManager | undefined;
  /** Every stream the relay needs now. */
  streams(): readonly StreamSpec[];
  /** True once the access is closed: publishes give up, no probe starts. */
  closed(): boolean;
  /** Looks for streams that are gone and makes them again (at most once a second). */
  restoreStreams(reason: string): void;
  /** A publish to `stream` was refused because it is sealed: JetStream is not ready until it is made again. */
  sealed(stream: string): void;
}

export class DurablePublisher {
  /**
   * Streams JetStream stores nothing in now, with why: a publish gave up unanswered (a stream without its leader:
   * its node died, or the cluster lost its quorum). Each is cleared by the next write stored to it, or, in a NATS
   * cluster, once it answers again with a leader and its quorum (asked each STORE_PROBE_MS meanwhile: storesNow);
   * a write stored to another stream clears nothing (before, one flag for all: a hub storing again hid one that did not).
   * On a lone server (no leader nor quorum to read), once it answers a write again that it refuses by design, storing
   * nothing (probeWrites). `wroteNothing`: JetStream answered that it failed to write the stream (STREAM_STORE_FAILED):
   * a leader, its quorum or an answered write say nothing of that, so only a stored write clears it, or the stream
   * made again (`madeAs`: the making it failed on, streamIdOf, noted at the first probe; '' when the probe found it gone).
   */
  private readonly failingStreams = new Map<string, { reason: string; wroteNothing: boolean; madeAs?: string }>();
  private storeProbe: NodeJS.Timeout | undefined;
  private probingStore = false;
  /** The order publishes to each stream try in while one of them is in trouble. */
  private readonly order = new PublishOrder();
  /** When the bus's backlog last cleared (performance.now()): a publish begun before waited behind what it held. */
  private backlogClearedAt = -Infinity;

  constructor(private readonly c: DurablePublishContext) {
    c.bus.onBacklogChange((backlogged) => {
      if (!backlogged) this.backlogClearedAt = performance.now();
    });
  }

  /** After a reconnect: what was sent on the connection gone is not ordered with what is sent on this one (publish-order.ts). */
  reconnected(): void {
    this.order.reconnected();
  }

  close(): void {
    clearInterval(this.storeProbe);
  }

  /**
   * Stores one message; resolves with its stream sequence once JetStream
   * acknowledged it. Retries with the same message id (the stream drops a
   * repeat within its duplicate window) until publishTimeoutMs, or
   * UNSURE_RETRY_MS after a try that went out unanswered; throws
   * StoreError with the reason when it could not be stored, BusError('TooLarge') at once for a message over the
   * server's max_payload or its stream's maxBytes. `duplicate`: an earlier publish of `msgId` had stored it (never this call's own tries).
   */
  async publish(subject: string, data: Uint8Array, msgId: string): Promise<{ seq: number; duplicate: boolean }> {
    // Never stored, however often tried: refused at once (also while JetStream is not ready), not as a store that
    // failed (503 "try again"). The publisher says so too, for a server met later with a smaller max_payload.
    const bytes = storedBytes(data, msgId);
    if (bytes > this.c.bus.maxPayload) throw tooLargeForBus(bytes, this.c.bus.maxPayload);
    const spec = this.specOf(subject);
    // A message larger than its stream's maxBytes (a hub's history.maxBytes) is dropped by JetStream as it is stored
    // (the oldest go first, and it is the oldest left): acknowledged, read by no edge, and every edge then finds a gap
    // and ends the hub's connections (StreamGap). Refused at once, as one over max_payload (found by review: a REST
    // send was 202 and reached nobody).
    const held = bytes + Buffer.byteLength(subject) + STORE_RECORD_BYTES;
    if (spec && spec.maxBytes > 0 && held > spec.maxBytes) {
      throw new BusError('TooLarge', `the message takes ${held} bytes in stream ${spec.name}, more than it keeps in all (its hub's history.maxBytes, ${spec.maxBytes}): JetStream would drop it as soon as stored`);
    }
    let deadline = performance.now() + this.c.options.publishTimeoutMs;
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
    /** Its last try was answered that the server failed to write the stream (a storeFailed outcome). */
    let wroteNothing = false;
    const begunAt = performance.now();
    const stream = spec?.name ?? subject;
    // While a publish of this stream is in trouble, its publishes try one at a time in the order they began (publish-order.ts).
    const turn = this.order.begin(stream);
    try {
      for (;;) {
        let left = this.c.closed() ? 0 : deadline - performance.now();
        if (left > 0 && !this.order.mayTry(turn)) {
          // Woken, it may find the stream in trouble again (another call told to retry in the same turn): it waits on.
          do {
            await this.order.waitForTurn(turn, left);
            left = this.c.closed() ? 0 : deadline - performance.now();
          } while (left > 0 && !this.order.mayTry(turn));
          if (left <= 0 && !turn.troubled) {
            last = 'earlier events of its stream were not stored yet, and it is not stored before them';
            // Those are held at the store (a lost leader: said at once, not when the first gives up at unsureRetryMs),
            // unless the bus holds them or held them since this call began: then they may only just have gone out
            // again (before, a backlog that cleared just before this deadline had the stream said to store nothing).
            failedAtStore = !this.c.bus.backlogged && this.backlogClearedAt < begunAt;
          }
        }
        if (left <= 0) {
          if (failedAtStore && this.c.state() === 'ready' && this.c.bus.connected) this.storeFailed(stream, last, wroteNothing);
          throw notStored(last, unsure);
        }
        if (this.c.state() !== 'ready' || !this.c.bus.connected) {
          // Publishing while disconnected would be dropped by the client at the reconnect.
          last = this.c.state() === 'unavailable' ? this.c.problem()! : this.c.bus.connected ? (this.c.problem() ?? 'JetStream is not ready') : 'the NATS bus is unreachable';
          if (this.c.state() === 'unavailable') throw notStored(last, unsure);
          failedAtStore = false;
          await sleep(Math.min(RETRY_MS, left));
          continue;
        }
        if (this.c.bus.backlogged) {
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
        const outcome = await this.c.publisher()!.publish(subject, data, msgId, Math.max(100, Math.min(left, this.c.options.requestTimeoutMs)));
        if (outcome.kind === 'stored') {
          this.storeWorks(stream);
          // After a try of this call that went out unanswered, a duplicate is most likely that try, stored late: the
          // message is new to its sender (acked Duplicate, a client's first send read as an error). A message an
          // earlier call stored is then reported stored too, which is what it is.
          return { seq: outcome.seq, duplicate: outcome.duplicate && !unsure };
        }
        if (outcome.kind === 'tooLarge') throw tooLargeForBus(outcome.bytes, this.c.bus.maxPayload);
        // Sealed by hand: no try will ever be stored, and the edge is not ready until the stream is made again.
        if (outcome.kind === 'refused' && outcome.code === STREAM_SEALED && spec) this.c.sealed(spec.name);
        // Refused now, after a try of this call that went out unanswered: that one may still have been stored (said so).
        if (outcome.kind === 'refused') throw notStored(`${outcome.code ? `JetStream error ${outcome.code}: ` : ''}${outcome.reason}`, unsure);
        last = outcome.reason;
        failedAtStore = true;
        wroteNothing = outcome.kind === 'storeFailed';
        // The stream's files gone under it: no try is stored until an operator purges or deletes it. Refused now, and
        // said now (readiness, jetstream.store_failing), not after publishTimeoutMs of tries each refused the same way
        // (before: read as "no leader (electing)" and tried again until the deadline).
        if (outcome.kind === 'storeFailed' && outcome.lasting) {
          this.storeFailed(stream, last, true);
          throw notStored(last, unsure);
        }
        this.order.troubled(turn);
        if (outcome.kind === 'retry' && outcome.unsure && !unsure) {
          unsure = true;
          // Tried again with the same id until it is known to be stored (or UNSURE_RETRY_MS): see UNSURE_RETRY_MS.
          deadline = Math.max(deadline, performance.now() + (this.c.options.unsureRetryMs ?? UNSURE_RETRY_MS));
        }
        if (outcome.kind === 'retry' && outcome.noStream) this.c.restoreStreams('no stream answered a publish');
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
    return [...this.failingStreams].map(([stream, { reason }]) => `${stream}: ${reason}`);
  }

  /** Each stream the relay needs, and whether JetStream stores in it now (ready, and no publish to it gave up unanswered since one was stored). */
  storingByStream(): Map<string, boolean> {
    // Without the bus nothing is stored either: every durable publish is refused (before, 1 throughout a NATS outage).
    const storing = this.c.state() === 'ready' && this.c.bus.connected;
    return new Map(this.c.streams().map((s) => [s.name, storing && !this.failingStreams.has(s.name)]));
  }

  /** The stream a subject is stored in, if one takes it. */
  private specOf(subject: string): StreamSpec | undefined {
    return this.c.streams().find((s) => s.subjects.some((p) => subjectMatches(p, subject)));
  }

  private storeFailed(stream: string, reason: string, wroteNothing: boolean): void {
    if (!this.failingStreams.has(stream)) this.c.log.error({ event: 'jetstream.store_failing', stream, reason });
    this.failingStreams.set(stream, { reason, wroteNothing });
    if (this.storeProbe || this.c.closed()) return;
    this.storeProbe = setInterval(() => void this.probeStore(), STORE_PROBE_MS);
    this.storeProbe.unref();
  }

  private storeWorks(stream: string): void {
    if (!this.failingStreams.delete(stream)) return;
    this.c.log.info({ event: 'jetstream.store_recovered', stream });
    if (this.failingStreams.size > 0) return;
    clearInterval(this.storeProbe);
    this.storeProbe = undefined;
  }

  /**
   * Asks each failing stream whether publishes to it can be stored again: in a cluster, whether it has its leader and
   * quorum again (storesNow); on a lone server, whether it answers a write again (probeWrites). Before, a lone server's
   * mark was never cleared but by a write stored: on a hub nobody published to after a passing trouble (its stream
   * deleted and made again, a while unanswered), readiness said "stores nothing" for as long as it stayed quiet.
   */
  private async probeStore(): Promise<void> {
    if (this.probingStore || this.c.state() !== 'ready' || !this.c.manager() || !this.c.bus.connected) return;
    this.probingStore = true;
    try {
      for (const [stream, mark] of [...this.failingStreams]) {
        const spec = this.c.streams().find((s) => s.name === stream);
        // A subject no stream takes (a stream removed on reload meanwhile): nothing to wait for.
        if (!spec) {
          this.storeWorks(stream);
          continue;
        }
        try {
          const info = await this.c.manager()!.streams.info(stream);
          if (mark.wroteNothing) {
            // Its server failed to write this making of it: cleared by a write stored, whatever its leader, quorum
            // or answers. A making found since (an operator deleted it, an edge made it again) is a new store.
            const madeAs = streamIdOf(info.config.description, info.created);
            mark.madeAs ??= madeAs;
            if (mark.madeAs === madeAs) continue;
          }
          if (info.cluster ? storesNow(info.cluster) : await this.probeWrites(spec)) this.storeWorks(stream);
        } catch (err) {
          // Gone: the making whose store failed is no more, and the one made next is another.
          if (mark.wroteNothing && errorCode(err).apiCode === STREAM_NOT_FOUND) mark.madeAs ??= '';
          // Else still without an answer: asked again at the next probe.
        }
      }
    } finally {
      this.probingStore = false;
    }
  }

  /**
   * Whether a lone server's stream answers a write now: its info says nothing of it (answered from memory while every
   * write to the stream fails or goes unanswered), so it is given one it refuses without storing (StorePublisher.probe,
   * on a subject no edge reads); refused as that, the stream takes and answers writes. A stream whose writes go
   * unanswered (no_ack set by hand; a server too busy) answers this one no more than those.
   */
  private async probeWrites(spec: StreamSpec): Promise<boolean> {
    const publisher = this.c.publisher();
    if (!publisher || spec.subjects.length === 0) return false;
    const outcome = await publisher.probe(probeSubject(spec.subjects[0]), this.c.options.requestTimeoutMs);
    return outcome.kind === 'refused' && outcome.code === WRONG_LAST_SEQUENCE;
  }
}
