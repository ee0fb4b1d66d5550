// How a sender's connect or request reaches a listener: directly down a control
// channel on this node (LocalRoute), or over the bus to whichever node holds
// a listener for the entity (RemoteRoute, see cluster-link.ts). Either way the
// rendezvous address in the notice points at this node, so bulk bytes never
// cross the bus (docs/architecture.md).
import { BusError, type Bus } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type HcAccept, type HcRequest } from '../bus/messages.ts';
import { TransientMap } from '../collections/transient-map.ts';
import type { ChannelExchange, ControlChannel } from './control-channel.ts';
import type { HybridEntity } from './entity-catalog.ts';
import type { HybridErrorCode } from './errors.ts';

/** What a listener is told on its control channel: accept a WebSocket, or take (or fetch) an HTTP request. */
export type ListenerNotice = { accept: HcAccept['accept'] } | { request: HcRequest['request'] };

/**
 * A notice as the listener gets it: an accept's `id` is the sender's tracking
 * id (`sb-hc-id`) when it gave one, as Azure tells it, else the relay's
 * rendezvous id. The relay's id, which finds the rendezvous, is in `address`.
 */
export function noticeForListener(notice: ListenerNotice): ListenerNotice {
  if (!('accept' in notice) || notice.accept.trackingId === undefined) return notice;
  const { trackingId, ...accept } = notice.accept;
  return { accept: { ...accept, id: trackingId } };
}

/** Routing failures that, once a notice has gone on from a listener that left, mean no other listener took it (ListenerGone). */
export const NONE_TOOK_OVER: ReadonlySet<HybridErrorCode> = new Set(['NoListener', 'EntityNotFound', 'BusUnavailable']);

/** Finds a route to an entity's listeners: one on this edge when there is one (round robin), else through the bus. */
export interface ListenerRoutes {
  routeTo(entity: HybridEntity): ListenerRoute;
}

export interface ListenerRoute {
  /** Sends a notice (a body, when given, follows it); resolves to the code to fail with when it could not. */
  deliver(notice: ListenerNotice, body?: Buffer): Promise<HybridErrorCode | undefined>;
  /** False once this node knows the listener has gone. */
  readonly isOpen: boolean;
  /** Lets answers on a local control channel find the exchange. */
  track(id: string, exchange: ChannelExchange): void;
  untrack(id: string): void;
  /** For logs: the control channel's id, or `bus`. */
  readonly via: string;
  /** The largest notice, body included, the route carries in one message (over the bus: its max_payload). */
  readonly maxMessageBytes: number;
  /** Set when no listener can take it, known without asking anyone (AbsentRoute): the code to fail with. */
  readonly absent?: HybridErrorCode;
}

/**
 * No listener for the entity anywhere, known on this edge: on the in-process bus no other edge holds listeners, so
 * an entity with none open here has none (`absent`: NoListener, or EntityNotFound for one made on first use, as the
 * bus would have answered). A relayed request is refused before its body is asked for (Expect: 100-continue).
 */
export class AbsentRoute implements ListenerRoute {
  readonly isOpen = false;
  readonly via = 'none';
  readonly maxMessageBytes = Infinity;

  constructor(readonly absent: HybridErrorCode) {}

  deliver(): Promise<HybridErrorCode | undefined> {
    return Promise.resolve(this.absent);
  }

  track(): void {}

  untrack(): void {}
}

export class LocalRoute implements ListenerRoute {
  constructor(private readonly channel: ControlChannel) {}

  get isOpen(): boolean {
    return this.channel.isOpen;
  }

  get via(): string {
    return this.channel.id;
  }

  /** A control channel takes what limits.controlMessageBytes allows; the route adds nothing to that. */
  readonly maxMessageBytes = Infinity;

  deliver(notice: ListenerNotice, body?: Buffer): Promise<HybridErrorCode | undefined> {
    return Promise.resolve(this.channel.send(noticeForListener(notice), body) ? undefined : 'ListenerGone');
  }

  track(id: string, exchange: ChannelExchange): void {
    this.channel.exchanges.set(id, exchange);
  }

  untrack(id: string): void {
    this.channel.exchanges.delete(id);
  }
}

export interface RemoteRouteOptions {
  bus: Bus;
  subject: string;
  /** This node, where answers on the listener's control channel are sent back. */
  nodeId: string;
  timeoutMs: number;
  /** Whom to tell which exchanges wait on which listener's edge (it fails them when that edge is gone). */
  edges: EdgeWatch;
}

/** Exchanges waiting on other edges' listeners, by edge (cluster-link.ts checks those edges are still there). */
export interface EdgeWatch {
  /** `exchange` waits on a listener of `node`; `watching`: that edge watches the listener for this one until told `hc.done`. */
  watch(node: string, id: string, exchange: ChannelExchange, watching: boolean): void;
  /** It waits no longer (its listener dialed or answered, or its sender left): `node` is told `hc.done` if it watches. */
  unwatch(node: string, id: string): void;
  /** Tells `node` to stop watching the listener for `id` (hc.done). */
  done(node: string, id: string): void;
}

/** Time left for a listener's edge's answer (hc.routed) to come back, when judging a routed notice expired. */
const ROUTED_ANSWER_MS = 100;
/** Edges asked in turn when one answers that it has no listener (any more) for the entity. */
const ROUTE_ATTEMPTS = 3;
/**
 * Pause before asking once more when no edge answered at all: a listener that
 * has just come online on another NATS server of the cluster is known to this
 * edge's server a moment later (interest travels between servers; measured
 * 2-45 ms on a loaded 2-core machine, the second attempt always reached it).
 */
const NO_RESPONDERS_RETRY_MS = 20;

export class RemoteRoute implements ListenerRoute {
  readonly isOpen = true;
  readonly via = 'bus';
  /** Exchanges still waiting for their listener, by id (TransientMaps, not Maps: collections/transient-map.ts says why). */
  private readonly tracked = new TransientMap<ChannelExchange>();
  /** Id -> the listener's edge it was routed to. */
  private readonly routedTo = new TransientMap<string>();

  get maxMessageBytes(): number {
    return this.options.bus.maxPayload;
  }

  constructor(
    private readonly entity: HybridEntity,
    private readonly options: RemoteRouteOptions,
  ) {}

  async deliver(notice: ListenerNotice, body?: Buffer): Promise<HybridErrorCode | undefined> {
    const { bus, subject, nodeId, timeoutMs } = this.options;
    const deadline = Date.now() + timeoutMs;
    // A notice still in NATS's buffers when this edge gave up (RouteTimeout) must not reach a listener later: a request run twice.
    // The last moment to tell a listener leaves the answer (hc.routed) time to come back before then.
    const expiresAt = deadline - Math.min(ROUTED_ANSWER_MS, timeoutMs / 4);
    const message: HcAccept | HcRequest =
      'accept' in notice
        ? { op: 'hc.accept', entity: this.entity.name, node: nodeId, expiresAt, accept: notice.accept }
        : { op: 'hc.request', entity: this.entity.name, node: nodeId, expiresAt, request: notice.request };
    const data = encodeEdgeMessage(message, body);
    const id = 'accept' in notice ? notice.accept.id : notice.request.id;
    let askedAgain = false;
    for (let attempt = 1; ; attempt++) {
      let answer: Uint8Array;
      try {
        answer = await bus.request(subject, data, Math.max(1, deadline - Date.now()));
      } catch (err) {
        const code = err instanceof BusError ? err.code : 'Unavailable';
        if (code === 'NoResponders' && !askedAgain && bus.reachesOtherNodes && Date.now() + NO_RESPONDERS_RETRY_MS < expiresAt) {
          askedAgain = true;
          await new Promise((resolve) => setTimeout(resolve, NO_RESPONDERS_RETRY_MS));
          continue;
        }
        if (code === 'NoResponders') return this.entity.dynamic ? 'EntityNotFound' : 'NoListener';
        if (code === 'Timeout') return 'RouteTimeout';
        if (code === 'TooLarge') return 'BadRequest';
        return 'BusUnavailable';
      }
      const reply = decodeEdgeMessage(answer, 'hc.routed')?.message;
      if (!reply) return 'RouteTimeout';
      if (!reply.ok) {
        // An edge whose last listener has just gone still had the entity's subscription when NATS picked it; another
        // edge may have one (NoListener means none on any edge): asked again, NATS picks among those still there.
        // Not asked again once the exchange has ended (its sender left): no listener runs a request nobody waits for.
        const notDelivered = reply.code === 'NoListener' || reply.code === 'ListenerGone';
        if (notDelivered && attempt < ROUTE_ATTEMPTS && Date.now() < expiresAt && this.tracked.has(id)) continue;
        return reply.code ?? 'NoListener';
      }
      if (reply.node !== undefined) {
        const exchange = this.tracked.get(id);
        // The listener may have dialed (or answered) before the answer came.
        if (!exchange) {
          if (reply.watching) this.options.edges.done(reply.node, id);
          return undefined;
        }
        this.routedTo.set(id, reply.node);
        this.options.edges.watch(reply.node, id, exchange, reply.watching === true);
      }
      return undefined;
    }
  }

  // Answers come back on this node's bus subject and find the exchange by id.
  track(id: string, exchange: ChannelExchange): void {
    this.tracked.set(id, exchange);
  }

  untrack(id: string): void {
    this.tracked.delete(id);
    const node = this.routedTo.get(id);
    if (node === undefined) return;
    this.routedTo.delete(id);
    this.options.edges.unwatch(node, id);
  }
}
