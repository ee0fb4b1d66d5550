// The event feed on core NATS (event-feed.ts). It closes the gaps NATS leaves
// when an edge loses its NATS server: core NATS
// delivers at most once, so events other edges publish while this edge is
// reconnecting (its subscriptions are gone meanwhile) would be lost, and so
// would what this edge publishes meanwhile. Each edge keeps a short log of what
// it published (bus.replayWindowMs, capped at bus.replayBufferBytes). After a
// reconnect, an edge re-sends what it published since shortly before the
// disconnect; and it holds new events, asks every edge for what it published
// since the last event it had from it (or, for an edge it never heard from,
// since shortly before the disconnect), delivers those in order and releases
// what it held. Events from one edge
// process carry increasing counters (mid `origin:counter`, where the origin is
// the node id and a random boot id, so a restarted edge starts afresh) and
// arrive in that order, so one number per origin says what was already
// delivered: nothing twice. An origin this edge has delivered nothing from for
// a whole window (and the clock margin) is forgotten: an edge replays and
// re-sends only what it published within the window, all of it newer than
// what was delivered from it, so its number is no longer needed; and an
// origin is made at every edge start (before, one entry per peer start
// stayed for good, and went out in every replay request).
import { respond, type Bus, type BusMessage, type BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type DecodedEdgeMessage, type PsReplayed, type PsSend } from '../bus/messages.ts';
import type { Logger } from '../telemetry/logger.ts';
import { newOrigin, nodeOfOrigin, type DeliverEvent, type EventFeed } from './event-feed.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { owned } from '../collections/own-bytes.ts';

export interface ReplayingFeedOptions {
  nodeId: string;
  /** The subject every edge answers replay requests on. */
  subject: string;
  windowMs: number;
  maxBytes: number;
  requestTimeoutMs: number;
  gatherStallMs: number;
}

/** When asking an edge never heard from, start this long before the disconnect (clocks differ). */
const CLOCK_MARGIN_MS = 1000;
/** Rounds of a replay at most (each brings up to half the bus's max_payload from every edge with more to send). */
const MAX_REPLAY_ROUNDS = 1000;
/** Passes of one replay at most: a bus lost and got back during each pass would otherwise hold new events for good. */
const MAX_REPLAY_PASSES = 20;

interface Logged {
  counter: number;
  /** Wall clock (ms since epoch): compared with other edges' times (a replay's `after`). */
  at: number;
  /** Monotonic clock (performance.now()): the window, which a wall-clock step must not stretch or cut. */
  mono: number;
  subject: string;
  data: Uint8Array;
}

/** A mid `origin:counter` split, or undefined when it is not one. */
export function parseMid(mid: string): { origin: string; counter: number } | undefined {
  const i = mid.lastIndexOf(':');
  const counter = Number(mid.slice(i + 1));
  return i > 0 && Number.isSafeInteger(counter) && counter > 0 ? { origin: mid.slice(0, i), counter } : undefined;
}

/** What a slot of the log holds once its entry left the window. */
const EXPIRED: Logged = { counter: 0, at: 0, mono: 0, subject: '', data: new Uint8Array(0) };

/** The event feed on core NATS: events are logged by their publisher and re-sent or asked for after an outage. */
export class ReplayingFeed implements EventFeed {
  /** This edge process as an event origin. */
  private readonly origin: string;
  private counter = 0;
  private readonly hubs = new Map<string, DeliverEvent>();
  private entries: Logged[] = [];
  private head = 0;
  private bytes = 0;
  /** The room a one-event answer's header takes, for the bus's max_payload last asked about. */
  private answerHeader = { maxPayload: -1, bytes: 0 };
  /** Highest counter delivered from each origin. */
  private readonly delivered = new Map<string, number>();
  private held: [string, () => void][] | undefined;
  /** Per origin, the first counter held: a replay asks for what came before it only (what is held takes over there). */
  private readonly heldFrom = new Map<string, number>();
  /**
   * True while a replay runs. Losing the bus or getting it back meanwhile asks for another pass (from the earliest
   * outage) instead of a second replay; the replay waits for the bus before it (wakeReplay).
   */
  private replaying = false;
  private passAgainFrom: number | undefined;
  private wakeReplay: (() => void) | undefined;
  /** The outage the running replay asks from (its earliest). */
  private replayFrom: number | undefined;
  private closed = false;
  /** Since when the bus is away (also from the start, when the edge began without it): what was published since is sent again. */
  private disconnectedAt: number | undefined;
  /** Since when the bus has dropped what this edge publishes because its server takes nothing (backlogged). */
  private sendingStoppedAt: number | undefined;
  /** While republish() runs: the time it sends again from. */
  private republishingFrom: number | undefined;
  private readonly subscription: BusSubscription;
  private lastOwnCounter = 0;
  /** `delivered` as the last sweep found it: an origin whose number has not moved since is forgotten. */
  private deliveredAtSweep = new Map<string, number>();
  private readonly sweepTimer: NodeJS.Timeout;

  constructor(
    private readonly bus: Bus,
    private readonly options: ReplayingFeedOptions,
    private readonly log: Logger,
  ) {
    this.origin = newOrigin(options.nodeId);
    this.subscription = bus.subscribe(options.subject, (m) => this.onRequest(m));
    bus.onConnectionChange((connected) => this.onConnectionChange(connected));
    bus.onBacklogChange((backlogged) => this.onBacklogChange(backlogged));
    // The bus connects after the feed is made (at once, or later when the NATS servers are away): what
    // the edge accepted before goes to the other edges at its first connection, as after any outage
    // (before: never). An edge that connects at once replays the moment as well, finding nothing.
    if (!bus.connected) this.disconnectedAt = Date.now();
    // Events that left the window are let go here too, not only at the next publish: an edge that stopped
    // publishing held its last window's events (up to bus.replayBufferBytes) for as long as it stayed quiet.
    this.sweepTimer = setInterval(() => {
      this.forgetQuietOrigins();
      this.dropExpired(performance.now());
    }, Math.max(1000, options.windowMs + CLOCK_MARGIN_MS));
    this.sweepTimer.unref();
  }

  /**
   * Drops origins nothing was delivered from since the last sweep, one window
   * and the clock margin ago: whatever such an edge still logs, it published
   * after the last event delivered from it. Not while a replay runs.
   */
  forgetQuietOrigins(): void {
    // While away or replaying, nothing is delivered: every origin would look quiet. So too while the bus's server
    // leaves a ping unanswered (frozen, cut off, not judged stale yet: found by a chaos soak, where an edge forgot
    // the origins it heard nothing from while its server was frozen, and then asked for what it missed by time alone).
    if (this.held || this.disconnectedAt !== undefined || (this.bus.unansweredPings ?? 0) > 0) return;
    for (const [origin, counter] of this.delivered) {
      if (this.deliveredAtSweep.get(origin) === counter) this.delivered.delete(origin);
    }
    this.deliveredAtSweep = new Map(this.delivered);
  }

  /** Origins this edge keeps a delivered number for. */
  get originsKnown(): number {
    return this.delivered.size;
  }

  nextMid(): string {
    return `${this.origin}:${++this.counter}`;
  }

  register(hubKey: string, deliver: DeliverEvent): void {
    this.hubs.set(hubKey, deliver);
  }

  unregister(hubKey: string, deliver: DeliverEvent): void {
    if (this.hubs.get(hubKey) === deliver) this.hubs.delete(hubKey);
  }

  /**
   * An event's envelope must leave room for the header of an answer carrying it alone, or it could not be replayed
   * (before, events within 1 KiB of max_payload were accepted, and lost when an edge missed them). With the replay
   * off (no window or no buffer), the whole max_payload.
   */
  largestEvent(): number {
    const maxPayload = this.bus.maxPayload;
    if (this.options.windowMs === 0 || this.options.maxBytes === 0) return maxPayload;
    if (this.answerHeader.maxPayload !== maxPayload) {
      const header = encodeEdgeMessage({ op: 'ps.replayed', edge: this.options.nodeId, entries: [{ length: maxPayload }], truncated: false });
      this.answerHeader = { maxPayload, bytes: header.length };
    }
    return maxPayload - this.answerHeader.bytes;
  }

  /** Publishes an event this edge accepted, and logs it for edges that miss it. */
  publish(subject: string, mid: string, data: Uint8Array): void {
    this.bus.publish(subject, data);
    this.record(mid, subject, data);
  }

  /** An event from another edge: delivered once, in order per origin; held while a replay runs. */
  receive(event: PsSend, body: Buffer): void {
    this.admit(event.mid, () => this.deliver(event, body));
  }

  private deliver(event: PsSend, body: Buffer): void {
    if (event.origin !== this.options.nodeId) this.hubs.get(asciiLowerCase(event.hub))?.(event, body);
  }

  /** Logs an event this edge published. */
  private record(mid: string, subject: string, data: Uint8Array): void {
    const counter = parseMid(mid)?.counter;
    if (counter === undefined) return;
    this.lastOwnCounter = counter;
    const mono = performance.now();
    // A small event is cut from one of Node's shared 8 KiB slabs: kept as it is, it keeps the whole slab, and the
    // window's memory passed maxBytes many times over (own-bytes.ts).
    this.entries.push({ counter, at: Date.now(), mono, subject, data: owned(data) });
    this.bytes += data.length;
    this.dropExpired(mono);
  }

  /** Lets go of the oldest events while they are out of the window at `now` (monotonic) or past the byte cap. */
  private dropExpired(now: number): void {
    const oldest = now - this.options.windowMs;
    while (this.head < this.entries.length && (this.entries[this.head].mono < oldest || this.bytes > this.options.maxBytes)) {
      this.bytes -= this.entries[this.head].data.length;
      // Let go of its bytes now: the slot goes at the next compaction (before, up to 1,024 expired messages of any size stayed).
      this.entries[this.head] = EXPIRED;
      this.head++;
    }
    if (this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * While NATS is away or a replay runs: the start of the earliest outage not yet made up for (this edge's clock).
   * A session handed to another edge now has it look for missed events from there (session-handover.ts).
   */
  missingSince(): number | undefined {
    const times = [this.disconnectedAt, this.replayFrom, this.passAgainFrom].filter((t): t is number => t !== undefined);
    return times.length > 0 ? Math.min(...times) : undefined;
  }

  /** The edges (node ids) this one has had events from lately. */
  private edgesHeardFrom(): string[] {
    return [...this.delivered.keys()].map(nodeOfOrigin);
  }

  /** Per origin (this edge included), the highest event counter this edge has delivered. */
  seen(): Record<string, number> {
    return { ...Object.fromEntries(this.delivered), [this.origin]: this.lastOwnCounter };
  }

  private admit(mid: string, deliver: () => void): void {
    if (!this.held) {
      this.admitNow(mid, deliver);
      return;
    }
    this.held.push([mid, deliver]);
    const parsed = parseMid(mid);
    if (parsed && !this.heldFrom.has(parsed.origin)) this.heldFrom.set(parsed.origin, parsed.counter);
  }

  /** Delivers the event unless one as new from its origin was: true when it did. */
  private admitNow(mid: string, deliver: () => void): boolean {
    const parsed = parseMid(mid);
    if (!parsed) return false;
    const { origin, counter } = parsed;
    const last = this.delivered.get(origin);
    if (last !== undefined && counter <= last) return false;
    this.delivered.set(origin, counter);
    deliver();
    return true;
  }

  /**
   * The bus dropped what this edge published while its server took nothing (backlogged, connected all the while):
   * sent again once it takes it again (found by review: a server paused a second under load lost events for good,
   * their publishers told they were sent). The other edges heard nothing meanwhile, so there is nothing to ask them.
   */
  private onBacklogChange(backlogged: boolean): void {
    if (backlogged) {
      // Backlogged again while sending again what was dropped: that goes again from the same time next.
      this.sendingStoppedAt ??= this.republishingFrom ?? Date.now();
      return;
    }
    const since = this.sendingStoppedAt;
    this.sendingStoppedAt = undefined;
    if (since !== undefined) this.republish(since);
  }

  private onConnectionChange(connected: boolean): void {
    if (!connected) {
      // From when its server last answered a ping: one that stopped answering (frozen, cut off) before the bus judged
      // it stale took nothing after (found by a chaos soak: from when it was judged stale, less a second, the events
      // published in a freeze's first seconds were never sent again, their publishers told they were sent).
      this.disconnectedAt ??= Math.min(Date.now(), this.bus.lastAnsweredAt ?? Infinity);
      if (this.replaying) {
        // Answers to the pass running now may be lost: another pass, once the bus is back. It asks each origin for
        // what precedes the first event held after that (what is held now came before this outage).
        this.passAgainFrom = Math.min(this.passAgainFrom ?? this.disconnectedAt, this.disconnectedAt);
        this.heldFrom.clear();
      }
      return;
    }
    const since = this.disconnectedAt;
    this.disconnectedAt = undefined;
    // Backlogged before the connection went: what was dropped since then goes again too.
    const sendingStopped = this.sendingStoppedAt;
    this.sendingStoppedAt = undefined;
    if (since === undefined) return;
    this.republish(Math.min(since, sendingStopped ?? since));
    // One replay at a time (before, a second one shared the held events, and the first to end let them go: later
    // events from an origin went out, and the other replay's older ones were then dropped as already delivered).
    if (this.replaying) {
      this.passAgainFrom = Math.min(this.passAgainFrom ?? since, since);
      this.wakeReplay?.();
    } else void this.replay(since);
  }

  /**
   * Sends again what this edge published from shortly before the connection
   * was lost (what was in flight then is gone too): receivers drop what they
   * already have by its counter.
   */
  private republish(since: number): void {
    const after = since - CLOCK_MARGIN_MS;
    let count = 0;
    const oldest = performance.now() - this.options.windowMs;
    this.republishingFrom = since;
    try {
      for (let i = this.head; i < this.entries.length; i++) {
        const e = this.entries[i];
        if (e.at < after || e.mono < oldest) continue;
        // The bus took nothing more (backlogged again, or lost): the rest goes from `since` again when it does
        // (onBacklogChange; found by a suite run, where events re-sent into a new backlog were lost).
        if (!this.bus.connected || this.bus.backlogged) break;
        try {
          this.bus.publish(e.subject, e.data);
          count++;
        } catch {
          // too large for this cluster now: it was refused when first sent too
        }
      }
    } finally {
      this.republishingFrom = undefined;
    }
    if (count > 0) this.log.info({ event: 'bus.republished', events: count });
  }

  /**
   * Holds new events, asks the other edges for what this one missed, delivers it, then what it held. A pass the bus
   * was lost during is followed by another once it is back (before, the held events went out while it was away,
   * and what the lost answers carried was never asked for again); at most MAX_REPLAY_PASSES, then what is held goes.
   */
  private async replay(disconnectedAt: number): Promise<void> {
    this.replaying = true;
    this.held ??= [];
    let replayed = 0;
    // Edges that did not answer a pass of this replay: not waited for again in the next one.
    const silent = new Set<string>();
    try {
      let from: number | undefined = disconnectedAt;
      for (let pass = 1; from !== undefined; pass++) {
        if (this.closed) break;
        if (!this.bus.connected) await new Promise<void>((resolve) => (this.wakeReplay = resolve));
        this.wakeReplay = undefined;
        if (this.closed) break;
        from = Math.min(from, this.passAgainFrom ?? from);
        this.replayFrom = from;
        this.passAgainFrom = undefined;
        if (pass > MAX_REPLAY_PASSES) {
          this.log.warn({ event: 'bus.replay_passes_exceeded', passes: MAX_REPLAY_PASSES, held: this.held?.length ?? 0 });
          break;
        }
        replayed += await this.replayPass(from, silent);
        // From the earliest outage still: an origin asked by time (never heard from) may have lost its answer to this pass.
        from = this.passAgainFrom === undefined ? undefined : Math.min(from, this.passAgainFrom);
      }
    } finally {
      const held = this.held ?? [];
      this.held = undefined;
      this.heldFrom.clear();
      this.replaying = false;
      this.replayFrom = undefined;
      for (const [mid, deliver] of held) this.admitNow(mid, deliver);
      this.log.info({ event: 'bus.replayed', events: replayed, held: held.length });
    }
  }

  /**
   * One pass: asks every edge for what it published after what was delivered from it (or, for an edge never heard
   * from, after `disconnectedAt`), and before what is held from it. The first round waits for every edge this one
   * has had events from; an answer holds up to half the bus's max_payload, and an edge with more says `truncated`
   * and is asked again (before: the rest was lost), later rounds waiting for those edges only (before, every round
   * waited requestTimeoutMs for an edge that had died, the held events growing).
   */
  private async replayPass(disconnectedAt: number, silent: Set<string>): Promise<number> {
    let replayed = 0;
    let waitFor = this.edgesHeardFrom().filter((edge) => !silent.has(edge));
    try {
      for (let round = 1; ; round++) {
        const until = Object.fromEntries(this.heldFrom);
        const asked = await this.askEdges(Object.fromEntries(this.delivered), disconnectedAt - CLOCK_MARGIN_MS, waitFor, until);
        const { events, cut } = asked;
        // Silent while this edge lost NATS (or got it back) meanwhile: their answers were lost, not late.
        if (this.passAgainFrom === undefined) for (const edge of asked.silent) silent.add(edge);
        let delivered = 0;
        for (const data of events) {
          const event = decodeEdgeMessage(data, 'ps.send');
          if (event && this.admitNow(event.message.mid, () => this.deliver(event.message, event.body))) delivered++;
        }
        replayed += delivered;
        if (cut.length === 0) break;
        // Every answer carries at least one event newer than asked for: a round that delivered none would be asked again for ever.
        if (delivered === 0 || round >= MAX_REPLAY_ROUNDS) {
          this.log.warn({ event: 'bus.replay_truncated', rounds: round });
          break;
        }
        waitFor = cut;
      }
    } catch (err) {
      this.log.warn({ event: 'bus.replay_failed', err: (err as Error).message });
    }
    return replayed;
  }

  /**
   * Every event the other edges published since `after` (their clocks), as
   * ps.send envelopes: what a session moving between edges may have missed.
   */
  async publishedSince(after: number, edges: readonly string[] = []): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    // Per origin, the last event had: an edge whose answer was truncated is asked again from there.
    const since: Record<string, number> = {};
    // The first round waits for `edges` (the hub's roster: this edge may have had no event from them yet) and the
    // edges it had events from; later ones for the edges whose answers were truncated.
    let waitFor = [...edges, ...this.edgesHeardFrom()];
    for (let round = 1; ; round++) {
      const { events, cut } = await this.askEdges(since, after, waitFor);
      let got = 0;
      for (const data of events) {
        const mid = decodeEdgeMessage(data, 'ps.send')?.message.mid;
        const parsed = mid === undefined ? undefined : parseMid(mid);
        if (!parsed || (since[parsed.origin] ?? 0) >= parsed.counter) continue;
        since[parsed.origin] = parsed.counter;
        out.push(data);
        got++;
      }
      if (cut.length === 0) return out;
      if (got === 0 || round >= MAX_REPLAY_ROUNDS) {
        this.log.warn({ event: 'bus.replay_truncated', rounds: round });
        return out;
      }
      waitFor = cut;
    }
  }

  /**
   * One round of asking every edge what it published after `since` (per origin; `after`, their clock, for an origin
   * not named) and before `until` (per origin, where given): the ps.send envelopes the answers carry, in each edge's
   * order, and the edges whose answers were cut short. Waits for an answer from each edge in `waitFor` (up to
   * requestTimeoutMs; the silent ones are logged), then gatherStallMs for others. Before, the gather ended
   * gatherStallMs after the last answer, the asker's own (empty, at once) often the first: an edge busy with its
   * own reconnection answered too late, and what it published meanwhile was lost.
   */
  private async askEdges(
    since: Record<string, number>,
    after: number,
    waitFor: readonly string[],
    until?: Record<string, number>,
  ): Promise<{ events: Uint8Array[]; cut: string[]; silent: string[] }> {
    const request = encodeEdgeMessage({ op: 'ps.replay', origin: this.origin, since, after, ...(until && Object.keys(until).length > 0 ? { until } : {}) });
    const waitingFor = new Set(waitFor);
    waitingFor.delete(this.options.nodeId);
    const answers: DecodedEdgeMessage<PsReplayed>[] = [];
    await this.bus.gather(this.options.subject, request, {
      maxWaitMs: this.options.requestTimeoutMs,
      stallMs: this.options.gatherStallMs,
      awaiting: (raw) => {
        const answer = decodeEdgeMessage(raw[raw.length - 1], 'ps.replayed');
        if (answer) {
          answers.push(answer);
          waitingFor.delete(answer.message.edge);
        }
        return waitingFor.size > 0;
      },
    });
    if (waitingFor.size > 0) this.log.warn({ event: 'bus.replay_edges_silent', edges: [...waitingFor] });
    const events: Uint8Array[] = [];
    const cut: string[] = [];
    for (const envelope of answers) {
      if (envelope.message.truncated) cut.push(envelope.message.edge);
      let offset = 0;
      for (const entry of envelope.message.entries) {
        if (offset + entry.length > envelope.body.length) break;
        events.push(envelope.body.subarray(offset, offset + entry.length));
        offset += entry.length;
      }
    }
    return { events, cut, silent: [...waitingFor] };
  }

  /** Another edge reconnected: send it what this edge published that it may have missed. */
  private onRequest(message: BusMessage): void {
    const h = decodeEdgeMessage(message.data, 'ps.replay')?.message;
    if (!h) return;
    const edge = this.options.nodeId;
    // Its own question: answered at once, empty (the gather's first answer, from which it counts gatherStallMs).
    if (h.origin === this.origin) return respond(this.bus, message, encodeEdgeMessage({ op: 'ps.replayed', edge, entries: [] }));
    const since = h.since[this.origin];
    // What the asker holds from this edge already (it arrived after the asker reconnected): not sent again.
    const until = h.until?.[this.origin];
    const budget = Math.floor(this.bus.maxPayload / 2);
    const entries: { length: number }[] = [];
    const bodies: Uint8Array[] = [];
    let bytes = 0;
    let truncated = false;
    // The window holds here to the millisecond (the log is trimmed at a publish and on the sweep timer): a receiver
    // that forgot this origin (forgetQuietOrigins) must not be sent what it delivered before.
    const oldest = performance.now() - this.options.windowMs;
    for (let i = this.head; i < this.entries.length; i++) {
      const e = this.entries[i];
      if (e.mono < oldest) continue;
      if (since !== undefined ? e.counter <= since : e.at < h.after) continue;
      if (until !== undefined && e.counter >= until) break;
      // The first event goes whatever its size, so an answer always brings the asker further; one that leaves no room
      // for the answer's own header (only one sent before the server's max_payload went down) cannot be replayed.
      if (entries.length === 0 && e.data.length > this.largestEvent()) {
        this.log.warn({ event: 'bus.replay_event_too_large', bytes: e.data.length });
        continue;
      }
      if (entries.length > 0 && bytes + e.data.length > budget) {
        truncated = true;
        break;
      }
      entries.push({ length: e.data.length });
      bodies.push(e.data);
      bytes += e.data.length;
    }
    respond(this.bus, message, encodeEdgeMessage({ op: 'ps.replayed', edge, entries, truncated }, Buffer.concat(bodies, bytes)));
  }

  close(): void {
    this.closed = true;
    this.wakeReplay?.();
    clearInterval(this.sweepTimer);
    this.subscription.unsubscribe();
  }
}
