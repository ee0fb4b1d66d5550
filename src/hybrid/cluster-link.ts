// Hybrid connections across edge nodes (docs/architecture.md, "A connect across
// edges"). A node holding listeners for an entity
// subscribes to the entity's subject in the queue group `listeners`, so a
// connect or request routed by another node reaches exactly one holder, which
// pushes the notice (its address names the sender's node) down one of its
// control channels. A listener's answer on the control channel goes back to
// the sender's node on that node's subject, addressed by rendezvous id.
// A listener is told it is online once that subscription is on the NATS
// server (a flush), so that a sender on any edge of that server finds it.
import { randomBytes } from 'node:crypto';
import { BusError, respond, type Bus, type BusMessage, type BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type HcFailed, type HcResponse } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { Logger } from '../telemetry/logger.ts';
import { pendingLimitReached, type HybridContext } from './context.ts';
import type { ChannelExchange, ControlChannel, ListenerResponse } from './control-channel.ts';
import type { HybridEntity } from './entity-catalog.ts';
import { HttpExchange } from './http-exchange.ts';
import { RemoteRoute, noticeForListener, type EdgeWatch, type ListenerRoute } from './listener-route.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { TransientMap } from '../collections/transient-map.ts';

const LISTENER_QUEUE = 'listeners';

/**
 * This process's address for hybrid-connection answers between edges: its node id and a random part of its own,
 * so a process that starts again under the same node id (fixed in its config, or hostname-pid 1 in a container)
 * does not answer for the one before it: what waited on the old process's listeners hears "no responders" and
 * fails (502 ListenerGone) instead of at its timeout. At most 64 characters, as every edge checks a node's name
 * (schemas/bus-message.schema.json, nodeId).
 */
export function hybridLinkId(nodeId: string): string {
  return `${nodeId.slice(0, 55)}.${randomBytes(4).toString('hex')}`;
}
/** How often a sender's edge checks that the listeners' edges it waits on are still there. */
const ALIVE_CHECK_MS = 1000;
/**
 * How long a listeners' edge must be unreachable ("no responders" at every check) before what waits on it
 * fails: an edge whose NATS connection blips (a server failover, a reconnect) is back well within it, and its
 * listeners answer then; one killed is given up on after this instead of at acceptMs or httpResponseMs.
 */
const EDGE_GONE_AFTER_MS = 2000;
/**
 * How long a connect or request waits on another edge before each check asks that edge whether it still watches it:
 * the listener's answer (hc.response, hc.failed) may have been lost on the way, published while the sender's edge or
 * the listener's was off NATS (its connection cut, its server gone or stalled). An edge that no longer watches one
 * sent what it had; an answer sent before its reply comes first (one connection each way), so one not come is lost,
 * and the sender hears 502 ListenerGone then, not 504 at timeouts.httpResponseMs or acceptMs. Answers quicker than
 * this are never asked about.
 */
const ASK_IDS_AFTER_MS = 2000;
/**
 * Ids named in one hc.alive (its schema's maxItems: edges of every version take it), about 40 bytes each on the bus.
 * A check asks as many questions as its due ids need, every one of them named at every check.
 */
const MAX_IDS_ASKED = 1000;
/** Bus bytes kept in a question for what is not its ids (the envelope, `op`, the array's brackets). */
const QUESTION_ROOM_BYTES = 64;
/** An id's bytes in a question: a rendezvous id (36 characters), its quotes and comma. */
const ID_BYTES = 39;
/**
 * What a listener's edge adds to timeouts.httpResponseMs before it forgets a routed request nobody asked about: the
 * sender's edge names it in hc.alive from ASK_IDS_AFTER_MS on, then every ALIVE_CHECK_MS (however many wait there:
 * checkEdges), each time starting it again.
 */
const WATCH_GRACE_MS = ASK_IDS_AFTER_MS + 2 * ALIVE_CHECK_MS;

export class HybridClusterLink implements EdgeWatch {
  /** The entity's subscription while this node has listeners for it, and when the NATS server had it (a flush). */
  private readonly entitySubscriptions = new Map<string, { subscription: BusSubscription; routable: Promise<void> }>();
  /** On a sender's edge: exchanges waiting on another edge's listener, by that edge (each edge's a TransientMap: collections/transient-map.ts says why). */
  private readonly waitingOn = new Map<string, TransientMap<{ exchange: ChannelExchange; watching: boolean; since: number }>>();
  private aliveTimer: NodeJS.Timeout | undefined;
  /** Edges waited on that answered "no responders" at every check since (when the first of them was asked). */
  private readonly unreachableSince = new Map<string, number>();
  /**
   * Listeners told to dial another node, or asked a request whose sender is on another node, watched for that node
   * until it says `hc.done` (or the listener answered, or the watch's own timeout).
   */
  readonly dialWatches = new TransientMap<RoutedWatch>();

  /** Starts watching a connect or request routed here for `entityKey`: it counts against limits.pendingPerEntity until unwatched. */
  watchRouted(id: string, watch: RoutedWatch, entityKey: string): void {
    // The same id routed twice (asked again): the earlier watch ends, uncounted.
    this.dialWatches.get(id)?.done();
    this.dialWatches.set(id, watch);
    this.ctx.routedHere.set(entityKey, (this.ctx.routedHere.get(entityKey) ?? 0) + 1);
  }

  /** Ends `watch` (once: a second call finds it gone). */
  unwatchRouted(id: string, watch: RoutedWatch, entityKey: string): void {
    if (this.dialWatches.get(id) !== watch) return;
    this.dialWatches.delete(id);
    const left = (this.ctx.routedHere.get(entityKey) ?? 0) - 1;
    if (left > 0) this.ctx.routedHere.set(entityKey, left);
    else this.ctx.routedHere.delete(entityKey);
  }
  private readonly nodeSubscription: BusSubscription;
  private routing = true;

  constructor(
    private readonly bus: Bus,
    private readonly subjects: Subjects,
    private readonly nodeId: string,
    private readonly ctx: HybridContext,
    private readonly log: Logger,
    private readonly requestTimeoutMs: number,
  ) {
    this.nodeSubscription = bus.subscribe(subjects.nodeHybrid(nodeId), (m) => this.onAnswer(m));
  }

  /** A route over the bus for an entity with no open listener on this node. */
  remoteRoute(entity: HybridEntity): ListenerRoute {
    return new RemoteRoute(entity, {
      bus: this.bus,
      subject: this.subjects.hybridEntity(entity.key),
      nodeId: this.nodeId,
      timeoutMs: this.requestTimeoutMs,
      edges: this,
    });
  }

  // --- on the node holding the sender: are the listeners' edges still there? ------------------

  watch(node: string, id: string, exchange: ChannelExchange, watching: boolean): void {
    let waiting = this.waitingOn.get(node);
    if (!waiting) this.waitingOn.set(node, (waiting = new TransientMap()));
    waiting.set(id, { exchange, watching, since: Date.now() });
    if (!this.aliveTimer) {
      this.aliveTimer = setInterval(() => this.checkEdges(), ALIVE_CHECK_MS);
      this.aliveTimer.unref();
    }
  }

  unwatch(node: string, id: string): void {
    const waiting = this.waitingOn.get(node);
    const entry = waiting?.get(id);
    if (!waiting || !entry) return;
    waiting.delete(id);
    if (entry.watching) this.done(node, id);
    if (waiting.size > 0) return;
    this.waitingOn.delete(node);
    this.unreachableSince.delete(node);
    if (this.waitingOn.size === 0) {
      clearInterval(this.aliveTimer);
      this.aliveTimer = undefined;
    }
  }

  /** The listener's edge has answered `id` (and stopped watching it). */
  private answered(id: string): void {
    for (const waiting of this.waitingOn.values()) {
      const entry = waiting.get(id);
      if (entry) entry.watching = false;
    }
  }

  /** The listener's node stops watching for this id (it would otherwise hold a timer, and report a listener drop, for timeouts.acceptMs). */
  done(node: string, id: string): void {
    try {
      this.bus.publish(this.subjects.nodeHybrid(node), encodeEdgeMessage({ op: 'hc.done', id }));
    } catch {
      // The bus is away: the watch ends at its own timeout.
    }
  }

  /**
   * An edge that died (killed, its NATS connection gone) leaves no subscription behind: NATS answers a question to
   * it "no responders" at once. Once it has answered so for EDGE_GONE_AFTER_MS, what waited on its listeners fails
   * (502 ListenerGone) instead of at its own timeout (acceptMs, httpResponseMs); an edge back on NATS before then
   * (a reconnect) still answers for its listeners. An edge that does not answer in time may only be slow: its
   * exchanges wait on.
   *
   * Every id due (idsToAsk) is named at every check, MAX_IDS_ASKED to a question: the listener's edge keeps a
   * request's watch only while it is named (RemoteHttpRelay), and finds an answer lost only for an id named. Before,
   * one question named the 1,000 longest waiting: past 1,000 waiting on one edge, the younger ones' lost answers were
   * found only at their timeout (504), and their watches on the listener's edge ended at httpResponseMs and the grace
   * (an upload outlasting it had its listener's answer dropped).
   */
  private checkEdges(): void {
    for (const [node, waitingHere] of this.waitingOn) {
      const askedAt = Date.now();
      const slices = slicesOf(idsToAsk(waitingHere, askedAt), this.idsPerQuestion());
      // The first question (one without ids when none is due) also says whether the edge is there.
      slices.forEach((ids, i) => this.askAlive(node, ids, askedAt, i === 0));
    }
  }

  /** Ids that fit one question: MAX_IDS_ASKED, or fewer under a NATS server's max_payload too small for them. */
  private idsPerQuestion(): number {
    return Math.max(1, Math.min(MAX_IDS_ASKED, Math.floor((this.bus.maxPayload - QUESTION_ROOM_BYTES) / ID_BYTES)));
  }

  private askAlive(node: string, ids: string[], askedAt: number, presence: boolean): void {
    const question = encodeEdgeMessage(ids.length > 0 ? { op: 'hc.alive', ids } : { op: 'hc.alive' });
    this.bus.request(this.subjects.nodeHybrid(node), question, this.requestTimeoutMs).then(
      (answer) => {
        this.unreachableSince.delete(node);
        const gone = decodeEdgeMessage(answer, 'hc.alive')?.message.gone;
        if (gone && gone.length > 0) this.answersLost(node, gone);
      },
      (err) => {
        if (!presence || !(err instanceof BusError) || err.code !== 'NoResponders') return;
        const waiting = [...(this.waitingOn.get(node)?.values() ?? [])];
        if (waiting.length === 0) return;
        const since = this.unreachableSince.get(node) ?? askedAt;
        this.unreachableSince.set(node, since);
        if (Date.now() - since < EDGE_GONE_AFTER_MS) return;
        this.unreachableSince.delete(node);
        this.log.warn({ event: 'hybrid.edge_gone', node, waiting: waiting.length });
        for (const { exchange } of waiting) exchange.listenerLost();
      },
    );
  }

  /** `node` no longer watches these ids: what still waits on them with nothing heard lost its answer (502 ListenerGone). */
  private answersLost(node: string, ids: string[]): void {
    const waiting = this.waitingOn.get(node);
    const lost = ids.map((id) => waiting?.get(id)).filter((entry) => entry?.watching === true);
    if (lost.length === 0) return;
    this.log.warn({ event: 'hybrid.answers_lost', node, waiting: lost.length });
    for (const entry of lost) entry!.exchange.listenerLost();
  }

  /**
   * Subscribes while this node has (or is about to have) at least one listener for the entity.
   * Resolves once other edges can route to it: the subscription has reached the NATS server
   * (bounded by the bus's flush; at once on the memory bus or while NATS is away).
   */
  listenersChanged(entity: HybridEntity, count: number): Promise<void> {
    const current = this.entitySubscriptions.get(entity.key);
    if (count > 0 && !current && this.routing) {
      const subject = this.subjects.hybridEntity(entity.key);
      const subscription = this.bus.subscribe(subject, (m) => this.onRouted(entity, m), { queue: LISTENER_QUEUE });
      const routable = this.bus.flush().catch(() => undefined);
      this.entitySubscriptions.set(entity.key, { subscription, routable });
      return routable;
    }
    if (count === 0 && current) {
      // Drained: a connect or request NATS gave this edge before the server heard it leave is answered (NoListener:
      // the sender's edge asks another), not dropped for the sender to wait out bus.requestTimeoutMs (504).
      current.subscription.drain();
      this.entitySubscriptions.delete(entity.key);
    }
    return current?.routable ?? Promise.resolve();
  }

  // --- on the node holding the listener ----------------------------------------

  private onRouted(entity: HybridEntity, message: BusMessage): void {
    const routed = decodeEdgeMessage(message.data, 'hc.accept', 'hc.request');
    if (!routed) {
      this.log.warn({ event: 'bus.invalid_message', subject: message.subject });
      return;
    }
    const m = routed.message;
    // The sender's edge has answered its sender already (504 RouteTimeout), or will before this answer reaches it: a
    // listener told now would run the request anyway. (Edges' clocks must agree to well within bus.requestTimeoutMs.)
    if (m.expiresAt !== undefined && Date.now() > m.expiresAt) {
      this.log.warn({ event: 'bus.routed_expired', op: m.op, from: m.node, lateMs: Date.now() - m.expiresAt });
      return;
    }
    // A draining edge takes no new work: the sender's edge asks another.
    const channel = this.routing && asciiLowerCase(m.entity) === entity.key ? this.ctx.listeners.pick(entity.key) : undefined;
    if (!channel) {
      respond(this.bus, message, encodeEdgeMessage({ op: 'hc.routed', ok: false, code: 'NoListener' }));
      return;
    }
    // The listener's edge holds what waits for its listeners from every edge: one limit for them all (the sender hears 503 TooManyPending).
    if (pendingLimitReached(this.ctx, entity)) {
      respond(this.bus, message, encodeEdgeMessage({ op: 'hc.routed', ok: false, code: 'TooManyPending' }));
      return;
    }
    let sent: boolean;
    let watch: RemoteDialWatch | RemoteHttpRelay | undefined;
    if (m.op === 'hc.accept') {
      if (m.node !== undefined) watch = new RemoteDialWatch(m.accept.id, m.node, this, channel, this.ctx.config.timeouts.acceptMs);
      sent = channel.send(noticeForListener({ accept: m.accept }));
    } else {
      // A full request is answered here, on the control channel; a notice to fetch a large one may be answered
      // on either path (the rendezvous at the sender's node, or here). Either way it is watched: a sender that
      // leaves (or times out) before the answer frees the listener's side at once.
      watch = new RemoteHttpRelay(m.request.id, m.node, this, channel, this.ctx.config.timeouts.httpResponseMs);
      sent = channel.send({ request: m.request }, routed.body.length > 0 ? routed.body : undefined);
    }
    if (!sent) {
      // Not told: nothing to watch (a watch left would report this listener's drop for an id the sender's node
      // has asked another edge about meanwhile).
      watch?.done();
      respond(this.bus, message, encodeEdgeMessage({ op: 'hc.routed', ok: false, code: 'ListenerGone' }));
      return;
    }
    channel.log.info({ event: 'bus.routed', op: m.op, listener: channel.id, from: m.op === 'hc.request' ? m.node : undefined });
    // Naming this node lets the sender's node check it is still there; `watching` asks for `hc.done` once the listener dialed (or the sender left).
    respond(this.bus, message, encodeEdgeMessage({ op: 'hc.routed', ok: true, node: this.nodeId, watching: watch ? true : undefined }));
  }

  /**
   * Here; and of `ids`, those this node no longer watches (it sent their answer, which the asker has not had). Those
   * it still watches are still awaited by the asker: their watch goes on (stillAwaited).
   */
  private answerAlive(message: BusMessage, ids: string[] | undefined): void {
    const gone = ids?.filter((id) => {
      const watch = this.dialWatches.get(id);
      watch?.stillAwaited?.();
      return watch === undefined;
    });
    respond(this.bus, message, encodeEdgeMessage(gone && gone.length > 0 ? { op: 'hc.alive', gone } : { op: 'hc.alive' }));
  }

  /** Sends a listener's answer back to the node holding the sender. */
  answer(node: string, answer: HcResponse | HcFailed, body?: Buffer): void {
    try {
      this.bus.publish(this.subjects.nodeHybrid(node), encodeEdgeMessage(answer, body));
    } catch (err) {
      this.log.warn({ event: 'bus.answer_failed', node, err: (err as Error).message });
      if (answer.op === 'hc.failed' || (err instanceof BusError && err.code !== 'TooLarge')) return;
      // An answer too large for the bus: the sender hears that the listener's response could not be relayed.
      try {
        this.bus.publish(this.subjects.nodeHybrid(node), encodeEdgeMessage({ op: 'hc.failed', id: answer.id, code: 'BadListenerResponse' }));
      } catch {
        // The bus is away: the sender's edge times the request out (504).
      }
    }
  }

  // --- on the node holding the sender ---------------------------------------------

  private onAnswer(message: BusMessage): void {
    const decoded = decodeEdgeMessage(message.data, 'hc.response', 'hc.failed', 'hc.done', 'hc.alive');
    // On the listener's node: the sender's node no longer waits for this listener; or asks whether this node is there.
    if (decoded?.message.op === 'hc.done') return this.dialWatches.get(decoded.message.id)?.done();
    if (decoded?.message.op === 'hc.alive') return this.answerAlive(message, decoded.message.ids);
    const exchange = decoded ? this.ctx.rendezvous.get(decoded.message.id) : undefined;
    // A connect whose listener dropped its control channel before dialing.
    if (decoded?.message.op === 'hc.failed' && exchange?.action === 'accept') return exchange.listenerLost();
    if (!decoded || !(exchange instanceof HttpExchange)) {
      this.log.info({ event: 'bus.answer_unmatched', op: decoded?.message.op });
      return;
    }
    const m = decoded.message;
    // The listener's edge forgot the request as it sent this: no `hc.done` is owed when the exchange finishes.
    this.answered(m.id);
    if (m.op === 'hc.failed') return m.code === 'ListenerGone' ? exchange.listenerLost() : exchange.fail(m.code);
    const consume = exchange.onControlResponse(m.response);
    if (m.response.body) consume?.(decoded.body);
  }

  /** Other nodes stop routing connects and requests here (shutdown); answers to this node's own requests still arrive. */
  stopRouting(): void {
    this.routing = false;
    // Drained as above: what NATS gave this edge meanwhile is answered NoListener (onRouted), so it goes to another edge.
    for (const { subscription } of this.entitySubscriptions.values()) subscription.drain();
    this.entitySubscriptions.clear();
  }

  close(): void {
    this.stopRouting();
    this.nodeSubscription.unsubscribe();
    clearInterval(this.aliveTimer);
  }
}

/** The ids of `waiting` watched there for ASK_IDS_AFTER_MS or more (all of them: checkEdges says why). */
function idsToAsk(waiting: TransientMap<{ watching: boolean; since: number }>, askedAt: number): string[] {
  const due: string[] = [];
  waiting.forEach((entry, id) => {
    if (entry.watching && askedAt - entry.since >= ASK_IDS_AFTER_MS) due.push(id);
  });
  return due;
}

/** `ids` in slices of at most `size`; one empty slice when there are none (the question without ids). */
function slicesOf(ids: string[], size: number): string[][] {
  if (ids.length === 0) return [[]];
  const slices: string[][] = [];
  for (let i = 0; i < ids.length; i += size) slices.push(ids.slice(i, i + size));
  return slices;
}

/** What the listener's node keeps for a connect or request another node routed to it, until `done`. */
interface RoutedWatch {
  done(): void;
  /** The sender's node says it still waits (it named the id in hc.alive). */
  stillAwaited?(): void;
}

/**
 * On the listener's node: until the sender's node can no longer be waiting
 * (timeouts.acceptMs), tells it when the listener told to accept a connect
 * drops its control channel, so the sender hears it at once (502
 * ListenerGone). The sender's node says `hc.done` once the listener has
 * dialed or the sender left, and the watch ends then. While it waits, a
 * draining edge keeps the listener's control channel open, as for a sender
 * of its own.
 */
class RemoteDialWatch implements ChannelExchange {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly id: string,
    private readonly node: string,
    private readonly link: HybridClusterLink,
    private readonly channel: ControlChannel,
    acceptMs: number,
  ) {
    channel.exchanges.set(id, this);
    link.watchRouted(id, this, channel.entity.key);
    this.timer = setTimeout(() => this.done(), acceptMs);
    this.timer.unref();
  }

  onControlResponse(): undefined {
    return undefined;
  }

  badResponse(): void {}

  listenerLost(): void {
    this.link.answer(this.node, { op: 'hc.failed', id: this.id, code: 'ListenerGone' });
    this.done();
  }

  done(): void {
    clearTimeout(this.timer);
    if (this.channel.exchanges.get(this.id) === this) this.channel.exchanges.delete(this.id);
    this.link.unwatchRouted(this.id, this, this.channel.entity.key);
  }
}

/**
 * On the listener's node: waits for the answer to a request routed from another node (its whole request, or a
 * notice to fetch it by rendezvous), until the listener answers on the control channel, the sender's node says
 * `hc.done` (its sender left or timed out, or the answer came by rendezvous) or, with no word from the sender's
 * node, timeouts.httpResponseMs and the time for its first hc.alive (WATCH_GRACE_MS); tells the sender's node when
 * the listener drops its control channel first. Each hc.alive naming the request starts that time again: the
 * sender's node waits longer than httpResponseMs from the routing for a request whose body it streams to the
 * listener's rendezvous leg (its wait starts again with each piece, and when the body is all sent). Before, the
 * watch ended httpResponseMs after the routing: the listener's answer on the control channel to an upload that took
 * longer was dropped (listener.unknown_response), the sender got 504, and the sender's node logged
 * hybrid.answers_lost every second meanwhile.
 */
class RemoteHttpRelay implements ChannelExchange, RoutedWatch {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly id: string,
    private readonly node: string,
    private readonly link: HybridClusterLink,
    private readonly channel: ControlChannel,
    timeoutMs: number,
  ) {
    channel.exchanges.set(id, this);
    link.watchRouted(id, this, channel.entity.key);
    // The sender's node times the request out itself; this only forgets it.
    this.timer = setTimeout(() => this.done(), timeoutMs + WATCH_GRACE_MS);
    this.timer.unref();
  }

  stillAwaited(): void {
    this.timer.refresh();
  }

  onControlResponse(response: ListenerResponse): ((body: Buffer) => void) | undefined {
    if (!response.body) {
      this.link.answer(this.node, { op: 'hc.response', id: this.id, response });
      this.done();
      return undefined;
    }
    return (body) => {
      this.link.answer(this.node, { op: 'hc.response', id: this.id, response }, body);
      this.done();
    };
  }

  badResponse(): void {
    this.link.answer(this.node, { op: 'hc.failed', id: this.id, code: 'BadListenerResponse' });
    this.done();
  }

  listenerLost(): void {
    this.link.answer(this.node, { op: 'hc.failed', id: this.id, code: 'ListenerGone' });
    this.done();
  }

  done(): void {
    clearTimeout(this.timer);
    if (this.channel.exchanges.get(this.id) === this) this.channel.exchanges.delete(this.id);
    this.link.unwatchRouted(this.id, this, this.channel.entity.key);
  }
}
