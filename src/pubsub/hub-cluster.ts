// One hub across the cluster: every send and every REST operation acts on the
// connections of all edge nodes (../shared/DESIGN.md, "Pub/sub fan-out").
// Delivery is local first (so local traffic flows while the bus is away), then
// one bus message that the other nodes deliver to their own members, framed
// once per node. A node subscribes to a group's or user's subject only while
// it has local members, to a connection's while it holds the connection, and
// to the hub's `all` subject always. Operations whose answer matters (exists,
// list, close, membership, permissions) gather the other nodes' answers.
import { BusError, respond, type Bus, type BusMessage, type BusSubscription } from '../bus/bus.ts';
import { decodeEnvelope, encodeEnvelope } from '../bus/envelope.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { HubConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { busOpOf } from '../validation/schemas.ts';
import { SharedMessage, type DataMessage } from './downstream.ts';
import type { PubSubErrorCode } from './errors.ts';
import { Hub, type EndConnection, type Target } from './hub.ts';
import type { Permission } from './permissions.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { SessionHandover } from './session-handover.ts';

export interface ClusterHubDeps {
  bus: Bus;
  subjects: Subjects;
  nodeId: string;
  log: Logger;
  metrics: RelayMetrics;
  requestTimeoutMs: number;
  gatherStallMs: number;
  /** Ends a connection for good (REST close, slow consumer). */
  endConnection(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void;
  /** A new cluster-wide event id, `origin:counter`. */
  nextMid(): string;
  /** Logs an event this edge published on the bus (for replay to edges that missed it). */
  recordSend(mid: string, subject: string, data: Uint8Array): void;
  /** Delivers an event from another edge once, in order (see bus-replay.ts). */
  admit(mid: string, deliver: () => void): void;
}

export interface GroupMember {
  connectionId: string;
  userId?: string;
}

/** Membership filter terms of :addToGroups / :removeFromGroups, already parsed. */
export interface FilterTerm {
  field: 'connectionId' | 'userId';
  value: string;
}

export type GroupAction = 'add' | 'remove' | 'removeAll';

export interface SendHeader {
  op: string;
  origin: string;
  hub: string;
  mid: string;
  /** When the publishing node accepted the event (ms since epoch). */
  at?: number;
  target: Target;
  excluded?: string[];
  message: Omit<DataMessage, 'dataJson'>;
  reason?: string;
  action: GroupAction;
  groups: string[];
  terms?: FilterTerm[];
  group?: string;
  top: number;
  connectionId: string;
  method: 'PUT' | 'DELETE' | 'HEAD';
  permission: Permission;
}

/** The event a ps.send carries, framed once; undefined when its data is not what its dataType says. */
export function sharedMessageOf(h: SendHeader, body: Buffer): SharedMessage | undefined {
  const dataJson = body.toString('utf8');
  try {
    const data: unknown = JSON.parse(dataJson);
    if (h.message.dataType !== 'json' && typeof data !== 'string') return undefined;
  } catch {
    return undefined;
  }
  return new SharedMessage({ ...h.message, dataJson }, h.mid);
}

export class ClusterHub {
  readonly local: Hub;
  readonly handover: SessionHandover;
  private readonly subscriptions = new Map<string, BusSubscription>();

  constructor(
    readonly config: HubConfig,
    private readonly deps: ClusterHubDeps,
    endSlow: EndConnection,
    handoverDeps: ConstructorParameters<typeof SessionHandover>[1],
  ) {
    this.local = new Hub(config, endSlow, {
      opened: (kind, name) => this.subscribe(kind, name),
      closed: (kind, name) => this.unsubscribe(kind, name),
    });
    this.handover = new SessionHandover(this, handoverDeps);
    this.subscriptions.set('all', deps.bus.subscribe(deps.subjects.hubAll(this.key), (m) => this.onBus(m)));
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

  private subscribe(kind: 'group' | 'user' | 'connection', name: string): void {
    const key = `${kind}:${name}`;
    if (this.subscriptions.has(key)) return;
    this.subscriptions.set(key, this.deps.bus.subscribe(this.subjectOf({ kind, name }), (m) => this.onBus(m)));
  }

  private unsubscribe(kind: 'group' | 'user' | 'connection', name: string): void {
    const key = `${kind}:${name}`;
    this.subscriptions.get(key)?.unsubscribe();
    this.subscriptions.delete(key);
  }

  /** Builds a header for this hub from this node. */
  header(op: string, fields: object): object {
    return { op, origin: this.deps.nodeId, hub: this.name, ...fields };
  }

  // --- sending ------------------------------------------------------------------

  /** Delivers to local members now and tells the other nodes. */
  send(target: Target, message: DataMessage, excluded?: ReadonlySet<string>): void {
    const mid = this.deps.nextMid();
    const at = Date.now();
    this.delivered(this.local.deliver(target, new SharedMessage(message, mid), excluded), at, 'local');
    if (!this.deps.bus.reachesOtherNodes) return;
    if (target.kind === 'connection' && this.local.connections.has(target.name)) return;
    const { dataJson, ...rest } = message;
    const header = this.header('ps.send', { mid, at, target, excluded: excluded && [...excluded], message: rest });
    try {
      const subject = this.subjectOf(target);
      const data = encodeEnvelope(header, Buffer.from(dataJson, 'utf8'));
      this.deps.bus.publish(subject, data);
      this.deps.recordSend(mid, subject, data);
    } catch (err) {
      this.deps.log.warn({ event: 'bus.publish_failed', hub: this.name, err: (err as Error).message });
    }
  }

  /** Joins a group; resolves once the bus has this node's interest in it. */
  async join(connection: PubSubConnection, group: string): Promise<void> {
    if (this.local.join(connection, group)) await this.deps.bus.flush();
  }

  leave(connection: PubSubConnection, group: string): void {
    this.local.leave(connection, group);
  }

  // --- operations on the whole cluster (REST) -----------------------------------

  async close(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): Promise<void> {
    const local = this.applyClose(target, excluded, reason);
    await this.clusterCall(target, local, this.header('ps.close', { target, excluded: excluded && [...excluded], reason }));
  }

  async changeGroups(target: Target, action: GroupAction, groups: string[], terms?: FilterTerm[]): Promise<void> {
    const local = this.applyGroups(target, action, groups, terms);
    await this.clusterCall(target, local, this.header('ps.groups', { target, action, groups, terms }));
  }

  async exists(target: Target): Promise<boolean> {
    const local = this.countTargets(target);
    if (local > 0) return true;
    const answers = await this.clusterCall(target, local, this.header('ps.exists', { target }));
    return answers.some((a) => a.count > 0);
  }

  async listGroup(group: string, top: number): Promise<GroupMember[]> {
    const members = this.members(group, top);
    if (members.length >= top) return members;
    const target: Target = { kind: 'group', name: group };
    const answers = await this.clusterCall(target, 0, this.header('ps.list', { group, top }));
    for (const answer of answers) members.push(...(answer.members ?? []));
    return members.slice(0, top);
  }

  /** Grants, revokes or checks a permission; false when the connection (or, for HEAD, the grant) is not there. */
  async permission(connectionId: string, method: 'PUT' | 'DELETE' | 'HEAD', permission: Permission, group?: string): Promise<boolean> {
    const target: Target = { kind: 'connection', name: connectionId };
    const local = this.applyPermission(connectionId, method, permission, group);
    if (local > 0 || this.local.connections.has(connectionId)) return local > 0;
    const answers = await this.clusterCall(target, 0, this.header('ps.permission', { connectionId, method, permission, group }));
    return answers.some((a) => a.count > 0);
  }

  /**
   * Asks the other nodes: one node for a connection held elsewhere (nobody
   * holding it answers [] at once), every node with interest otherwise.
   * Throws BusError('Unavailable') when the bus is away.
   */
  private async clusterCall(target: Target, localCount: number, header: object): Promise<{ count: number; members?: GroupMember[] }[]> {
    const bus = this.deps.bus;
    if (!bus.reachesOtherNodes) return [];
    const data = encodeEnvelope(header);
    let raw: Uint8Array[];
    if (target.kind === 'connection') {
      if (localCount > 0 || this.local.connections.has(target.name)) return [];
      try {
        raw = [await bus.request(this.subjectOf(target), data, this.deps.requestTimeoutMs)];
      } catch (err) {
        if (err instanceof BusError && err.code === 'NoResponders') return [];
        throw err;
      }
    } else {
      raw = await bus.gather(this.subjectOf(target), data, { maxWaitMs: this.deps.requestTimeoutMs, stallMs: this.deps.gatherStallMs });
    }
    const answers: { count: number; members?: GroupMember[] }[] = [];
    for (const r of raw) {
      const header = decodeEnvelope(r)?.header;
      if (busOpOf(header) === 'ps.done') answers.push(header as { count: number; members?: GroupMember[] });
    }
    return answers;
  }

  // --- what each node does locally ----------------------------------------------

  private applyClose(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): number {
    let count = 0;
    for (const connection of [...this.local.targets(target)]) {
      if (excluded?.has(connection.id)) continue;
      this.deps.endConnection(connection, 'ClosedByServer', reason);
      count++;
    }
    return count;
  }

  private applyGroups(target: Target, action: GroupAction, groups: string[], terms?: FilterTerm[]): number {
    let count = 0;
    for (const connection of [...this.local.targets(target)]) {
      if (connection.ended) continue;
      if (terms && !terms.some((t) => (t.field === 'connectionId' ? connection.id : connection.userId) === t.value)) continue;
      count++;
      if (action === 'add') for (const g of groups) this.local.join(connection, g);
      else for (const g of action === 'removeAll' ? [...connection.groups] : groups) this.local.leave(connection, g);
    }
    return count;
  }

  private countTargets(target: Target): number {
    let count = 0;
    for (const connection of this.local.targets(target)) if (!connection.ended) count++;
    return count;
  }

  private members(group: string, top: number): GroupMember[] {
    const out: GroupMember[] = [];
    for (const c of this.local.targets({ kind: 'group', name: group })) {
      if (out.length >= top) break;
      out.push(c.userId === null ? { connectionId: c.id } : { connectionId: c.id, userId: c.userId });
    }
    return out;
  }

  private applyPermission(connectionId: string, method: 'PUT' | 'DELETE' | 'HEAD', permission: Permission, group?: string): number {
    const connection = this.local.connections.get(connectionId);
    if (!connection || connection.ended) return 0;
    if (method === 'PUT') connection.permissions.grant(permission, group);
    else if (method === 'DELETE') connection.permissions.revoke(permission, group);
    else return group === undefined || connection.permissions.allows(permission, group) ? 1 : 0;
    return 1;
  }

  // --- the bus ---------------------------------------------------------------------

  private onBus(message: BusMessage): void {
    const envelope = decodeEnvelope(message.data);
    const h = envelope?.header as SendHeader;
    // NATS echoes this node's own sends back to its group subscriptions: they
    // were delivered here already, so they are dropped before any checking.
    if (h?.op === 'ps.send' && h.origin === this.deps.nodeId && !message.reply) return;
    const op = busOpOf(h);
    if (!op || !op.startsWith('ps.') || typeof h.hub !== 'string' || h.hub.toLowerCase() !== this.key) {
      this.deps.log.warn({ event: 'bus.invalid_message', hub: this.name, subject: message.subject });
      return;
    }
    // This node already acted on what it sent; it only answers so a gather need not wait for it.
    const own = h.origin === this.deps.nodeId;
    const done = (count: number, members?: GroupMember[]) =>
      respond(this.deps.bus, message, encodeEnvelope(members ? { op: 'ps.done', count, members } : { op: 'ps.done', count }));
    switch (op) {
      case 'ps.send':
        if (!own) this.deps.admit(h.mid, () => this.receive(h, envelope!.body));
        return;
      case 'ps.close':
        return done(own ? 0 : this.applyClose(h.target, h.excluded && new Set(h.excluded), h.reason));
      case 'ps.groups':
        return done(own ? 0 : this.applyGroups(h.target, h.action, h.groups, h.terms));
      case 'ps.exists':
        return done(own ? 0 : this.countTargets(h.target));
      case 'ps.list':
        return own ? done(0, []) : done(0, this.members(h.group!, h.top));
      case 'ps.permission':
        return done(own ? 0 : this.applyPermission(h.connectionId, h.method, h.permission, h.group));
      case 'ps.handover':
        // The taking node subscribes to the connection too: only the holder answers.
        if (!own) this.handover.onRequest(message, envelope!.header);
        return;
      default:
        this.deps.log.warn({ event: 'bus.unexpected_op', hub: this.name, op });
    }
  }

  /** An event sent on another node: checked, framed once, delivered to local members. */
  receive(h: SendHeader, body: Buffer): void {
    const message = sharedMessageOf(h, body);
    if (!message) {
      this.deps.log.warn({ event: 'bus.invalid_message', hub: this.name, op: 'ps.send' });
      return;
    }
    this.delivered(this.local.deliver(h.target, message, h.excluded && new Set(h.excluded)), h.at, 'bus');
  }

  /** Counts an event handed to `recipients` local connections, published at `at`. */
  private delivered(recipients: number, at: number | undefined, source: 'local' | 'bus'): void {
    const metrics = this.deps.metrics;
    metrics.pubsubEventsIn.inc({ source });
    metrics.pubsubEventsOut.inc(recipients);
    if (at !== undefined) metrics.publishToDeliver.observe(Math.max(0, Date.now() - at) / 1000);
  }

  /** Leaves every bus subject (shutdown). */
  leaveBus(): void {
    for (const sub of this.subscriptions.values()) sub.unsubscribe();
    this.subscriptions.clear();
  }
}
