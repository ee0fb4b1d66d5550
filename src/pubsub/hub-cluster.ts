// One hub across the cluster: every send and every REST operation acts on the
// connections of all edge nodes (docs/architecture.md, "A pub/sub event").
// A durable hub (JetStream) hands sends and membership changes to its stream
// and delivers what the stream gives back, in stream order (stream-events.ts,
// docs/durability.md). Otherwise delivery is local first (so local traffic
// flows while the bus is away), then one bus message that the other nodes
// deliver to their own members, framed once per node. A node subscribes to a group's or user's subject only while
// it has local members, to a connection's while it holds the connection, and
// to the hub's `all` subject always. Operations whose answer matters (exists,
// list, close, membership, permissions) gather the other nodes' answers: one
// about a connection from the edge holding it, the others from every edge of
// the hub's roster (hub-roster.ts), however late each answers. Asking them is
// cluster-calls.ts; what an operation does on an edge's own connections, its
// own or another's, is local-operations.ts.
import { tooLargeForBus, type Bus, type BusMessage, type BusSubscription } from '../bus/bus.ts';
import { decodeEnvelope } from '../bus/envelope.ts';
import {
  encodeEdgeMessage,
  isEdgeMessage,
  type EdgeMessage,
  type FilterTerm,
  type GroupAction,
  type GroupMember,
  type Permission,
  type PsSend,
  type Target,
} from '../bus/messages.ts';
import { encodeSubjectToken } from '../bus/subjects.ts';
import type { HubConfig } from '../config/types.ts';
import type { TraceSource } from '../telemetry/trace.ts';
import { SharedMessage, sharedMessageOf, type DataMessage } from './downstream.ts';
import { filterFromBus, type ConnectionFilter } from './connection-filter.ts';
import type { DeliverEvent, EventFeed } from './event-feed.ts';
import type { HubHistory, MemoryHistory } from './history.ts';
import { GroupLimitReached, type PubSubErrorCode } from './errors.ts';
import { ClusterCalls, type ClusterCallsDeps, type StreamPosition } from './cluster-calls.ts';
import { LocalOperations, byConnectionId, type LocalOperationsDeps, type PermissionOutcome } from './local-operations.ts';
import { Hub, type EndConnection } from './hub.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { hasExpired } from './message-log.ts';
import { HubRoster, type HereState } from './hub-roster.ts';
import { SessionHandover } from './session-handover.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** What a hub needs: what asking the other edges and acting on this edge's connections need is declared with them. */
export interface ClusterHubDeps extends ClusterCallsDeps, LocalOperationsDeps {
  /** This edge process (a restarted edge keeps its node id and gets a new one): ps.here and ps.claim carry it. */
  bootId: string;
  /** How events reach the other edges and come from them (event-feed.ts). */
  feed: EventFeed;
  /** Another edge process announced itself under this edge's node id (`boot`: its process). */
  nodeIdClash(boot: string): void;
}

export type { FilterTerm, GroupAction, GroupMember, PermissionOutcome };

/** What a publish came to: delivered (stored, on a durable hub), or a repeat of one already stored. */
export type SendResult = 'sent' | 'duplicate';

const SENT: Promise<SendResult> = Promise.resolve('sent');

/**
 * A durable hub's event path (stream-events.ts): sends and membership
 * changes resolve once stored, and sessions move through the stream.
 */
export interface DurableEvents {
  send(
    target: Target,
    message: DataMessage,
    excluded: ReadonlySet<string> | undefined,
    msgId: string | undefined,
    filter?: ConnectionFilter,
  ): Promise<SendResult>;
  /** Stores a membership change; resolves with its sequence in the hub's stream. */
  changeGroups(target: Target, action: GroupAction, groups: string[], filter: ConnectionFilter | undefined, msgId?: string): Promise<number>;
  /** Whether a join stored at `seq` took effect (false: refused for limits.groupsPerConnection where the stream applied it). */
  joinTookEffect(connectionId: string, group: string, seq: number): Promise<boolean>;
  /** The session, rebuilt on this edge from its checkpoint and the stream; undefined when it cannot be. */
  takeSession(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined>;
  /** A reliable connection opened, acknowledged, changed permissions, or ended for good. */
  sessionChanged(connection: PubSubConnection, identity?: boolean): void;
  /** Writes the session's checkpoint now (what the stream does not carry changed): true once stored. */
  storeSession(connection: PubSubConnection): Promise<boolean>;
  sessionEnded(connection: PubSubConnection): void;
  /**
   * Stores a REST close of a user's, group's or the hub's connections, or of one connection no edge holds, in the
   * stream (each edge ends its connections there as it reads it; a take of a session replaying past it ends the
   * session): resolves with its sequence.
   */
  storeClose(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): Promise<number>;
  /** Whether the connection's reliable session is kept as its checkpoint alone (its edge went away): no edge holds it. */
  sessionKeptUnheld(connectionId: string): Promise<boolean>;
  /** At shutdown: writes every session's checkpoint and lets it go (any edge can take it from there). */
  releaseAll(): Promise<void>;
  /** The stream's last sequence, once this edge has applied it (this edge's own position when the stream cannot say); `reached`: applied that far in time. */
  catchUp(): Promise<StreamPosition>;
  /** Resolves once this edge has applied the stream up to `at` (true), or after `timeoutMs` (false). */
  reached(at: number, timeoutMs: number): Promise<boolean>;
  /** Whether this edge's follower applied the close of `target` stored at `seq` (storeClose). */
  appliedClose(seq: number, target: Target): boolean;
  /** True once this edge reads the stream (it can answer a question at a position). */
  readonly started: boolean;
  /** Sessions whose last checkpoint is not written yet. */
  readonly pendingWrites: number;
  /** Stops reading the stream; `removed`: a reload removed the hub (a session being taken here is ended, not left for another edge). */
  close(removed?: boolean): void;
}

export class ClusterHub {
  readonly local: Hub;
  readonly handover: SessionHandover;
  /** Set on a durable hub (the NATS bus with JetStream). */
  durable: DurableEvents | undefined;
  /** Set on a hub that keeps history on the memory bus (a durable hub reads its stream instead). */
  memoryHistory: MemoryHistory | undefined;
  /** Where REST and the CLI read this hub's history; undefined when it keeps none. */
  history: HubHistory | undefined;
  /** This hub's counters on this edge since it started (the dashboard's, GET /$relay/stats). */
  readonly traffic = { published: 0, received: 0, deliveries: 0, slowConsumerCloses: 0 };
  /** Set once a reload removed the hub (leaveBus): work begun before, a session being taken, must not go on in it. */
  removed = false;
  private readonly subscriptions = new Map<string, BusSubscription>();
  /** The other edges serving this hub (only with other edges to reach): who a cluster-wide question waits for. */
  private readonly roster: HubRoster | undefined;
  /** Asks the other edges for a cluster-wide operation. */
  private readonly cluster: ClusterCalls;
  /** This edge's part of a cluster-wide operation, and its answers to the other edges' (ps.close ... ps.permission). */
  private readonly localOps: LocalOperations;

  constructor(
    readonly config: HubConfig,
    private readonly deps: ClusterHubDeps,
    endSlow: EndConnection,
    handoverDeps: ConstructorParameters<typeof SessionHandover>[1],
  ) {
    this.cluster = new ClusterCalls(this, deps);
    this.localOps = new LocalOperations(this, deps);
    this.local = new Hub(config, endSlow, {
      opened: (kind, name) => this.subscribe(kind, name),
      closed: (kind, name) => this.unsubscribe(kind, name),
    });
    this.handover = new SessionHandover(this, handoverDeps);
    deps.feed.register(this.key, this.fromFeed);
    this.subscriptions.set('all', deps.bus.subscribe(deps.subjects.hubAll(this.key), (m) => this.onBus(m)));
    // An edge is on the others' rosters while it can answer: on the bus, and on a durable hub once it reads the stream.
    if (deps.bus.reachesOtherNodes) {
      this.roster = new HubRoster(
        deps.nodeId,
        (state) => this.publishHere(state),
        () => deps.bus.connected && (!this.durable || this.durable.started),
        (edge, how) => deps.log.info({ event: `pubsub.roster_${how}`, hub: this.name, edge }),
      );
    }
  }

  /** True while edge `nodeId` (its process `boot`, when given) is on this hub's roster (heard from lately). */
  edgeOnRoster(nodeId: string, boot?: string): boolean {
    return this.roster?.holds(nodeId, boot) ?? false;
  }

  get name(): string {
    return this.config.name;
  }

  get key(): string {
    return this.local.key;
  }

  get bus(): Bus {
    return this.deps.bus;
  }

  /** The live trace (telemetry/trace.ts): `if (hub.trace.on) hub.trace.emit(...)`. */
  get trace(): TraceSource {
    return this.deps.metrics.trace;
  }

  subjectOf(target: Target): string {
    const s = this.deps.subjects;
    switch (target.kind) {
      case 'all':
        return s.hubAll(this.key);
      case 'group':
        return s.group(this.key, target.name);
      case 'user':
        return s.user(this.key, target.name);
      case 'connection':
        return s.connection(this.key, target.name);
    }
  }

  /**
   * Subject tokens of the groups with members here, with how many such groups
   * share each (names too long for a token share hashed ones): a durable hub
   * skips other groups' events unread.
   */
  readonly localGroupTokens = new Map<string, number>();

  private subscribe(kind: 'group' | 'user' | 'connection', name: string): void {
    const key = `${kind}:${name}`;
    if (this.subscriptions.has(key)) return;
    if (kind === 'group') {
      const token = encodeSubjectToken(name);
      this.localGroupTokens.set(token, (this.localGroupTokens.get(token) ?? 0) + 1);
    }
    this.subscriptions.set(key, this.deps.bus.subscribe(this.subjectOf({ kind, name }), (m) => this.onBus(m)));
  }

  private unsubscribe(kind: 'group' | 'user' | 'connection', name: string): void {
    const key = `${kind}:${name}`;
    const subscription = this.subscriptions.get(key);
    if (!subscription) return;
    if (kind === 'group') {
      const token = encodeSubjectToken(name);
      const left = (this.localGroupTokens.get(token) ?? 1) - 1;
      if (left > 0) this.localGroupTokens.set(token, left);
      else this.localGroupTokens.delete(token);
    }
    subscription.unsubscribe();
    this.subscriptions.delete(key);
  }

  /** Ends every connection of the hub on this edge, held sessions included (the stream skipped events): how many. */
  endLocalConnections(code: PubSubErrorCode): number {
    const connections = [...this.local.connections.values()];
    for (const connection of connections) this.deps.endConnection(connection, code);
    return connections.length;
  }

  /** The fields every hub message from this node carries. */
  get from(): { origin: string; hub: string } {
    return { origin: this.deps.nodeId, hub: this.name };
  }

  // --- sending ------------------------------------------------------------------

  /**
   * Sends an event to its target's members on every edge. A durable hub
   * resolves once the event is stored (rejects with StoreError when it could
   * not be; `msgId` makes a retry a duplicate, not a second event); otherwise
   * local members get it now and the other edges are told. A `filter` (REST)
   * travels with the event, and each edge applies it to its own connections.
   */
  send(target: Target, message: DataMessage, excluded?: ReadonlySet<string>, msgId?: string, filter?: ConnectionFilter): Promise<SendResult> {
    if (this.durable) return this.durable.send(target, message, excluded, msgId, filter);
    const mid = this.deps.feed.nextMid();
    const at = Date.now();
    const crosses = this.deps.bus.reachesOtherNodes && !(target.kind === 'connection' && this.local.connections.has(target.name));
    let data: Uint8Array | undefined;
    if (crosses) {
      const { dataJson, ...rest } = message;
      const event: PsSend = { op: 'ps.send', ...this.from, mid, at, target, excluded: excluded && [...excluded], filter: filter?.text, message: rest };
      data = encodeEdgeMessage(event, Buffer.from(dataJson, 'utf8'));
      // Refused whole, before anyone has it: members here only would be a silent loss on every other edge.
      const largest = this.deps.feed.largestEvent();
      if (data.length > largest) return Promise.reject(tooLargeForBus(data.length, this.deps.bus.maxPayload, largest));
    }
    const sequence = this.memoryHistory && target.kind === 'group' ? this.memoryHistory.append(target.name, message, at) : undefined;
    this.delivered(this.local.deliver(target, new SharedMessage(message, mid, 0, sequence), excluded, filter), at, 'local');
    if (!data) return SENT;
    try {
      this.deps.feed.publish(this.subjectOf(target), mid, data);
    } catch (err) {
      this.deps.log.warn({ event: 'bus.publish_failed', hub: this.name, err: (err as Error).message });
    }
    return SENT;
  }

  /**
   * Joins a group. On a durable hub, resolves once the change is stored and
   * applied here (it takes effect where the stream orders it: a join past
   * limits.groupsPerConnection there fails, GroupLimitReached); otherwise at
   * once here, once the bus has this node's interest in it (the caller checks
   * the limit first).
   */
  async join(connection: PubSubConnection, group: string, msgId?: string): Promise<void> {
    if (this.durable) {
      const seq = await this.durable.changeGroups({ kind: 'connection', name: connection.id }, 'add', [group], undefined, msgId);
      if (!(await this.durable.joinTookEffect(connection.id, group, seq))) throw new GroupLimitReached('past limits.groupsPerConnection where the stream applied it');
      return;
    }
    if (this.local.join(connection, group)) await this.deps.bus.flush();
  }

  async leave(connection: PubSubConnection, group: string, msgId?: string): Promise<void> {
    if (this.durable) {
      await this.durable.changeGroups({ kind: 'connection', name: connection.id }, 'remove', [group], undefined, msgId);
      return;
    }
    this.local.leave(connection, group);
  }

  /**
   * Puts a new connection into the hub with the groups it starts in (its
   * token's and the connect event's): joined here at once, as the connection
   * opens; a durable hub records them in the session's first checkpoint, so
   * an edge that takes the session over starts with them.
   */
  admit(connection: PubSubConnection, groups: string[]): void {
    this.local.add(connection);
    for (const group of groups) this.local.join(connection, group);
    if (connection.session) this.durable?.sessionChanged(connection);
  }

  /**
   * Whether a new connection's subscriptions (its own, its user's, its start groups') must reach the NATS server
   * before its client hears `connected`: with other edges (the memory bus has no one else). A durable hub orders
   * sends after the connection in its stream, but a REST call about the connection through another edge (a
   * permission, a close, exists) crosses core NATS to its subject: before, it answered 404 now and then.
   */
  get admitsThroughBus(): boolean {
    return this.deps.bus.reachesOtherNodes;
  }

  /** Resolves once what this edge subscribed has reached its NATS server (bounded by the bus's flush). */
  subscribed(): Promise<void> {
    return this.deps.bus.flush().catch(() => undefined);
  }

  /** A reliable session from another edge: moved through the stream on a durable hub, else handed over on the bus. */
  takeSession(connectionId: string, token: string, protocol: string): Promise<PubSubConnection | undefined> {
    return this.durable ? this.durable.takeSession(connectionId, token, protocol) : this.handover.take(connectionId, token, protocol);
  }

  // --- operations on the whole cluster (REST) -----------------------------------

  /**
   * Ends the target's connections on every edge (REST). On a durable hub, a close of a user's, a group's or the hub's
   * connections is stored in the hub's stream first (a close of one connection, once no edge answered holding it and
   * its session is kept as its checkpoint alone): every edge ends its own connections the target names as it
   * reads it (in stream order, as a membership change is applied), and the edges are asked at its position; a
   * session no edge holds (its edge killed or drained, its client not back yet) is ended by the edge that takes it
   * from its checkpoint, whose replay of the stream passes the close (session-take.ts). Before, such a close reached
   * the edges holding connections only, and the client recovered its session, groups and all (found by review).
   * When JetStream does not store the close, the connections held are closed all the same and the call fails
   * StoreError (503): a session no edge holds may still be recovered, and the caller tries again.
   */
  async close(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): Promise<void> {
    let unstored: unknown;
    let at: number | undefined;
    /** The follower applied the stored close here: not applied again (it would end connections after it in the stream). */
    let applied = false;
    if (this.durable && target.kind !== 'connection') {
      try {
        at = await this.durable.storeClose(target, excluded, reason);
        // Applied here by the follower: the connections this edge holds that the close names are ended.
        applied = (await this.durable.reached(at, this.deps.requestTimeoutMs)) && this.durable.appliedClose(at, target);
      } catch (err) {
        unstored = err;
      }
    }
    at ??= (await this.cluster.membershipPosition(target))?.at;
    const taking = this.cluster.takingHere(target);
    const local = applied ? 0 : this.localOps.applyClose(target, excluded, reason);
    // Closed here while this edge takes it from another: that one is told too.
    const answers = await this.cluster.call(target, taking ? 0 : local, { op: 'ps.close', ...this.from, target, excluded: excluded && [...excluded], reason, at });
    // No edge holds the connection: on a durable hub its session may live on as its checkpoint alone (its edge was
    // killed or drained, its client not back yet), for any edge to take. The close is stored in the stream then, as a
    // user's, a group's or the hub's is: an edge that holds the session by the time it reads the close ends it there,
    // and a take whose replay passes it ends it as it ends the others (the client told the close's reason, 1008
    // ClosedByServer; the event handler `disconnected`). Before (found by review), its checkpoint alone was written
    // ended: the client was refused 1008 SessionNotFound with a generic message, and the handler never heard the end.
    if (this.durable && target.kind === 'connection' && local === 0 && !taking && !excluded?.has(target.name) && !answers.some((a) => a.count > 0)) {
      if (await this.durable.sessionKeptUnheld(target.name)) {
        const stored = await this.durable.storeClose(target, undefined, reason);
        await this.durable.reached(stored, this.deps.requestTimeoutMs);
      }
    }
    if (unstored !== undefined) throw unstored;
  }

  /** A close read from a durable hub's stream (storeClose): this edge's connections it names end here. */
  applyStoredClose(target: Target, excluded: readonly string[] | undefined, reason: string | undefined): number {
    return this.localOps.applyClose(target, excluded && new Set(excluded), reason);
  }

  async changeGroups(target: Target, action: GroupAction, groups: string[], filter?: ConnectionFilter): Promise<void> {
    if (this.durable) {
      await this.durable.changeGroups(target, action, groups, filter);
      return;
    }
    const request: EdgeMessage = { op: 'ps.groups', ...this.from, target, action, groups, filter: filter?.text };
    // Refused whole, before this edge applies it, as a send is: the other edges would never hear of a change the bus
    // cannot carry (before: applied here, then answered 413 "nothing was sent").
    const encoded = this.deps.bus.reachesOtherNodes ? encodeEdgeMessage(request) : undefined;
    if (encoded && encoded.length > this.deps.bus.maxPayload) throw tooLargeForBus(encoded.length, this.deps.bus.maxPayload);
    const local = this.localOps.applyGroups(target, action, groups, filter);
    await this.cluster.call(target, local, request, encoded);
  }

  async exists(target: Target): Promise<boolean> {
    const position = await this.cluster.membershipPosition(target);
    this.cluster.refuseIfBehind(position);
    const local = this.localOps.countTargets(target);
    if (local > 0) return true;
    const answers = await this.cluster.call(target, local, { op: 'ps.exists', ...this.from, target, at: position?.at });
    // A member on an edge that has read up to the question exists; one a stalled edge still holds may have left.
    if (answers.some((a) => a.count > 0 && !a.behind)) return true;
    this.cluster.refuseIfBehind(position, answers);
    return false;
  }

  /**
   * The group's members with the lowest connection ids after `after` (a page), in that order, on every edge. `cut`:
   * an edge's answer was cut to fit the bus, so the page ends at the last member it named and more follow.
   */
  async listGroup(group: string, top: number, after?: string): Promise<{ members: GroupMember[]; cut: boolean }> {
    const target: Target = { kind: 'group', name: group };
    const position = await this.cluster.membershipPosition(target);
    this.cluster.refuseIfBehind(position);
    const members = this.localOps.members(group, top, after);
    const answers = await this.cluster.call(target, 0, { op: 'ps.list', ...this.from, group, top, after, at: position?.at });
    this.cluster.refuseIfBehind(position, answers);
    /** The lowest last member of an answer cut to fit the bus: members past it on that edge were not named. */
    let bound: string | undefined;
    for (const answer of answers) {
      const named = (answer.members ?? []).filter((m) => after === undefined || m.connectionId > after);
      members.push(...named);
      const last = named.reduce<string | undefined>((high, m) => (high === undefined || m.connectionId > high ? m.connectionId : high), undefined);
      if (answer.cut && last !== undefined && (bound === undefined || last < bound)) bound = last;
    }
    // Past the bound, an edge whose answer was cut may hold members it did not name: the page stops there.
    const kept = bound === undefined ? members : members.filter((m) => m.connectionId <= bound);
    kept.sort(byConnectionId);
    // A session moving between edges is in the group on both until the holder lets it go (commit): listed once.
    const once = kept.filter((m, i) => i === 0 || m.connectionId !== kept[i - 1].connectionId);
    return { members: once.slice(0, top), cut: bound !== undefined };
  }

  /**
   * Grants, revokes or checks a permission on the connection, wherever it is:
   * `absent` when the connection (or, for HEAD, the grant) is not there;
   * `full` when a grant or revoke for one more group would pass
   * limits.groupsPerConnection groups named for that permission; `unheld`
   * when a grant, revoke or check finds the connection's session on a durable
   * hub held by no edge (nothing changed or told: to be tried again).
   */
  async permission(connectionId: string, method: 'PUT' | 'DELETE' | 'HEAD', permission: Permission, group?: string): Promise<PermissionOutcome> {
    const target: Target = { kind: 'connection', name: connectionId };
    const local = await this.localOps.applyPermission(connectionId, method, permission, group);
    if (local !== 'absent' || this.local.connections.has(connectionId)) return local;
    const answers = await this.cluster.call(target, 0, { op: 'ps.permission', ...this.from, connectionId, method, permission, group });
    if (answers.some((a) => a.full)) return 'full';
    if (answers.some((a) => a.unstored)) return 'unstored';
    if (answers.some((a) => a.count > 0)) return 'applied';
    // No edge holds it, but a durable hub may keep its reliable session for any edge to take (its edge was killed or
    // drained, its client not back yet): a grant or revoke would change nothing there, and the take would bring the
    // old permissions back. Before, a revoke was answered 204 and the recovered session kept the permission. A check
    // cannot be answered either: the checkpoint holds the permissions, but not whether a close stored in the stream
    // after it (this connection's, its user's, a group's, the hub's) ended the session, which only a take's replay
    // finds; before (found by review), it was 404, false, for a session holding the permission.
    if (answers.length === 0 && this.durable && (await this.durable.sessionKeptUnheld(connectionId))) return 'unheld';
    return 'absent';
  }

  /** The other edges heard on this hub lately (node ids). */
  otherEdges(): string[] {
    return this.roster?.others() ?? [];
  }

  /** Whether another edge has been heard on this hub lately (one that could take a session from here). */
  hasOtherEdges(): boolean {
    return this.otherEdges().length > 0;
  }

  /** Shutdown has begun: the other edges stop waiting for this one (it still answers until it leaves the bus). */
  leaveRoster(): void {
    this.roster?.leave();
  }

  private publishHere(state: HereState): void {
    try {
      this.deps.bus.publish(this.deps.subjects.hubAll(this.key), encodeEdgeMessage({ op: 'ps.here', ...this.from, boot: this.deps.bootId, state }));
    } catch (err) {
      this.deps.log.warn({ event: 'bus.publish_failed', hub: this.name, op: 'ps.here', err: (err as Error).message });
    }
  }

  // --- what each node does locally ----------------------------------------------

  /** Applies a membership change to this node's connections (local-operations.ts): the stream's, on a durable hub. */
  applyGroups(...change: Parameters<LocalOperations['applyGroups']>): number {
    return this.localOps.applyGroups(...change);
  }

  // --- the bus ---------------------------------------------------------------------

  private onBus(message: BusMessage): void {
    const envelope = decodeEnvelope(message.data);
    const h = envelope?.header as { op?: unknown; origin?: unknown } | undefined;
    // NATS echoes this node's own sends back to its group subscriptions: they
    // were delivered here already, so they are dropped before any checking.
    if (h?.op === 'ps.send' && h.origin === this.deps.nodeId && !message.reply) return;
    const m = isEdgeMessage(h) ? h : undefined;
    if (!m || !m.op.startsWith('ps.') || !('hub' in m) || asciiLowerCase(m.hub) !== this.key) {
      this.deps.log.warn({ event: 'bus.invalid_message', hub: this.name, subject: message.subject });
      return;
    }
    // This node already acted on what it sent; it only answers so a gather need not wait for it.
    const own = m.origin === this.deps.nodeId;
    switch (m.op) {
      case 'ps.send':
        if (!own) this.deps.feed.receive(m, envelope!.body);
        return;
      case 'ps.close':
      case 'ps.groups':
      case 'ps.exists':
      case 'ps.list':
      case 'ps.permission':
        return this.localOps.answer(message, m, own);
      case 'ps.here':
        // Two edges under one node id take each other's events for their own echoes and drop them: said, not silent.
        if (own && m.boot !== undefined && m.boot !== this.deps.bootId) this.deps.nodeIdClash(m.boot);
        return this.roster?.heard(m.origin, m.state, m.boot);
      case 'ps.handover':
        // The taking node subscribes to the connection too: only the holder answers.
        if (!own) this.handover.onRequest(message, m);
        return;
      default:
        this.deps.log.warn({ event: 'bus.unexpected_op', hub: this.name, op: (m as EdgeMessage).op });
    }
  }

  /** An event sent on another node: checked, framed once, delivered to local members. */
  private receive(h: PsSend, body: Buffer): void {
    const message = sharedMessageOf(h, body);
    const filter = filterFromBus(h.filter);
    if (!message || filter === null) {
      this.deps.log.warn({ event: 'bus.invalid_message', hub: this.name, op: 'ps.send' });
      return;
    }
    if (this.expired(message)) return;
    this.delivered(this.local.deliver(h.target, message, h.excluded && new Set(h.excluded), filter), h.at, 'bus');
  }

  /**
   * True (and counted) when an event reaches this edge after its time to live
   * (a REST send's messageTtlSeconds): held by the bus while NATS was away,
   * replayed, or read late from a stream. It is sent to nobody here
   * (PubSubConnection.deliver checks each copy too).
   */
  expired(message: SharedMessage): boolean {
    if (!hasExpired(message)) return false;
    this.deps.metrics.pubsubExpired.inc({ where: 'event' });
    return true;
  }

  /** Writes what a reliable session holds and its socket has not had (PubSubConnection.flush); counts what expired. */
  flushSession(connection: PubSubConnection): void {
    const expired = connection.flush();
    if (expired > 0) this.heldExpired(connection, expired);
  }

  /** `count` held messages of a reliable session were not sent for their time to live (a flush let them go). */
  heldExpired(connection: PubSubConnection, count: number): void {
    this.deps.metrics.pubsubExpired.inc({ where: 'held' }, count);
    // Held events whose time to live passed unsent were let go as if acknowledged: no acknowledgement comes for them,
    // so a session behind the live flow reads on now (session-catch-up.ts). Before, one whose held events all expired
    // unsent (its client away, or not reading) had nothing to acknowledge, and stayed behind for good.
    if (connection.session?.behindAt !== undefined) this.durable?.sessionChanged(connection);
  }

  /** Counts an event handed to `recipients` local connections, published at `at`. */
  delivered(recipients: number, at: number | undefined, source: 'local' | 'bus'): void {
    const metrics = this.deps.metrics;
    if (source === 'local') this.traffic.published++;
    else this.traffic.received++;
    this.traffic.deliveries += recipients;
    metrics.pubsubEventsIn.inc({ source });
    metrics.pubsubEventsOut.inc(recipients);
    if (at !== undefined) metrics.publishToDeliver.observe(Math.max(0, Date.now() - at) / 1000);
  }

  /** Events other edges published for this hub, as the feed delivers them. */
  private readonly fromFeed: DeliverEvent = (event, body) => this.receive(event, body);

  /** Leaves every bus subject and the event feed (shutdown, or the hub removed by a reload). */
  leaveBus(): void {
    this.removed = true;
    this.deps.feed.unregister(this.key, this.fromFeed);
    this.roster?.leave();
    for (const sub of this.subscriptions.values()) sub.unsubscribe();
    this.subscriptions.clear();
    this.localGroupTokens.clear();
  }
}
