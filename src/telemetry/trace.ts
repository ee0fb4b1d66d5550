// The live trace's source on one edge (docs/dashboard.md, "Live trace"): the
// domains report what happens as it happens (a listener connects, a request
// is relayed, a client publishes) with one line guarded by `trace.on`, a plain
// field read, so that tracing costs a flag check while nobody watches. Someone
// watches when ops/trace-relay.ts attaches a sink: for a viewer on this edge,
// or for viewers on other edges that announced their interest on the bus.
// While on, events are capped at TRACE_EVENTS_PER_SECOND per edge (a token
// bucket); past it they are dropped and counted, never queued. Refusals of
// requests not yet authorized (a bad token, an unknown name, a limit met
// before the token is read) have a bucket of their own, a quarter of that:
// anyone can send those, and a flood of them took the whole budget, so the
// trace showed the flood and dropped the events of authorized traffic. An event names
// things (entity, hub, group, user, connection id, path without its query)
// and measures them (status, duration, size); it never carries a token, a key
// or a payload. Strings are cut to TRACE_TEXT_MAX characters.
import type { Counter } from 'prom-client';

/** Most events one edge emits per second while traced; the rest are dropped (counted). */
export const TRACE_EVENTS_PER_SECOND = 1000;
/** The cap of refusals of not yet authorized requests beside a cap of `perSecond` events: a quarter of it. */
function refusalsPerSecond(perSecond: number): number {
  return Math.max(1, perSecond / 4);
}

/** Most refusals of not yet authorized requests one edge traces per second, apart from TRACE_EVENTS_PER_SECOND. */
export const TRACE_REFUSALS_PER_SECOND = refusalsPerSecond(TRACE_EVENTS_PER_SECOND);
/** Longest text field of an event, in characters. */
export const TRACE_TEXT_MAX = 256;

/** A text field as events carry it: cut to TRACE_TEXT_MAX characters, the last one an ellipsis. */
export function traceText(value: string): string {
  return value.length > TRACE_TEXT_MAX ? value.slice(0, TRACE_TEXT_MAX - 1) + '…' : value;
}

export type TraceKind =
  | 'listener.connected'
  | 'listener.disconnected'
  | 'listener.refused'
  | 'connect.accepted'
  | 'connect.rejected'
  | 'connect.timeout'
  | 'connect.failed'
  | 'connect.closed'
  | 'http.request'
  | 'pubsub.connected'
  | 'pubsub.refused'
  | 'pubsub.detached'
  | 'pubsub.recovered'
  | 'pubsub.disconnected'
  | 'pubsub.join'
  | 'pubsub.leave'
  | 'pubsub.publish'
  | 'pubsub.rest'
  | 'handler.failed'
  | 'limit.refused';

/** What an event says besides its kind; every field is optional. */
export interface TraceFields {
  entity?: string;
  hub?: string;
  connectionId?: string;
  userId?: string | null;
  group?: string;
  method?: string;
  /** A request path, never its query (where tokens travel). */
  path?: string;
  status?: number;
  /** Duration in milliseconds. */
  ms?: number;
  /** Payload size in bytes (the payload itself is never traced). */
  bytes?: number;
  /** An error code, a close code, an ack result or a limit's name. */
  code?: string;
  detail?: string;
}

/** One traced event, as viewers get it (and as it crosses the bus in ops.trace). */
export interface TraceEvent extends TraceFields {
  /** When it happened, ms since the epoch (the emitting edge's clock). */
  at: number;
  node: string;
  kind: TraceKind;
}

export type TraceSink = (event: TraceEvent) => void;

export type TraceDropReason = 'rate' | 'bus' | 'viewer';

const TEXT_FIELDS = ['entity', 'hub', 'connectionId', 'userId', 'group', 'method', 'path', 'code', 'detail'] as const;

export class TraceSource {
  /**
   * True while a sink is attached (someone watches, here or on another edge).
   * Emitters check it before building an event: `if (trace.on) trace.emit(...)`.
   */
  on = false;
  /** Trace viewers connected to this edge (the edge_relay_trace_viewers gauge). */
  viewers = 0;
  /** Events dropped over the rate cap so far (viewers are told how many they missed). */
  rateDropped = 0;
  private readonly sinks = new Set<TraceSink>();
  private readonly events: RateBucket;
  private readonly refusals: RateBucket;

  constructor(
    readonly node: string,
    /** Counts events dropped (edge_relay_trace_events_dropped_total). */
    readonly dropped: (reason: TraceDropReason, count?: number) => void = () => {},
    perSecond = TRACE_EVENTS_PER_SECOND,
    /**
     * Milliseconds for the rate cap's buckets (a test gives its own, so that a slow turn refills nothing): monotonic,
     * since the wall clock set back took the buckets as far into debt (a 60 s step dropped every event for a
     * minute; found by review).
     */
    clock: () => number = () => performance.now(),
  ) {
    this.events = new RateBucket(perSecond, clock);
    this.refusals = new RateBucket(refusalsPerSecond(perSecond), clock);
  }

  /** Starts handing events to `sink`; the returned function stops it. */
  attach(sink: TraceSink): () => void {
    this.sinks.add(sink);
    this.on = true;
    return () => {
      this.sinks.delete(sink);
      this.on = this.sinks.size > 0;
    };
  }

  emit(kind: TraceKind, fields: TraceFields): void {
    if (this.on && this.admit(this.events)) this.deliver(kind, fields);
  }

  /** Emits the refusal of a request not yet authorized, under the refusals' own cap (see the top of this file). */
  emitRefusal(kind: TraceKind, fields: TraceFields): void {
    if (this.on && this.admit(this.refusals)) this.deliver(kind, fields);
  }

  /**
   * Emits once `outcome` settles: `code` is its result ('success',
   * 'Duplicate') or the error's name. The event's place under the rate cap is
   * taken now, so that past the cap nothing waits on the outcome.
   */
  settled(kind: TraceKind, fields: TraceFields, outcome: Promise<unknown>, startedAt = performance.now()): void {
    if (!this.on || !this.admit(this.events)) return;
    outcome.then(
      (result) => this.on && this.deliver(kind, { ...fields, code: result === 'duplicate' ? 'Duplicate' : 'success', ms: performance.now() - startedAt }),
      (err: Error) =>
        this.on && this.deliver(kind, { ...fields, code: err?.name && err.name !== 'Error' ? err.name : 'InternalServerError', ms: performance.now() - startedAt }),
    );
  }

  /** Takes one event's place under `bucket`'s cap; false, counted, when there is none. */
  private admit(bucket: RateBucket): boolean {
    if (bucket.take()) return true;
    this.rateDropped++;
    this.dropped('rate');
    return false;
  }

  private deliver(kind: TraceKind, fields: TraceFields): void {
    const event: TraceEvent = { at: Date.now(), node: this.node, kind };
    for (const name of TEXT_FIELDS) {
      const value = fields[name];
      if (typeof value === 'string') event[name] = traceText(value);
    }
    if (fields.status !== undefined) event.status = fields.status;
    if (fields.ms !== undefined) event.ms = Math.max(0, Math.round(fields.ms * 10) / 10);
    if (fields.bytes !== undefined) event.bytes = fields.bytes;
    for (const sink of this.sinks) sink(event);
  }
}

/** A token bucket refilled by `clock` at `perSecond`, holding at most a second's worth. */
class RateBucket {
  private tokens: number;
  private refilledAt = 0;

  constructor(
    private readonly perSecond: number,
    private readonly clock: () => number,
  ) {
    this.tokens = perSecond;
  }

  take(): boolean {
    const now = this.clock();
    if (now !== this.refilledAt) {
      // A clock that went back refills nothing (and takes nothing away).
      this.tokens = Math.min(this.perSecond, this.tokens + (Math.max(0, now - this.refilledAt) * this.perSecond) / 1000);
      this.refilledAt = now;
    }
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}

/**
 * Also traces each increment of a labelled counter (failed event handler
 * calls; limit refusals are traced by RelayMetrics.limitRefused, which knows
 * which cap they go under): one hook here rather than a line beside each of the
 * counter's call sites. `describe` returns undefined for increments that are
 * not worth a line.
 */
export function traceIncrements<L extends string>(
  counter: Counter<L>,
  trace: TraceSource,
  describe: (labels: Partial<Record<L, string | number>>) => [TraceKind, TraceFields] | undefined,
): void {
  const inc = counter.inc.bind(counter) as (labels?: unknown, value?: number) => void;
  (counter as { inc: unknown }).inc = (labels?: Partial<Record<L, string | number>> | number, value?: number) => {
    inc(labels, value);
    if (!trace.on || typeof labels !== 'object') return;
    const line = describe(labels);
    if (line) trace.emit(line[0], line[1]);
  };
}
