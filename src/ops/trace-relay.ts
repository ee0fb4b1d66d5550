// GET /$relay/trace (Manage): the live trace as Server-Sent Events, every
// edge's events as they happen (docs/dashboard.md, "Live trace"). The events
// come from the edge's TraceSource (telemetry/trace.ts); this part attaches
// to it only while someone watches, and carries events between edges:
//
// - an edge with viewers announces its interest on the bus
//   (ops.trace.watch, every ANNOUNCE_EVERY_MS, valid for INTEREST_TTL_MS) and
//   reads the other edges' batches (ops.trace) while it has viewers; its last
//   viewer leaving withdraws the interest (ttlMs 0);
// - an edge that heard unexpired interest attaches to its TraceSource and
//   publishes its events in batches of at most BATCH_MAX every TICK_MS. One
//   that heard none has nothing attached: its emitters see `trace.on` false.
//
// Nothing waits for a viewer: a batch that is full drops (reason `bus`), a
// viewer with VIEWER_BUFFER_BYTES unread drops (reason `viewer`), each counted
// in edge_relay_trace_events_dropped_total and told to the viewer in a
// `dropped` event. A viewer's filter (entity, hub, connection id, user id) is
// applied on its own edge.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Bus, BusMessage, BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import { failEdgeRequest } from '../http/edge-errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import { TRACE_EVENTS_PER_SECOND, TRACE_REFUSALS_PER_SECOND, traceText, type TraceEvent, type TraceSource } from '../telemetry/trace.ts';
import type { ManageAuth } from './manage-auth.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** Trace viewers one edge serves at once; more are refused (503 TooManyTraceViewers). */
export const TRACE_VIEWERS_PER_NODE = 10;
export const ANNOUNCE_EVERY_MS = 2000;
export const INTEREST_TTL_MS = 6000;
/** How often batches go out and viewers' writes are made. */
export const TICK_MS = 100;
/** A tenth of a second of both trace caps (telemetry/trace.ts): a batch holds what the edge may trace in a tick. */
export const BATCH_MAX = (TRACE_EVENTS_PER_SECOND + TRACE_REFUSALS_PER_SECOND) / (1000 / TICK_MS);
/** Unread bytes past which a viewer misses events. */
export const VIEWER_BUFFER_BYTES = 256 * 1024;
const KEEP_ALIVE_MS = 15_000;

export interface TraceFilter {
  entity?: string;
  hub?: string;
  connectionId?: string;
  userId?: string;
}

/** The filter a viewer asked for in its query string (empty values ignored). */
export function traceFilterOf(query: URLSearchParams): TraceFilter {
  const filter: TraceFilter = {};
  for (const name of ['entity', 'hub', 'connectionId', 'userId'] as const) {
    const value = query.get(name)?.trim();
    // Cut as an event's fields are, so a name longer than they keep still matches (before: never).
    if (value) filter[name] = traceText(value);
  }
  return filter;
}

/** Entity and hub names compare case-insensitively (as the relay finds them); ids exactly. */
export function traceMatches(filter: TraceFilter, event: TraceEvent): boolean {
  if (filter.entity !== undefined && (event.entity === undefined || asciiLowerCase(event.entity) !== asciiLowerCase(filter.entity))) return false;
  if (filter.hub !== undefined && (event.hub === undefined || asciiLowerCase(event.hub) !== asciiLowerCase(filter.hub))) return false;
  if (filter.connectionId !== undefined && event.connectionId !== filter.connectionId) return false;
  if (filter.userId !== undefined && event.userId !== filter.userId) return false;
  return true;
}

/** How often a viewer's token is checked again: a revoked or expired one ends the stream. */
const RECHECK_MS = 1000;
/** How long an ended stream may take to reach a viewer that has stopped reading before its connection is cut. */
const END_GRACE_MS = 2000;

/**
 * An event with its line for viewers, written once for every viewer that takes it (before, once per viewer: up to
 * ten times an event with ten viewers).
 */
class SharedTraceLine {
  private text: string | undefined;

  constructor(readonly event: TraceEvent) {}

  line(): string {
    return (this.text ??= `data: ${JSON.stringify(this.event)}\n\n`);
  }
}

class TraceViewer {
  private pending: string[] = [];
  private pendingBytes = 0;
  /** Events this viewer missed: not keeping up here, or dropped by an edge. */
  missed = 0;
  private toldMissed = 0;
  // Monotonic times (performance.now()): a wall clock set back held back keep-alives and token rechecks as long.
  lastWrite = performance.now();
  private lastCheck = performance.now();

  constructor(
    readonly res: ServerResponse,
    readonly filter: TraceFilter,
    private readonly dropped: () => void,
    /** Whether the token the stream was opened with still passes (expiry, a reload, a key's rotation). */
    private readonly stillAllowed: () => boolean,
  ) {}

  offer(event: SharedTraceLine): void {
    if (!traceMatches(this.filter, event.event)) return;
    if (this.res.writableLength + this.pendingBytes > VIEWER_BUFFER_BYTES) {
      this.missed++;
      this.dropped();
      return;
    }
    const line = event.line();
    this.pending.push(line);
    this.pendingBytes += line.length;
  }

  /** Writes what is pending; 'revoked' when the token no longer passes (the stream is then ended). */
  flush(now: number): 'revoked' | undefined {
    if (this.res.writableEnded) return undefined;
    if (now - this.lastCheck >= RECHECK_MS) {
      this.lastCheck = now;
      if (!this.stillAllowed()) {
        this.end('event: revoked\ndata: {"message":"the token no longer has the Manage right here"}\n\n');
        return 'revoked';
      }
    }
    // A viewer that does not read gets nothing more, notices included, until it does.
    if (this.res.writableLength > VIEWER_BUFFER_BYTES) return;
    if (this.missed !== this.toldMissed) {
      this.toldMissed = this.missed;
      this.pending.push(`event: dropped\ndata: ${JSON.stringify({ missed: this.missed })}\n\n`);
    }
    if (this.pending.length === 0 && now - this.lastWrite < KEEP_ALIVE_MS) return;
    this.res.write(this.pending.length > 0 ? this.pending.join('') : ': keep-alive\n\n');
    this.pending = [];
    this.pendingBytes = 0;
    this.lastWrite = now;
  }

  /**
   * Ends the stream. A viewer that has stopped reading would never take the
   * end (nor say 'close'): its connection is cut after END_GRACE_MS.
   */
  end(last?: string): void {
    this.res.end(last);
    if (this.res.destroyed) return;
    const cut = setTimeout(() => this.res.destroy(), END_GRACE_MS);
    cut.unref();
    this.res.once('close', () => clearTimeout(cut));
  }
}

export interface TraceRelayDeps {
  bus: Bus;
  subjects: Subjects;
  nodeId: string;
  trace: TraceSource;
  log: Logger;
}

export class TraceRelay {
  private readonly viewers = new Set<TraceViewer>();
  /** Other edges with viewers: when their interest ends (ms since the epoch). */
  private readonly interest = new Map<string, number>();
  private readonly watchSubscription: BusSubscription | undefined;
  private eventsSubscription: BusSubscription | undefined;
  private detach: (() => void) | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private announcer: NodeJS.Timeout | undefined;
  private batch: TraceEvent[] = [];
  /** Events this edge dropped (rate, full batch) not yet reported in a batch. */
  private batchDropped = 0;
  private rateDroppedSeen = 0;
  private closed = false;

  constructor(private readonly d: TraceRelayDeps) {
    // Alone on the in-process bus, nobody else can watch: no subscription at all.
    if (d.bus.reachesOtherNodes) this.watchSubscription = d.bus.subscribe(d.subjects.traceWatch(), (m) => this.onWatch(m));
  }

  /** Whether events are wanted now (a viewer here, or interest from another edge): for tests. */
  get attached(): boolean {
    return this.detach !== undefined;
  }

  serve(req: IncomingMessage, res: ServerResponse, auth: ManageAuth): void {
    if (auth.refuseUnlessManageGet(req, res)) return;
    if (this.closed) return failEdgeRequest(res, 'ShuttingDown');
    if (this.viewers.size >= TRACE_VIEWERS_PER_NODE) return failEdgeRequest(res, 'TooManyTraceViewers');
    const filter = traceFilterOf(new URLSearchParams((req.url ?? '').split('?')[1] ?? ''));
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      // A stream is never followed by another request: its connection closes with it.
      connection: 'close',
    });
    res.write('retry: 3000\n\n');
    const viewer = new TraceViewer(res, filter, () => this.d.trace.dropped('viewer'), () => auth.check(req) === undefined);
    req.socket.setNoDelay(true);
    res.on('close', () => this.removeViewer(viewer));
    res.on('error', () => res.destroy());
    const cluster = this.addViewer(viewer);
    const hello = () => {
      if (res.destroyed) return;
      res.write(`event: hello\ndata: ${JSON.stringify({ node: this.d.nodeId, at: Date.now(), cluster, filter })}\n\n`);
    };
    // `hello` once the interest reached the bus: from then on every edge hears it within its round trip.
    void this.d.bus.flush().then(hello, hello);
  }

  private addViewer(viewer: TraceViewer): boolean {
    this.viewers.add(viewer);
    this.d.trace.viewers = this.viewers.size;
    const cluster = this.d.bus.reachesOtherNodes;
    if (this.viewers.size === 1 && cluster) {
      this.eventsSubscription = this.d.bus.subscribe(this.d.subjects.traceEvents(), (m) => this.onEvents(m));
      this.announce(INTEREST_TTL_MS);
      this.announcer = setInterval(() => this.announce(INTEREST_TTL_MS), ANNOUNCE_EVERY_MS);
      this.announcer.unref();
    }
    this.update();
    return cluster;
  }

  private removeViewer(viewer: TraceViewer): void {
    if (!this.viewers.delete(viewer)) return;
    this.d.trace.viewers = this.viewers.size;
    if (this.viewers.size === 0) this.stopWatching();
    this.update();
  }

  private stopWatching(): void {
    this.eventsSubscription?.unsubscribe();
    this.eventsSubscription = undefined;
    if (this.announcer) {
      clearInterval(this.announcer);
      this.announcer = undefined;
      this.announce(0);
    }
  }

  private announce(ttlMs: number): void {
    try {
      this.d.bus.publish(this.d.subjects.traceWatch(), encodeEdgeMessage({ op: 'ops.trace.watch', origin: this.d.nodeId, ttlMs }));
    } catch (err) {
      this.d.log.debug({ event: 'trace.announce_failed', err: (err as Error).message });
    }
  }

  private onWatch(message: BusMessage): void {
    const m = decodeEdgeMessage(message.data, 'ops.trace.watch')?.message;
    if (!m || m.origin === this.d.nodeId) return;
    if (m.ttlMs === 0) this.interest.delete(m.origin);
    else this.interest.set(m.origin, performance.now() + m.ttlMs);
    this.update();
  }

  private onEvents(message: BusMessage): void {
    const m = decodeEdgeMessage(message.data, 'ops.trace')?.message;
    if (!m || m.origin === this.d.nodeId) return;
    const events = m.events.map((event) => new SharedTraceLine(event));
    for (const viewer of this.viewers) {
      if (m.dropped) viewer.missed += m.dropped;
      for (const event of events) viewer.offer(event);
    }
  }

  /** Attaches to the trace source while anyone wants events, and detaches when nobody does. */
  private update(): void {
    const wanted = !this.closed && (this.viewers.size > 0 || this.interest.size > 0);
    if (wanted && !this.detach) {
      this.rateDroppedSeen = this.d.trace.rateDropped;
      this.detach = this.d.trace.attach((event) => this.onLocal(event));
      this.ticker = setInterval(() => this.tick(), TICK_MS);
      this.ticker.unref();
    } else if (!wanted && this.detach) {
      this.detach();
      this.detach = undefined;
      clearInterval(this.ticker);
      this.ticker = undefined;
      this.batch = [];
      this.batchDropped = 0;
    }
  }

  private onLocal(event: TraceEvent): void {
    if (this.viewers.size > 0) {
      const shared = new SharedTraceLine(event);
      for (const viewer of this.viewers) viewer.offer(shared);
    }
    if (this.interest.size === 0) return;
    if (this.batch.length >= BATCH_MAX) {
      this.batchDropped++;
      this.d.trace.dropped('bus');
      return;
    }
    this.batch.push(event);
  }

  private tick(): void {
    const now = performance.now();
    for (const [origin, until] of this.interest) if (until <= now) this.interest.delete(origin);
    const rateDropped = this.d.trace.rateDropped - this.rateDroppedSeen;
    this.rateDroppedSeen = this.d.trace.rateDropped;
    if (rateDropped > 0) for (const viewer of this.viewers) viewer.missed += rateDropped;
    if (this.interest.size > 0) {
      this.batchDropped += rateDropped;
      if (this.batch.length > 0 || this.batchDropped > 0) this.publishBatch();
    } else {
      this.batch = [];
      this.batchDropped = 0;
    }
    for (const viewer of [...this.viewers]) {
      // Its place, its count and its share of tracing go at once, whether or not the end reaches it.
      if (viewer.flush(now) === 'revoked') this.removeViewer(viewer);
    }
    this.update();
  }

  private publishBatch(): void {
    const events = this.batch;
    const dropped = this.batchDropped;
    this.batch = [];
    this.batchDropped = 0;
    try {
      this.d.bus.publish(this.d.subjects.traceEvents(), encodeEdgeMessage({ op: 'ops.trace', origin: this.d.nodeId, events, ...(dropped ? { dropped } : {}) }));
    } catch (err) {
      this.d.trace.dropped('bus', events.length);
      this.d.log.debug({ event: 'trace.publish_failed', err: (err as Error).message });
    }
  }

  /** Ends every viewer's stream and stops watching (shutdown). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const viewer of [...this.viewers]) {
      viewer.flush(performance.now());
      viewer.end();
      this.removeViewer(viewer);
    }
    this.watchSubscription?.unsubscribe();
    this.interest.clear();
    this.update();
  }
}
