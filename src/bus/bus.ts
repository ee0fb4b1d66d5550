// The internal bus between edge nodes (docs/scaling-out.md, docs/architecture.md): subjects
// with NATS semantics (tokens split by `.`, `*` one token, `>` the rest), queue
// groups, request/reply and scatter/gather. Two implementations: memory.ts (one
// process) and nats.ts (a NATS cluster). The contract tests in test/bus run the
// same suite against both. Payloads are opaque bytes; see envelope.ts.

export interface BusMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Where an answer goes, when the sender asked for one. */
  readonly reply?: string;
}

export type BusHandler = (message: BusMessage) => void;

export interface BusSubscription {
  unsubscribe(): void;
  /**
   * Stops it at the server, still handing the handler what was already on its way. A queue group member that
   * leaves must answer those: NATS gave each to it alone, and with unsubscribe() it was dropped (its requester
   * waited out its timeout though other members were there).
   */
  drain(): void;
}

export type BusErrorCode = 'NoResponders' | 'Timeout' | 'Unavailable' | 'TooLarge';

export class BusError extends Error {
  constructor(readonly code: BusErrorCode, message: string = code) {
    super(message);
  }
}

/**
 * A message the bus cannot carry (NATS's max_payload, envelope included): it says how large each is. `limit`, when
 * below max_payload, is what a pub/sub event may take on core NATS (room is kept for a replay answer's header).
 */
export function tooLargeForBus(bytes: number, maxPayload: number, limit = maxPayload): BusError {
  if (limit < maxPayload) {
    return new BusError(
      'TooLarge',
      `the message takes ${bytes} bytes on the bus, more than the ${limit} an event may take there (its NATS server's max_payload, ${maxPayload}, less the header of a replay's answer)`,
    );
  }
  return new BusError('TooLarge', `the message takes ${bytes} bytes on the bus, more than its NATS server's max_payload (${maxPayload})`);
}

export interface GatherOptions {
  /** Stop waiting this long after the request, whatever came. */
  maxWaitMs: number;
  /** Stop this long after the last answer (NATS cannot say how many will come). */
  stallMs: number;
  /**
   * Shown every answer as it comes (the last one too). True while an answer
   * the caller knows is coming has not come yet: the
   * gather then does not stall out (maxWaitMs still bounds it). Once false,
   * stallMs more are given to answers nobody expected.
   */
  awaiting?: (answers: readonly Uint8Array[]) => boolean;
  /**
   * Shown each answer that comes after the gather ended and within maxWaitMs of the request: the subscription is kept
   * until then (not longer), so a caller learns of an answerer too slow for this gather (and waits for it the next
   * time: ops/other-edges.ts) without this gather waiting longer. Without it, what comes after the end is dropped.
   */
  late?: (answer: Uint8Array) => void;
}

export interface Bus {
  readonly kind: 'memory' | 'nats';
  /** False while the bus cannot reach other nodes. */
  readonly connected: boolean;
  /**
   * True while connected but its server takes nothing this node sends (frozen, cut off, not yet judged stale) and
   * more waits unsent than a bound: publishes are dropped and requests refused meanwhile, as while disconnected.
   */
  readonly backlogged: boolean;
  /**
   * While connected to a server that checks it is alive (NATS pings): when (Date.now()) the latest ping its server
   * answered was sent, so the server took everything sent before then; undefined on the memory bus. What was sent
   * after it may be lost with a server that stopped answering (frozen, cut off) before the bus judged it stale.
   */
  readonly lastAnsweredAt?: number;
  /** Pings its server has not answered for a whole ping interval or more (0 on the memory bus): it may be stalled. */
  readonly unansweredPings?: number;
  /**
   * False when no other edge can be on this bus (the memory bus lives in one
   * process): cluster-wide fan-out and queries then have nobody to reach.
   */
  readonly reachesOtherNodes: boolean;
  /** Largest payload one message may carry. */
  readonly maxPayload: number;
  subscribe(subject: string, handler: BusHandler, options?: { queue?: string }): BusSubscription;
  /** Sends and forgets; throws BusError('TooLarge') for an oversized payload. */
  publish(subject: string, data: Uint8Array, reply?: string): void;
  /** One answer from one subscriber (a queue group picks one). */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Every answer that comes within the bounds; [] when nobody listens. */
  gather(subject: string, data: Uint8Array, options: GatherOptions): Promise<Uint8Array[]>;
  /** Resolves once everything sent so far (subscriptions included) reached the bus. */
  flush(): Promise<void>;
  /** Round trip to the bus server in seconds; undefined in-process or while disconnected. */
  roundTrip(): Promise<number | undefined>;
  /** Called with `connected` each time it changes. */
  onConnectionChange(listener: (connected: boolean) => void): void;
  /**
   * Called with `backlogged` each time it changes while connected (a connection lost or regained while backlogged
   * ends it without a call: onConnectionChange says that). What was published meanwhile was dropped.
   */
  onBacklogChange(listener: (backlogged: boolean) => void): void;
  close(): Promise<void>;
}

/** Answers a request; does nothing for a message that asked for no answer. */
export function respond(bus: Bus, message: BusMessage, data: Uint8Array): void {
  if (message.reply) bus.publish(message.reply, data);
}
