// Publishes to JetStream streams and waits for each publish acknowledgement
// (PubAck) on one wildcard reply subscription. nats.js's js.publish is a
// request per message: a request object, a timer and three captured stacks
// (async traces, and a "cancelled" error made even when the reply arrived),
// which on a busy publishing edge cost more than the publish itself. Here a
// message is a publish with a reply token, a map entry and, for the waits
// still open, one sweep timer. The retry policy (what is retried, until when)
// stays with the caller (durable-publish.ts).
import { createInbox, headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import { TransientMap } from '../collections/transient-map.ts';
import { STREAM_STORE_FAILED } from './jetstream-errors.ts';

/** What JetStream said of one publish. */
export type PublishOutcome =
  | { kind: 'stored'; seq: number; duplicate: boolean }
  /**
   * Worth another try with the same message id: no responders, no leader, or no answer in time; `noStream` when
   * nothing answered at all; `unsure` when it went out and nothing said whether it was stored (it may have been).
   */
  | { kind: 'retry'; reason: string; noStream?: boolean; unsure?: boolean }
  /**
   * The server failed to write the stream (STREAM_STORE_FAILED): `reason` says so, with the store's own error;
   * `lasting` when that error says the stream's files are gone, which no wait cures (storeFailure).
   */
  | { kind: 'storeFailed'; reason: string; lasting: boolean }
  /** Refused for good (a stream limit, a wrong subject...): `code` is JetStream's err_code when it gave one. */
  | { kind: 'refused'; reason: string; code?: number }
  /** More than the server's max_payload with its headers: never stored, however often tried. */
  | { kind: 'tooLarge'; bytes: number };

interface Waiting {
  resolve(outcome: PublishOutcome): void;
  deadline: number;
}

/** The header JetStream de-duplicates by, and a follower knows a message by (stream-resume.ts). */
export const MSG_ID_HEADER = 'Nats-Msg-Id';
/** A write with this header is stored only when its stream's last sequence is the one it names (StorePublisher.probe). */
const EXPECTED_LAST_SEQ_HEADER = 'Nats-Expected-Last-Sequence';
/** The encoded headers of a publish, but for its message id. */
const HEADER_BYTES = 'NATS/1.0\r\n'.length + `${MSG_ID_HEADER}: \r\n`.length + '\r\n'.length;

/** What a store publish counts against the server's max_payload, as nats.js does: the data and its encoded headers. */
export function storedBytes(data: Uint8Array, msgId: string): number {
  return data.length + HEADER_BYTES + Buffer.byteLength(msgId);
}
/** How often open waits are checked against their deadlines. */
const SWEEP_MS = 20;
/** The status a server answers with when no stream listens on the subject (no responders). */
const NO_RESPONDERS = 503;
const NOT_A_PUBACK = 'JetStream answered with something that is not a publish acknowledgement';

interface PubAckJson {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; err_code?: number; description?: string };
}

export class StorePublisher {
  /** `_INBOX.<unique>.`: a reply token follows. */
  private readonly prefix: string;
  private readonly subscription: Subscription;
  /** One entry per publish awaiting its answer: a TransientMap, not a Map (collections/transient-map.ts says why). */
  private readonly waiting = new TransientMap<Waiting>();
  private nextToken = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly nc: NatsConnection) {
    this.prefix = `${createInbox()}.`;
    this.subscription = nc.subscribe(`${this.prefix}*`, { callback: (err, msg) => err || this.answered(msg) });
  }

  /** Resolves with what JetStream said, or with a retry once `timeoutMs` passed without an answer. Never rejects. */
  publish(subject: string, data: Uint8Array, msgId: string, timeoutMs: number): Promise<PublishOutcome> {
    const h = headers();
    h.set(MSG_ID_HEADER, msgId);
    const bytes = storedBytes(data, msgId);
    const maxPayload = this.nc.info?.max_payload;
    if (maxPayload !== undefined && bytes > maxPayload) return Promise.resolve({ kind: 'tooLarge', bytes });
    return this.send(subject, data, h, timeoutMs);
  }

  /**
   * A write its stream answers and never stores: an empty message expecting a last sequence no stream reaches, which
   * JetStream refuses (WRONG_LAST_SEQUENCE) under the same lock and on the same path as a write it would store,
   * before its store is touched. Answered so, the stream takes and answers writes now; no follower reads it (nothing
   * is stored), and `subject` should be one no edge subscribes to (durable-publish.ts's PROBE_TOKEN). Never rejects.
   */
  probe(subject: string, timeoutMs: number): Promise<PublishOutcome> {
    const h = headers();
    h.set(EXPECTED_LAST_SEQ_HEADER, String(Number.MAX_SAFE_INTEGER));
    return this.send(subject, new Uint8Array(0), h, timeoutMs);
  }

  private send(subject: string, data: Uint8Array, h: MsgHdrs, timeoutMs: number): Promise<PublishOutcome> {
    const token = (++this.nextToken).toString(36);
    return new Promise((resolve) => {
      this.waiting.set(token, { resolve, deadline: performance.now() + timeoutMs });
      this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS).unref();
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token, headers: h });
      } catch (err) {
        // The connection is closed or closing: the caller decides whether to wait for another.
        this.settle(token, { kind: 'retry', reason: `the NATS connection refused the publish: ${(err as Error).message}` });
      }
    });
  }

  private answered(msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length);
    if (!this.waiting.has(token)) return; // answered after its deadline: the caller has moved on
    if (msg.headers?.code === NO_RESPONDERS || msg.data.length === 0) {
      return this.settle(token, { kind: 'retry', reason: 'no stream answered (no leader for the stream, or no stream for the subject)', noStream: true });
    }
    let ack: PubAckJson;
    try {
      ack = JSON.parse(msg.string()) as PubAckJson;
    } catch {
      return this.settle(token, { kind: 'refused', reason: NOT_A_PUBACK });
    }
    if (ack.error) {
      const reason = ack.error.description ?? `error ${ack.error.code}`;
      const failed = storeFailure(ack.error.err_code, reason);
      if (failed) return this.settle(token, failed);
      // 503: JetStream is there but cannot store now (no leader, electing).
      if (ack.error.code === NO_RESPONDERS) return this.settle(token, { kind: 'retry', reason: `JetStream has no leader for the stream (electing): ${reason}` });
      return this.settle(token, { kind: 'refused', reason, code: ack.error.err_code });
    }
    if (typeof ack.seq !== 'number' || !ack.stream) {
      return this.settle(token, { kind: 'refused', reason: NOT_A_PUBACK });
    }
    this.settle(token, { kind: 'stored', seq: ack.seq, duplicate: ack.duplicate === true });
  }

  private settle(token: string, outcome: PublishOutcome): void {
    const waiting = this.waiting.get(token);
    if (!waiting) return;
    this.waiting.delete(token);
    if (this.waiting.size === 0) this.stopSweeping();
    waiting.resolve(outcome);
  }

  /** Every SWEEP_MS while publishes wait: only those past their deadline are gathered and ordered (usually none). */
  private sweep(): void {
    const now = performance.now();
    const due: string[] = [];
    this.waiting.forEach((waiting, token) => {
      if (waiting.deadline <= now) due.push(token);
    });
    for (const token of inPublishOrder(due)) this.settle(token, { kind: 'retry', reason: 'JetStream did not answer in time', unsure: true });
  }

  private stopSweeping(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Ends every open wait with a retry (the connection is gone) and stops listening. */
  close(): void {
    this.retryAll('the NATS connection closed');
    this.stopSweeping();
    this.subscription.unsubscribe();
  }

  /**
   * The connection was made again: what went out on the one gone is answered late or never, so each open wait ends
   * now with a retry, oldest first (the same message id: JetStream stores it once). Before, later publishes of the
   * stream waited behind them for requestTimeoutMs (durable-publish.ts keeps a stream's order through a reconnect).
   */
  reconnected(): void {
    this.retryAll('the NATS connection was made again');
  }

  private retryAll(reason: string): void {
    for (const token of inPublishOrder(this.waiting.entries().map(([token]) => token))) this.settle(token, { kind: 'retry', reason, unsure: true });
  }
}

/**
 * A PubAck error that says the server failed to write the stream: JetStream's STREAM_STORE_FAILED, or the store's
 * "msg block file" errors without that code. Before, as any 503, "JetStream has no leader for the stream (electing)".
 * `lasting` when the store says a file of the stream is not there ("no such file or directory"): its directory was
 * removed under it (the end of a delete, on nats-server 2.9, removes the files of a stream of its name made meanwhile),
 * and nats-server makes none again while the stream lives: every write that needs a file fails until an operator
 * purges or deletes the stream (seen: still after 3 s, and after an update). Other store failures may pass (a store
 * closed as its stream stops, a full disk that makes a clustered server give up JetStream and its leaderships) and are
 * tried again.
 */
function storeFailure(errCode: number | undefined, reason: string): PublishOutcome | undefined {
  if (errCode !== STREAM_STORE_FAILED && !/msg block file/i.test(reason)) return undefined;
  return { kind: 'storeFailed', reason: `the NATS server failed to write the stream: ${reason}`, lasting: /no such file or directory/i.test(reason) };
}

/**
 * Waiting publishes' tokens (base-36 counters), oldest publish first, sorted in place: their callers publish again
 * in the order they hear (durable-publish.ts), so one connection's burst cut by a failover goes on in the order it was sent.
 */
function inPublishOrder(tokens: string[]): string[] {
  return tokens.sort((a, b) => parseInt(a, 36) - parseInt(b, 36));
}
