// One hub's membership on this node: its connections, groups and users, and
// delivery to them. A group exists here while it has local members. Group and
// user names are map keys only (never parsed), so no character in them can
// reach another group or hub. Retained reliable sessions stay members while
// detached, so messages for them are buffered until they recover or expire.
// The watcher hears when a group, user or connection appears or goes, which
// is when hub-cluster.ts subscribes to or leaves its bus subject.
import type { Target } from '../bus/messages.ts';
import type { HubConfig } from '../config/types.ts';
import type { ConnectionFilter } from './connection-filter.ts';
import type { SharedMessage } from './downstream.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** Called after a delivery for each connection that could not keep up. */
export type EndConnection = (connection: PubSubConnection, code: 'SlowConsumer' | 'SessionBufferFull') => void;

export interface MembershipWatcher {
  opened(kind: 'group' | 'user' | 'connection', name: string): void;
  closed(kind: 'group' | 'user' | 'connection', name: string): void;
}

/** Who a message or an operation is for (the same shape crosses the bus). */
export type { Target };

export class Hub {
  readonly connections = new Map<string, PubSubConnection>();
  private readonly groups = new Map<string, Set<PubSubConnection>>();
  private readonly users = new Map<string, Set<PubSubConnection>>();

  constructor(
    readonly config: HubConfig,
    private readonly endConnection: EndConnection,
    private readonly watcher: MembershipWatcher,
  ) {}

  get name(): string {
    return this.config.name;
  }

  /** Lower-case name: hubs are found case-insensitively. */
  get key(): string {
    return asciiLowerCase(this.config.name);
  }

  add(connection: PubSubConnection): void {
    this.connections.set(connection.id, connection);
    this.watcher.opened('connection', connection.id);
    if (connection.userId !== null) this.addTo(this.users, 'user', connection.userId, connection);
  }

  /** Adds a connection that arrives with its groups already set (a session rebuilt from a durable hub's stream). */
  adopt(connection: PubSubConnection): void {
    this.add(connection);
    for (const group of connection.groups) this.addTo(this.groups, 'group', group, connection);
  }

  remove(connection: PubSubConnection): void {
    if (this.connections.get(connection.id) !== connection) return;
    this.connections.delete(connection.id);
    this.watcher.closed('connection', connection.id);
    for (const group of connection.groups) this.removeFrom(this.groups, 'group', group, connection);
    connection.groups.clear();
    if (connection.userId !== null) this.removeFrom(this.users, 'user', connection.userId, connection);
  }

  /** Adds to a group; returns true when the group is new on this node. */
  join(connection: PubSubConnection, group: string): boolean {
    if (connection.groups.has(group)) return false;
    connection.groups.add(group);
    return this.addTo(this.groups, 'group', group, connection);
  }

  leave(connection: PubSubConnection, group: string): void {
    if (!connection.groups.delete(group)) return;
    this.removeFrom(this.groups, 'group', group, connection);
  }

  /** Groups with members on this node. */
  get groupCount(): number {
    return this.groups.size;
  }

  /** The `top` largest groups on this node, largest first (one pass, whatever the number of groups). */
  largestGroups(top: number): { name: string; members: number }[] {
    const best: { name: string; members: number }[] = [];
    for (const [name, members] of this.groups) {
      if (best.length === top && members.size <= best[top - 1].members) continue;
      let i = best.length < top ? best.length : top - 1;
      while (i > 0 && best[i - 1].members < members.size) i--;
      best.splice(i, 0, { name, members: members.size });
      if (best.length > top) best.pop();
    }
    return best;
  }

  /** The local connections a target names. */
  targets(target: Target): Iterable<PubSubConnection> {
    switch (target.kind) {
      case 'all':
        return this.connections.values();
      case 'group':
        return this.groups.get(target.name) ?? [];
      case 'user':
        return this.users.get(target.name) ?? [];
      case 'connection': {
        const connection = this.connections.get(target.name);
        return connection && !connection.ended ? [connection] : [];
      }
    }
  }

  /** Delivers one event to every local connection the target names, except `excluded` ids and those `filter` does not select. */
  deliver(target: Target, message: SharedMessage, excluded?: ReadonlySet<string>, filter?: ConnectionFilter): number {
    let count = 0;
    let failed: [PubSubConnection, 'SlowConsumer' | 'SessionBufferFull'][] | undefined;
    // One excluded id (a client's noEcho: itself) is compared, not looked up, for each recipient.
    const onlyExcluded = excluded?.size === 1 ? (excluded.values().next().value as string) : undefined;
    const manyExcluded = excluded && excluded.size > 1 ? excluded : undefined;
    for (const connection of this.targets(target)) {
      if (onlyExcluded !== undefined ? connection.id === onlyExcluded : manyExcluded?.has(connection.id)) continue;
      if (filter && !filter.matches(connection)) continue;
      const failure = connection.deliver(message);
      if (failure) (failed ??= []).push([connection, failure]);
      else count++;
    }
    // Held by a reliable session, it may live long after this: what only this loop needed goes (downstream.ts).
    if (message.logIndex !== undefined) message.dropLiveFrames();
    // Ended after the loop: ending a connection changes the sets being iterated.
    if (failed) for (const [connection, code] of failed) this.endConnection(connection, code);
    return count;
  }

  private addTo(index: Map<string, Set<PubSubConnection>>, kind: 'group' | 'user', key: string, connection: PubSubConnection): boolean {
    let set = index.get(key);
    const opened = !set;
    if (!set) index.set(key, (set = new Set()));
    set.add(connection);
    if (opened) this.watcher.opened(kind, key);
    return opened;
  }

  private removeFrom(index: Map<string, Set<PubSubConnection>>, kind: 'group' | 'user', key: string, connection: PubSubConnection): void {
    const set = index.get(key);
    if (!set) return;
    set.delete(connection);
    if (set.size === 0) {
      index.delete(key);
      this.watcher.closed(kind, key);
    }
  }
}
