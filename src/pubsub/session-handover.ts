// Moving a reliable session to the node a client reconnected to
// (docs/protocols/web-pubsub.md, "Reliable sessions", across edges). The taking node asks the
// holding node on the connection's subject, in four stages:
//   begin   the holder checks the reconnection token, drops the old socket and
//           sends the session's identity (user, permissions, groups, ackIds);
//           it keeps buffering events meanwhile;
//           the taker joins the same groups and subscribes (events now reach
//           both nodes; the taker keeps its own aside);
//   commit  the holder forgets the connection (and its subscriptions) and says
//           which sequence id was last, and the groups and permissions as they
//           are then (the taker applies what changed since begin);
//   page    the taker fetches the unacknowledged events, sequence ids kept, in
//           pages that fit the bus;
//   abort   (before commit) the holder keeps the session as it was.
// The taker then appends the events it kept aside that the holder did not
// have (events carry cluster-wide ids), and, with the NATS bus, the events
// that reached neither node while the group interest moved, fetched from the
// publishing edges' logs (replaying-feed.ts): nothing is lost or doubled.
import { BusError, respond, type BusMessage, type BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type PsEntries, type PsHandover, type PsSession } from '../bus/messages.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseMid } from './replaying-feed.ts';
import type { Bus } from '../bus/bus.ts';
import type { Target } from '../bus/messages.ts';
import { filterFromBus } from './connection-filter.ts';
import { SessionUnavailable } from './errors.ts';
import { isMessageBody, sharedMessageOf } from './downstream.ts';
import type { Hub } from './hub.ts';
import { ConnectionPermissions } from './permissions.ts';
import { PubSubConnection, closeClientSocket, type ConnectionLimits, type TakenEvent } from './pubsub-connection.ts';
import type { ReliableSession, SessionEntry } from './reliable-session.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { owned } from '../collections/own-bytes.ts';

/** What a hand-over needs of the hub it moves sessions in (hub-cluster.ts). */
export interface HandoverHub {
  readonly name: string;
  readonly key: string;
  readonly bus: Bus;
  readonly local: Hub;
  /** The fields every hub message from this node carries. */
  readonly from: { origin: string; hub: string };
  subjectOf(target: Target): string;
  /** The other edges on the hub's roster (node ids). */
  otherEdges(): string[];
}

export interface HandoverDeps {
  log: Logger;
  limits: ConnectionLimits;
  requestTimeoutMs: number;
  /** Forgets a connection handed to another node (no close, no session clear). */
  release(connection: PubSubConnection): void;
  /** With the NATS bus: every event other edges published since a time (replaying-feed.ts), waiting for `edges`' answers. */
  publishedSince?: (after: number, edges: readonly string[]) => Promise<Uint8Array[]>;
  /** With the NATS bus: per origin, the highest event counter this edge has delivered. */
  seen?: () => Record<string, number>;
  /** With the NATS bus: since when events may still be missing here (a replay running), or undefined. */
  missingSince?: () => number | undefined;
}

type Stage = PsHandover['stage'];

/** How far before the hand-over began to look for missed events (edges' clocks differ). */
const CLOCK_MARGIN_MS = 1000;

/**
 * Puts `event` before the first event in `list` from the same origin with a
 * higher counter (so each origin's events stay in order), or at the end.
 */
export function insertInOriginOrder(list: { mid: string }[], event: { mid: string }): void {
  const parsed = parseMid(event.mid);
  if (parsed) {
    for (let i = 0; i < list.length; i++) {
      const other = parseMid(list[i].mid);
      if (other && other.origin === parsed.origin && other.counter > parsed.counter) {
        list.splice(i, 0, event);
        return;
      }
    }
  }
  list.push(event);
}

/** Pause before asking again for a session that is still moving. */
export const BUSY_RETRY_MS = 25;

/** Largest page of events, whatever the bus allows. */
const MAX_PAGE_BYTES = 4 * 1024 * 1024;

export class SessionHandover {
  /** Sessions given away at commit, kept until the taker has paged them out. */
  private readonly given = new Map<string, { session: ReliableSession; lastSeq: number; timer: NodeJS.Timeout; pages: BusSubscription }>();

  constructor(
    private readonly hub: HandoverHub,
    private readonly deps: HandoverDeps,
  ) {}

  private get holdMs(): number {
    return this.deps.requestTimeoutMs * 4;
  }

  // --- on the node holding the session -------------------------------------------

  onRequest(message: BusMessage, h: PsHandover): void {
    const answer = (fields: PsSession | PsEntries, body?: Buffer) => respond(this.hub.bus, message, encodeEdgeMessage(fields, body));
    const refuse = () => answer({ op: 'ps.session', ok: false });
    if (h.stage === 'page') return; // answered by the subscription made at commit
    const connection = this.hub.local.connections.get(h.connectionId);
    const session = connection?.session;
    if (!connection || !session || connection.ended || !session.tokenMatches(h.token ?? '')) return refuse();
    switch (h.stage) {
      case 'begin': {
        if (connection.protocol !== h.protocol) return refuse();
        // Still moving from an earlier reconnect: the asker tries again shortly.
        if (connection.handover) return answer({ op: 'ps.session', ok: false, busy: true });
        const socket = connection.socket;
        connection.detach(Date.now());
        // A socket still open (its client reconnected to the taking edge without closing it) is told and closed, not
        // dropped, as on a recovery on this edge (session-recovery.ts).
        if (socket) closeClientSocket(socket, connection.wire, 'SessionMoved');
        connection.handover = {
          givingTimer: setTimeout(() => {
            connection.handover = undefined;
            this.deps.log.warn({ event: 'pubsub.handover_abandoned', hub: this.hub.name, connectionId: connection.id });
          }, this.holdMs),
          // Only this edge's commit or abort counts: a late one from a taker that gave up is not for this move.
          givingTo: h.origin,
        };
        return answer({
          op: 'ps.session',
          ok: true,
          userId: connection.userId,
          permissions: connection.permissions.snapshot(),
          groups: [...connection.groups],
          ackIds: connection.answeredAckIds(),
          reconnectionToken: session.reconnectionToken,
          states: connection.states,
          firstSeq: session.firstSequenceId,
        });
      }
      case 'commit': {
        if (!connection.handover?.givingTimer || connection.handover.givingTo !== h.origin) return refuse();
        clearTimeout(connection.handover.givingTimer);
        connection.handover = undefined;
        const lastSeq = session.lastSequenceId;
        const id = connection.id;
        // The groups and permissions as they are now (before release leaves the groups): a change this edge applied
        // since `begin` (a REST call through it, or one that reached it before the taker's subscription did) is the
        // taker's to keep.
        const state = { groups: [...connection.groups], permissions: connection.permissions.snapshot() };
        // An earlier hand-over of this id from here is over: its pages answer no more.
        this.forgetGiven(id);
        // Releasing the connection leaves its subject; the pages are asked for
        // there, so a subscription of its own stays until they are fetched.
        // With nothing unacknowledged no page is asked for, and a subscription
        // kept for holdMs would answer a later hand-over of the same session
        // (from another edge) with this one's empty pages: none is made.
        if (session.unacknowledged > 0) {
          const pages = this.hub.bus.subscribe(this.hub.subjectOf({ kind: 'connection', name: id }), (m) => this.onPageRequest(m));
          const timer = setTimeout(() => this.forgetGiven(id), this.holdMs);
          this.given.set(id, { session, lastSeq, timer, pages });
        }
        this.deps.release(connection);
        this.deps.log.info({ event: 'pubsub.session_given', hub: this.hub.name, connectionId: connection.id, lastSeq });
        // Whatever this edge delivered is in the session (or acknowledged);
        // the taker looks for missed events only past these counters.
        // While this edge replays after an outage, events it has yet to deliver may be older than the hand-over:
        // the taker looks for them from the outage on (before, from the hand-over only, and they were lost).
        const missingSince = this.deps.missingSince?.();
        return answer({
          op: 'ps.session',
          ok: true,
          lastSeq,
          seen: this.deps.seen?.() ?? {},
          ...state,
          ...(missingSince !== undefined ? { missingSince } : {}),
        });
      }
      case 'abort':
        if (connection.handover?.givingTo !== h.origin) return answer({ op: 'ps.session', ok: true });
        if (connection.handover.givingTimer) clearTimeout(connection.handover.givingTimer);
        connection.handover = undefined;
        return answer({ op: 'ps.session', ok: true });
    }
  }

  private onPageRequest(message: BusMessage): void {
    const h = decodeEdgeMessage(message.data, 'ps.handover')?.message;
    if (!h || h.stage !== 'page' || asciiLowerCase(h.hub) !== this.hub.key) return;
    const answer = (fields: PsSession | PsEntries, body?: Buffer) => respond(this.hub.bus, message, encodeEdgeMessage(fields, body));
    this.page(h, answer, () => answer({ op: 'ps.session', ok: false }));
  }

  private forgetGiven(id: string): void {
    const given = this.given.get(id);
    if (!given) return;
    clearTimeout(given.timer);
    given.pages.unsubscribe();
    given.session.clear();
    this.given.delete(id);
  }

  private page(h: PsHandover, answer: (fields: PsEntries, body?: Buffer) => void, refuse: () => void): void {
    const given = this.given.get(h.connectionId);
    // Not the edge that gave this session: silent, so the one that did answers.
    if (!given) return;
    if (!given.session.tokenMatches(h.token ?? '')) return refuse();
    const budget = Math.min(MAX_PAGE_BYTES, Math.floor(this.hub.bus.maxPayload / 2));
    const entries: PsEntries['entries'] = [];
    const bodies: Buffer[] = [];
    let bytes = 0;
    for (const entry of given.session.after(h.after ?? 0)) {
      if (entries.length > 0 && bytes + entry.body.length > budget) break;
      entries.push({ seq: entry.sequenceId, mid: entry.mid, length: entry.body.length, expiresAt: entry.expiresAt });
      bodies.push(entry.body);
      bytes += entry.body.length;
    }
    const last = entries.length > 0 ? entries[entries.length - 1].seq : (h.after ?? 0);
    answer({ op: 'ps.entries', entries }, Buffer.concat(bodies, bytes));
    if (last >= given.lastSeq) this.forgetGiven(h.connectionId);
  }

  // --- on the node the client reconnected to --------------------------------------

  /**
   * Takes the session from whichever node holds it. Resolves to the restored
   * connection (in the hub, subscribed, not yet attached to a socket), or
   * undefined when no node has a session matching the token.
   */
  async take(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    if (!this.hub.bus.reachesOtherNodes) return undefined;
    const ask = (stage: Stage, after?: number) => this.ask({ connectionId, stage, token, protocol, after });
    const startedAt = Date.now();
    let s: PsSession | undefined;
    for (const deadline = Date.now() + this.deps.requestTimeoutMs; ; ) {
      s = await ask('begin').then(
        (a) => decodeEdgeMessage(a, 'ps.session')?.message,
        (err: unknown) => {
          // No edge listens for it (NoResponders): no such session. An edge that holds it but does not
          // answer in time (stalled: a pause, a long GC), or no bus: try again (before, the session was lost).
          if (err instanceof BusError && (err.code === 'Timeout' || err.code === 'Unavailable')) {
            // It reads the `begin` when it runs again: told to drop it after, it does not hold the session for a taker that left.
            void ask('abort').catch(() => undefined);
            throw new SessionUnavailable(`the edge holding the session did not answer: ${err.code}`);
          }
          return undefined;
        },
      );
      if (!s?.busy) break;
      // Still moving to another edge past this one's bound: the client tries again (before, refused 1008 while
      // the session lived on with the other taker).
      if (Date.now() > deadline) throw new SessionUnavailable('the session is still moving to another edge');
      await new Promise((r) => setTimeout(r, BUSY_RETRY_MS));
    }
    if (!s?.ok) return undefined;
    if (!s.permissions || !s.groups || s.firstSeq === undefined || !s.reconnectionToken) return undefined;
    const connection = new PubSubConnection(
      connectionId,
      this.hub.name,
      s.userId ?? null,
      ConnectionPermissions.fromSnapshot(s.permissions),
      protocol,
      this.deps.limits,
      s.reconnectionToken,
    );
    for (const id of s.ackIds ?? []) connection.rememberAckId(id);
    connection.states = s.states;
    const taking: TakenEvent[] = [];
    connection.handover = { taking };
    this.hub.local.add(connection);
    for (const group of s.groups) this.hub.local.join(connection, group);
    await this.hub.bus.flush();
    let committed = false;
    try {
      // Ended while taking (its buffer filled with events that came meanwhile): the holder keeps the session.
      if (connection.ended) throw new Error('ended while taking');
      const commit = decodeEdgeMessage(await ask('commit'), 'ps.session')?.message;
      const lastSeq = commit?.lastSeq;
      if (!commit?.ok || lastSeq === undefined) throw new Error('commit refused');
      committed = true;
      // What the holder changed after `begin` (found by review: a REST join through it in the meantime was answered
      // 200 and lost with the move). A holder of an older version says nothing of it.
      if (this.changedSinceBegin(connection, s, commit)) await this.hub.bus.flush();
      const entries: SessionEntry[] = [];
      for (let after = s.firstSeq - 1; after < lastSeq; ) {
        const page = decodeEdgeMessage(await ask('page', after), 'ps.entries');
        if (!page) throw new Error('page refused');
        const listed = page.message.entries;
        if (listed.length === 0) throw new Error('empty page');
        let offset = 0;
        for (const e of listed) {
          // Ids are dense after the first (ids the client acknowledged meanwhile may be gone before it): the session numbers them by position.
          if (e.seq <= after || (entries.length > 0 && e.seq !== after + 1) || offset + e.length > page.body.length) throw new Error('bad page');
          const body = Buffer.from(page.body.subarray(offset, offset + e.length));
          // Sent to the client as it is: it must be a data message.
          if (!isMessageBody(body)) throw new Error('bad page: an event that is not a data message');
          entries.push({ sequenceId: e.seq, mid: e.mid ?? '', body, position: 0, expiresAt: e.expiresAt });
          offset += e.length;
          after = e.seq;
        }
      }
      const had = new Set(entries.map((e) => e.mid));
      let recovered = 0;
      // Between the holder leaving the group subjects (commit) and this node's
      // subscriptions reaching every NATS server, an event can reach neither.
      // The publishing edges' logs have it: fetch, keep what is for this
      // connection and missing, and slot it in before later events from the same origin.
      if (this.deps.publishedSince) {
        const seen = commit.seen ?? {};
        // Every edge on the hub's roster is waited for: this edge may have had no event yet from one that publishes to it.
        const since = Math.min(startedAt, commit.missingSince ?? startedAt);
        const missed = await this.deps.publishedSince(since - CLOCK_MARGIN_MS, this.hub.otherEdges()).catch(() => []);
        // Deliveries went on into `taking` while waiting: look at it only now.
        const present = new Set(had);
        for (const m of taking) present.add(m.mid);
        for (const event of this.missedBy(connection, missed, present, seen)) {
          insertInOriginOrder(taking, event);
          recovered++;
        }
      }
      connection.handover = undefined;
      const session = connection.session!;
      session.restore(entries, lastSeq);
      for (const event of taking) {
        if (had.has(event.mid)) continue;
        had.add(event.mid);
        // Its own bytes, as restore() keeps the holder's: a small event's body is cut from an 8 KiB pool slab, which it
        // would keep alive for as long as the session holds it (a SharedMessage copies its own as the log takes it).
        if (session.push({ body: owned(event.body), mid: event.mid, position: 0, expiresAt: event.expiresAt }) === undefined) throw new Error('session buffer full');
      }
      this.deps.log.info({
        event: 'pubsub.session_taken',
        hub: this.hub.name,
        connectionId,
        events: session.unacknowledged,
        fromHolder: entries.length,
        missedInTransit: recovered,
      });
      return connection;
    } catch (err) {
      this.deps.log.warn({ event: 'pubsub.handover_failed', hub: this.hub.name, connectionId, committed, err: (err as Error).message });
      if (!committed) void ask('abort').catch(() => undefined);
      connection.handover = undefined;
      this.deps.release(connection);
      // What was restored is let go now, not when the collector finds the session.
      connection.session?.clear();
      return undefined;
    }
  }

  /**
   * Applies to the connection taken what its holder changed between `begin` and `commit`: groups joined or left
   * there, and a permission whose grants differ. True when it joined a group (its subject then wants a flush).
   */
  private changedSinceBegin(connection: PubSubConnection, begun: PsSession, committed: PsSession): boolean {
    let joined = false;
    if (committed.groups) {
      const before = new Set(begun.groups);
      const now = new Set(committed.groups);
      for (const group of now) {
        if (before.has(group) || connection.groups.has(group)) continue;
        this.hub.local.join(connection, group);
        joined = true;
      }
      for (const group of before) if (!now.has(group) && connection.groups.has(group)) this.hub.local.leave(connection, group);
    }
    if (committed.permissions && begun.permissions) {
      for (const permission of ['joinLeaveGroup', 'sendToGroup'] as const) {
        const then = committed.permissions[permission];
        if (JSON.stringify(then) !== JSON.stringify(begun.permissions[permission])) connection.permissions.replace(permission, then);
      }
    }
    return joined;
  }

  /** Of the events in `published`, those addressed to `connection` that it does not have. */
  private missedBy(
    connection: PubSubConnection,
    published: Uint8Array[],
    had: Set<string>,
    seen: Record<string, number>,
  ): TakenEvent[] {
    const out: TakenEvent[] = [];
    for (const data of published) {
      const decoded = decodeEdgeMessage(data, 'ps.send');
      if (!decoded) continue;
      const h = decoded.message;
      if (asciiLowerCase(h.hub) !== this.hub.key || had.has(h.mid) || h.excluded?.includes(connection.id)) continue;
      // The holder delivered everything up to seen[origin]: those are in the session or acknowledged.
      const id = parseMid(h.mid);
      if (!id || id.counter <= (seen[id.origin] ?? 0)) continue;
      const t = h.target;
      const filter = filterFromBus(h.filter);
      if (filter === null || (filter && !filter.matches(connection))) continue;
      const addressed =
        t.kind === 'all' ||
        (t.kind === 'group' && connection.groups.has(t.name)) ||
        (t.kind === 'user' && connection.userId === t.name) ||
        (t.kind === 'connection' && connection.id === t.name);
      const message = addressed ? sharedMessageOf(h, decoded.body) : undefined;
      if (!message) continue;
      had.add(h.mid);
      out.push({ body: message.body, mid: h.mid, expiresAt: message.expiresAt });
    }
    return out;
  }

  /** One hand-over stage, asked of the node holding the connection; the raw answer. */
  private ask(request: Omit<PsHandover, 'op' | 'origin' | 'hub'>): Promise<Uint8Array> {
    const target = { kind: 'connection' as const, name: request.connectionId };
    const data = encodeEdgeMessage({ op: 'ps.handover', ...this.hub.from, ...request });
    return this.hub.bus.request(this.hub.subjectOf(target), data, this.deps.requestTimeoutMs);
  }

  /** Sessions given away whose events the taker has not paged out yet. */
  get givingCount(): number {
    return this.given.size;
  }

  close(): void {
    for (const id of [...this.given.keys()]) this.forgetGiven(id);
  }
}
