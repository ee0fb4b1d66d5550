// Asks every other edge over the bus and collects their answers of one op:
// what /$relay/status and /$relay/stats both do. An answer that fails its
// schema is logged and left out; this edge's own answer (the bus may echo it)
// is dropped, and so is a second answer of one edge (one edge listed twice
// doubled every total of /$relay/status in a chaos soak); the rest come
// sorted by node id. When the bus cannot be asked, `problem` says so and the
// list is empty.
import { BusError, respond, type Bus, type BusMessage } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type EdgeMessage, type EdgeMessageOf, type EdgeOp } from '../bus/messages.ts';
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';

/** Room left in NATS's max_payload for what the bus adds to an answer. */
const ANSWER_HEADROOM_BYTES = 4096;

/**
 * The most bytes an edge's answer may take on `bus` (0 when max_payload is no more than the headroom: an answer is
 * then cut to its least). Before, cluster-status.ts took max_payload less the headroom as it came, and below 4 KiB
 * its fitting loop never ended (the edge hung on the first /$relay/status; found by review).
 */
export function answerLimit(bus: Bus): number {
  return Math.max(0, bus.maxPayload - ANSWER_HEADROOM_BYTES);
}

/** Sends `answer()` as the reply to `message`; a failure (the bus down, still too large) is logged, not thrown. */
export function answerEdge(deps: { bus: Bus; log: Logger }, message: BusMessage, answer: () => Uint8Array, op: string): void {
  try {
    respond(deps.bus, message, answer());
  } catch (err) {
    deps.log.warn({ event: 'ops.answer_failed', op, err: (err as Error).message });
  }
}

export interface OtherEdgesAnswer<T> {
  answers: T[];
  problem?: string;
}

/** The ops an edge answers with, each carrying the answering edge's node id. */
type EdgeAnswerOp = { [Op in EdgeOp]: EdgeMessageOf<Op> extends { nodeId: string } ? Op : never }[EdgeOp];

/**
 * `T` is what `answerOp` carries besides its op (NodeStatus for ops.node, EdgeStats for ops.edge). The question waits
 * for every edge `seen` expects (those that answered lately), up to bus.requestTimeoutMs, then bus.gatherStallMs after
 * the last answer. The asking edge answers itself at once (its answer is dropped here), so with no other edge the
 * wait is the stall alone: before, a lone edge on NATS (no one else to answer, and its own subscription keeping NATS
 * from saying "no responders") waited the whole requestTimeoutMs on every /$relay/status, /stats and runtime
 * information request. What the question came to is told to `seen`; so is each answer that comes after it ended,
 * within requestTimeoutMs of it (read late, not listed): the next question waits for that edge. Before, such an answer
 * was dropped unread, and an edge always later than the stall (busy, or with many hubs and entities to count) was
 * never waited for: missing from every other edge's /$relay/stats, status and dashboard for good.
 */
export async function askOtherEdges<T extends { nodeId: string; shuttingDown?: boolean }>(
  deps: { bus: Bus; config: RelayConfig; log: Logger },
  subject: string,
  question: EdgeMessage,
  answerOp: EdgeAnswerOp,
  selfId: string,
  seen?: EdgesSeen<T, unknown>,
): Promise<OtherEdgesAnswer<T>> {
  const { bus, config, log } = deps;
  const expected = seen?.expected() ?? new Set<string>();
  const decode = (data: Uint8Array): T | undefined => {
    const answer = decodeEdgeMessage(data, answerOp)?.message as ({ op: string } & T) | undefined;
    if (!answer) {
      log.warn({ event: 'bus.invalid_message', op: answerOp });
      return undefined;
    }
    const { op: _op, ...rest } = answer;
    return rest as unknown as T;
  };
  const decoded: (T | undefined)[] = [];
  const heard = new Set<string>();
  /** Decodes the answers not decoded yet. */
  const take = (raw: readonly Uint8Array[]) => {
    for (let i = decoded.length; i < raw.length; i++) {
      const answer = decode(raw[i]);
      decoded.push(answer);
      if (answer) heard.add(answer.nodeId);
    }
  };
  const awaiting = (raw: readonly Uint8Array[]) => {
    take(raw);
    for (const nodeId of expected) if (nodeId !== selfId && !heard.has(nodeId)) return true;
    return false;
  };
  const askedAt = Date.now();
  const late = seen?.listenLate(config.bus.requestTimeoutMs)
    ? (data: Uint8Array) => {
        const answer = decode(data);
        if (answer && answer.nodeId !== selfId) seen.answeredLate(answer, askedAt);
      }
    : undefined;
  let raw: Uint8Array[];
  try {
    raw = await bus.gather(subject, encodeEdgeMessage(question), {
      maxWaitMs: config.bus.requestTimeoutMs,
      stallMs: config.bus.gatherStallMs,
      awaiting,
      ...(late ? { late } : {}),
    });
  } catch (err) {
    return { answers: [], problem: err instanceof BusError ? `the ${bus.kind} bus is unreachable: other nodes are not listed` : String(err) };
  }
  take(raw);
  const answers: T[] = [];
  const answered = new Set<string>([selfId]);
  for (const answer of decoded) {
    if (!answer || answered.has(answer.nodeId)) continue;
    answered.add(answer.nodeId);
    answers.push(answer);
  }
  answers.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  seen?.asked(answers, expected, Date.now(), askedAt);
  return { answers };
}

/** How long an edge that stopped answering is still waited for, and named missing. */
export const FORGET_SILENT_MS = 10 * 60_000;
const MAX_REMEMBERED = 1000;
/** Questions of one asker at most that listen for late answers at once (each up to bus.requestTimeoutMs); past it, a question listens no longer than it waits. */
export const MAX_LISTENING_LATE = 8;

/**
 * The edges that answered lately (within FORGET_SILENT_MS), when, and what the asker keeps of each (`Info`: a
 * stats answer's publicUrl); bounded. A question waits for those that answered the last time they were asked:
 * one that did not (gone, frozen) or said it was shutting down is not waited for again until it answers (before,
 * every question for 10 minutes after an edge left waited bus.requestTimeoutMs for it), and is named missing
 * meanwhile. An answer that came after its question ended counts as one in time (answeredLate).
 */
export class EdgesSeen<A extends { nodeId: string; shuttingDown?: boolean } = { nodeId: string; shuttingDown?: boolean }, Info = undefined> {
  /** Per edge: when it last answered, what is kept of it, and when the question it answered then was asked. */
  private readonly seen = new Map<string, { at: number; info: Info; askedAt: number }>();
  private readonly notWaitedFor = new Set<string>();
  /** When each question still listening for late answers stops (at most MAX_LISTENING_LATE). */
  private readonly listeningUntil: number[] = [];

  constructor(private readonly infoOf: (answer: A) => Info = () => undefined as Info) {}

  /** Those to wait for now (older ones are forgotten). */
  expected(now = Date.now()): Set<string> {
    this.forget(now);
    return new Set([...this.seen.keys()].filter((nodeId) => !this.notWaitedFor.has(nodeId)));
  }

  /** What one question (asked at `askedAt`) came to: who answered (and whether each said it is shutting down), and whom it waited for. */
  asked(answers: A[], expected: ReadonlySet<string>, now = Date.now(), askedAt = now): void {
    const answered = new Set(answers.map((a) => a.nodeId));
    for (const nodeId of expected) if (!answered.has(nodeId)) this.notWaitedFor.add(nodeId);
    for (const answer of answers) {
      this.seen.delete(answer.nodeId);
      this.seen.set(answer.nodeId, { at: now, info: this.infoOf(answer), askedAt });
      if (answer.shuttingDown) this.notWaitedFor.add(answer.nodeId);
      else this.notWaitedFor.delete(answer.nodeId);
    }
    while (this.seen.size > MAX_REMEMBERED) this.drop(this.seen.keys().next().value!);
  }

  /**
   * An answer that came after its question (asked at `askedAt`) ended, within bus.requestTimeoutMs: remembered as if
   * in time, unless the edge answered a later question already (found by review: an older late answer saying it was
   * running undid a newer one saying it was shutting down, and the next question waited requestTimeoutMs for it).
   */
  answeredLate(answer: A, askedAt: number, now = Date.now()): void {
    const known = this.seen.get(answer.nodeId);
    if (known && known.askedAt > askedAt) return;
    this.asked([answer], new Set(), now, askedAt);
  }

  /** Whether a question may listen for late answers for `ms` more: true, and counted, while fewer than MAX_LISTENING_LATE do. */
  listenLate(ms: number, now = Date.now()): boolean {
    for (let i = this.listeningUntil.length - 1; i >= 0; i--) if (this.listeningUntil[i] <= now) this.listeningUntil.splice(i, 1);
    if (this.listeningUntil.length >= MAX_LISTENING_LATE) return false;
    this.listeningUntil.push(now + ms);
    return true;
  }

  /** Edges that answered within FORGET_SILENT_MS and are not among `answered`, by node id, with when they last did. */
  missing(answered: ReadonlySet<string>, now = Date.now()): { nodeId: string; lastSeen: number; info: Info }[] {
    this.forget(now);
    return [...this.seen]
      .filter(([nodeId]) => !answered.has(nodeId))
      .map(([nodeId, { at, info }]) => ({ nodeId, lastSeen: at, info }))
      .sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  }

  private forget(now: number): void {
    for (const [nodeId, { at }] of this.seen) if (now - at > FORGET_SILENT_MS) this.drop(nodeId);
  }

  private drop(nodeId: string): void {
    this.seen.delete(nodeId);
    this.notWaitedFor.delete(nodeId);
  }
}
