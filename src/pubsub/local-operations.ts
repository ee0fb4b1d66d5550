// What a cluster-wide operation does on this edge's own connections: this
// edge's part of a REST close, membership change, exists, group list or
// permission (hub-cluster.ts), and its answer when another edge asks the same
// on the bus (ps.close, ps.groups, ps.exists, ps.list, ps.permission, each
// answered with a ps.done naming this edge; cluster-calls.ts gathers them).
// Apart from the hub because both sides apply the same code: a change is
// applied alike whichever edge it came through.
import { respond, type Bus, type BusMessage } from '../bus/bus.ts';
import {
  encodeEdgeMessage,
  type FilterTerm,
  type GroupAction,
  type GroupMember,
  type Permission,
  type PsClose,
  type PsExists,
  type PsGroups,
  type PsList,
  type PsPermission,
  type Target,
} from '../bus/messages.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { filterFromBus, selects, type ConnectionFilter } from './connection-filter.ts';
import type { PubSubErrorCode } from './errors.ts';
import type { Hub } from './hub.ts';
import type { PubSubConnection } from './pubsub-connection.ts';

export interface LocalOperationsDeps {
  bus: Bus;
  nodeId: string;
  /** The live limits (a reload changes them in place). */
  limits: { groupsPerConnection: number };
  log: Logger;
  metrics: RelayMetrics;
  requestTimeoutMs: number;
  /** Ends a connection for good (REST close, slow consumer). */
  endConnection(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void;
}

/** What the operations need of the hub they act in (hub-cluster.ts). */
export interface OperatingHub {
  readonly name: string;
  /** The hub's connections on this edge. */
  readonly local: Hub;
  /** Set on a durable hub (stream-events.ts): permissions are stored in the session's checkpoint, questions asked at a stream position. */
  readonly durable:
    | {
        storeSession(connection: PubSubConnection): Promise<boolean>;
        reached(at: number, timeoutMs: number): Promise<boolean>;
        appliedClose(seq: number, target: Target): boolean;
      }
    | undefined;
}

/** An operation another edge asks of this one on the bus. */
export type AskedOperation = PsClose | PsGroups | PsExists | PsList | PsPermission;

/**
 * What a REST permission call came to on the connection: done (or, for HEAD, held), no such connection, one group
 * too many, or (a durable hub) changed but not stored in the session's checkpoint, or not changed because no edge
 * holds its session (kept as its checkpoint alone, for its client to recover): the caller should try again.
 */
export type PermissionOutcome = 'applied' | 'absent' | 'full' | 'unstored' | 'unheld';

/** Connection ids in code-unit order, the order pages of a group's members follow. */
export function byConnectionId(a: GroupMember, b: GroupMember): number {
  return a.connectionId < b.connectionId ? -1 : a.connectionId > b.connectionId ? 1 : 0;
}

export class LocalOperations {
  constructor(
    private readonly hub: OperatingHub,
    private readonly deps: LocalOperationsDeps,
  ) {}

  /**
   * Answers an operation another edge asked on the bus (`own`: this edge
   * asked it, and already acted on it; it only answers so a gather need not
   * wait for it).
   */
  answer(message: BusMessage, m: AskedOperation, own: boolean): void {
    // An answer names its edge: the asker counts them off its roster.
    const done = (count: number, members?: GroupMember[], behind?: boolean) =>
      respond(this.deps.bus, message, encodeEdgeMessage({ op: 'ps.done', count, edge: this.deps.nodeId, ...(members && { members }), ...(behind && { behind }) }));
    switch (m.op) {
      case 'ps.close':
        // A close stored in a durable hub's stream (asked at its own sequence) that this edge's follower applied is
        // not applied again: by now it would end connections after it in the stream too (found by review).
        return this.atPosition(own ? undefined : m.at, () =>
          done(own || (m.at !== undefined && this.hub.durable?.appliedClose(m.at, m.target)) ? 0 : this.applyClose(m.target, m.excluded && new Set(m.excluded), m.reason)),
        );
      case 'ps.groups': {
        const filter = filterFromBus(m.filter);
        if (filter === null) return void this.deps.log.warn({ event: 'bus.invalid_message', hub: this.hub.name, op: m.op, reason: 'filter' });
        return done(own ? 0 : this.applyGroups(m.target, m.action, m.groups, filter ?? m.terms));
      }
      case 'ps.exists':
        return this.atPosition(own ? undefined : m.at, (reached) => done(own ? 0 : this.countTargets(m.target), undefined, !reached));
      case 'ps.list':
        return this.atPosition(own ? undefined : m.at, (reached) => (own ? done(0, []) : this.answerList(message, m.group, m.top, m.after, !reached)));
      case 'ps.permission':
        return void (own ? Promise.resolve<PermissionOutcome>('absent') : this.applyPermission(m.connectionId, m.method, m.permission, m.group)).then((outcome) => {
          if (outcome === 'full' || outcome === 'unstored') {
            return respond(this.deps.bus, message, encodeEdgeMessage({ op: 'ps.done', count: 0, edge: this.deps.nodeId, [outcome]: true }));
          }
          done(outcome === 'applied' ? 1 : 0);
        });
    }
  }

  /**
   * Answers a question asked at a stream position once this edge has applied
   * that far, or after three quarters of requestTimeoutMs (then with what it
   * has, `reached` false: a question about members is answered `behind`, and
   * the asker refuses it rather than answer from it; the asker, counting from
   * before this edge heard the question, must still be listening).
   */
  private atPosition(at: number | undefined, answer: (reached: boolean) => void): void {
    if (at === undefined || !this.hub.durable) return answer(true);
    void this.hub.durable.reached(at, Math.floor((this.deps.requestTimeoutMs * 3) / 4)).then(answer);
  }

  applyClose(target: Target, excluded: ReadonlySet<string> | undefined, reason: string | undefined): number {
    let count = 0;
    for (const connection of [...this.hub.local.targets(target)]) {
      if (excluded?.has(connection.id)) continue;
      this.deps.endConnection(connection, 'ClosedByServer', reason);
      count++;
    }
    return count;
  }

  /**
   * Applies a membership change to this node's connections that `filter`
   * selects; `changed` hears each group a connection actually joined or left
   * (a durable hub notes it in the session). Returns how many connections the
   * change matched.
   */
  applyGroups(
    target: Target,
    action: GroupAction,
    groups: string[],
    filter?: ConnectionFilter | FilterTerm[],
    changed?: (connection: PubSubConnection, group: string, joined: boolean) => void,
    refused?: (connection: PubSubConnection, group: string) => void,
  ): number {
    let count = 0;
    for (const connection of [...this.hub.local.targets(target)]) {
      if (connection.ended) continue;
      if (filter && !selects(filter, connection)) continue;
      count++;
      if (action === 'add') {
        for (const g of groups) {
          if (connection.groups.has(g)) continue;
          // Every edge (and a session's replay) skips the same joins: the limit holds whoever asks.
          if (!connection.mayJoin(g)) {
            this.deps.metrics.limitRefused('groupsPerConnection');
            this.deps.log.warn({ event: 'limit.reached', limit: 'groupsPerConnection', hub: this.hub.name, connectionId: connection.id });
            refused?.(connection, g);
            break;
          }
          this.hub.local.join(connection, g);
          changed?.(connection, g, true);
        }
      } else {
        for (const g of action === 'removeAll' ? [...connection.groups] : groups) {
          if (!connection.groups.has(g)) continue;
          this.hub.local.leave(connection, g);
          changed?.(connection, g, false);
        }
      }
    }
    return count;
  }

  countTargets(target: Target): number {
    let count = 0;
    for (const connection of this.hub.local.targets(target)) if (!connection.ended) count++;
    return count;
  }

  /**
   * The first `top` members after `after`, by connection id. Not a sort of the
   * whole group per page: past twice `top` candidates the list is cut back to
   * the `top` lowest, and ids above the last of them are passed over (paging
   * through 100,000 members a few at a time sorted them all each time).
   */
  members(group: string, top: number, after?: string): GroupMember[] {
    let out: GroupMember[] = [];
    let above: string | undefined;
    for (const c of this.hub.local.targets({ kind: 'group', name: group })) {
      if (after !== undefined && c.id <= after) continue;
      if (above !== undefined && c.id >= above) continue;
      out.push(c.userId === null ? { connectionId: c.id } : { connectionId: c.id, userId: c.userId });
      if (out.length >= 2 * top) {
        out = out.sort(byConnectionId).slice(0, top);
        above = out[top - 1].connectionId;
      }
    }
    return out.sort(byConnectionId).slice(0, top);
  }

  /** Answers a ps.list: as many of the members asked for as fit the bus's max_payload (`cut` when not all did). */
  /** `behind`: this edge had not applied the stream up to the question in time (atPosition). */
  private answerList(message: BusMessage, group: string, top: number, after?: string, behind = false): void {
    let members = this.members(group, top, after);
    let cut = false;
    const encode = () => encodeEdgeMessage({ op: 'ps.done', count: 0, edge: this.deps.nodeId, members, ...(cut && { cut }), ...(behind && { behind }) });
    let data = encode();
    // Before: an answer over max_payload was not sent at all, and the asker listed the group without this edge.
    while (data.length > this.deps.bus.maxPayload && members.length > 1) {
      members = members.slice(0, Math.ceil((members.length * this.deps.bus.maxPayload) / data.length) - 1 || 1);
      cut = true;
      data = encode();
    }
    respond(this.deps.bus, message, data);
  }

  async applyPermission(connectionId: string, method: 'PUT' | 'DELETE' | 'HEAD', permission: Permission, group?: string): Promise<PermissionOutcome> {
    const connection = this.hub.local.connections.get(connectionId);
    if (!connection || connection.ended) return 'absent';
    const max = this.deps.limits.groupsPerConnection;
    if (method === 'HEAD') {
      return (group === undefined ? connection.permissions.allowsEvery(permission) : connection.permissions.allows(permission, group)) ? 'applied' : 'absent';
    }
    const applied = method === 'PUT' ? connection.permissions.grant(permission, group, max) : connection.permissions.revoke(permission, group, max);
    if (!applied) return 'full';
    // A durable hub's session checkpoint carries the permissions (not the stream): stored before the answer, as an
    // acknowledged event is. Before, written at the next tick: an edge killed within it undid an acknowledged change.
    if (connection.session && this.hub.durable && !(await this.hub.durable.storeSession(connection))) return 'unstored';
    return 'applied';
  }
}
