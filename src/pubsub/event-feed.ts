// How pub/sub events travel between edges, seen from a hub: a hub delivers an
// event to its own members, then publishes it through the feed; events from
// other edges come out of the feed to the hub that registered for them, each
// once and in order per publishing edge. The feed is the one seam between a
// hub and the way events cross the cluster: DirectFeed when there is nobody
// to reach (the memory bus), ReplayingFeed (replaying-feed.ts) on core NATS.
import { randomBytes } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import type { PsSend } from '../bus/messages.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** Delivers one event from another edge to a hub's local members. */
export type DeliverEvent = (event: PsSend, body: Buffer) => void;

export interface EventFeed {
  /** A new cluster-wide event id, `origin:counter` (origin: this edge process). */
  nextMid(): string;
  /** The largest ps.send envelope the feed carries (and, on core NATS, can replay) on the bus as it is now. */
  largestEvent(): number;
  /** Sends an event this edge accepted (and delivered to its own members) to the other edges: its ps.send envelope. */
  publish(subject: string, mid: string, data: Uint8Array): void;
  /** An event another edge published, as the bus brought it. */
  receive(event: PsSend, body: Buffer): void;
  /** Where the events of one hub (by lower-case name) go. */
  register(hubKey: string, deliver: DeliverEvent): void;
  /** The hub is gone (a reload removed it): its events go nowhere, unless another registered since. */
  unregister(hubKey: string, deliver: DeliverEvent): void;
  /** Every event other edges published since a time (their clocks), as ps.send envelopes, where the feed keeps them. */
  publishedSince?(after: number, edges: readonly string[]): Promise<Uint8Array[]>;
  /** Per origin, the highest event counter this edge has delivered, where the feed counts them. */
  seen?(): Record<string, number>;
  /** While events may still be missing here (NATS away, or a replay running): since when, this edge's clock. */
  missingSince?(): number | undefined;
  close(): void;
}

/** This edge process as an event origin: a restarted edge is a new origin. */
export function newOrigin(nodeId: string): string {
  return `${nodeId}.${randomBytes(4).toString('hex')}`;
}

/** The node id in an origin (newOrigin's `nodeId.boot`). */
export function nodeOfOrigin(origin: string): string {
  const dot = origin.lastIndexOf('.');
  return dot > 0 ? origin.slice(0, dot) : origin;
}

/** Publishes and receives as the bus does, with nothing kept: the memory bus, where no other edge exists. */
export class DirectFeed implements EventFeed {
  private counter = 0;
  private readonly hubs = new Map<string, DeliverEvent>();
  private readonly origin: string;

  constructor(
    private readonly bus: Bus,
    nodeId: string,
  ) {
    this.origin = newOrigin(nodeId);
  }

  nextMid(): string {
    return `${this.origin}:${++this.counter}`;
  }

  largestEvent(): number {
    return this.bus.maxPayload;
  }

  publish(subject: string, _mid: string, data: Uint8Array): void {
    this.bus.publish(subject, data);
  }

  receive(event: PsSend, body: Buffer): void {
    this.hubs.get(asciiLowerCase(event.hub))?.(event, body);
  }

  register(hubKey: string, deliver: DeliverEvent): void {
    this.hubs.set(hubKey, deliver);
  }

  unregister(hubKey: string, deliver: DeliverEvent): void {
    if (this.hubs.get(hubKey) === deliver) this.hubs.delete(hubKey);
  }

  close(): void {}
}
