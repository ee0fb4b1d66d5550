// One hub's membership on this node: its connections, groups and users, and
// fan-out to them. A group exists while it has members. Group and user names
// are map keys only (never parsed), so no character in them can reach another
// group or hub. Retained reliable sessions stay members while detached, so
// messages for them are buffered until they recover or expire.
import type { HubConfig } from '../config/types.ts';
import { SharedMessage, type DataMessage } from './downstream.ts';
import type { PubSubConnection } from './pubsub-connection.ts';

/** Called after a fan-out for each connection that could not keep up. */
export type EndConnection = (connection: PubSubConnection, code: 'SlowConsumer' | 'SessionBufferFull') => void;

export class Hub {
  readonly connections = new Map<string, PubSubConnection>();
  private readonly groups = new Map<string, Set<PubSubConnection>>();
  private readonly users = new Map<string, Set<PubSubConnection>>();

  constructor(
    readonly config: HubConfig,
    private readonly endConnection: EndConnection,
  ) {}

  get name(): string {
    return this.config.name;
  }

  add(connection: PubSubConnection): void {
    this.connections.set(connection.id, connection);
    if (connection.userId !== null) addTo(this.users, connection.userId, connection);
  }

  remove(connection: PubSubConnection): void {
    if (this.connections.get(connection.id) !== connection) return;
    this.connections.delete(connection.id);
    for (const group of connection.groups) removeFrom(this.groups, group, connection);
    connection.groups.clear();
    if (connection.userId !== null) removeFrom(this.users, connection.userId, connection);
  }

  join(connection: PubSubConnection, group: string): void {
    if (connection.groups.has(group)) return;
    connection.groups.add(group);
    addTo(this.groups, group, connection);
  }

  leave(connection: PubSubConnection, group: string): void {
    if (!connection.groups.delete(group)) return;
    removeFrom(this.groups, group, connection);
  }

  hasGroup(group: string): boolean {
    return this.groups.has(group);
  }

  hasUser(userId: string): boolean {
    return this.users.has(userId);
  }

  userConnections(userId: string): Iterable<PubSubConnection> {
    return this.users.get(userId) ?? [];
  }

  groupMembers(group: string): Iterable<PubSubConnection> {
    return this.groups.get(group) ?? [];
  }

  /** Sends to every member of `group`, except `excluded` connection ids. Returns recipients. */
  sendToGroup(group: string, message: DataMessage, excluded?: ReadonlySet<string>): number {
    const members = this.groups.get(group);
    return members ? this.deliverAll(members, new SharedMessage(message), excluded) : 0;
  }

  sendToAll(message: DataMessage, excluded?: ReadonlySet<string>): number {
    return this.deliverAll(this.connections.values(), new SharedMessage(message), excluded);
  }

  sendToUser(userId: string, message: DataMessage): number {
    const connections = this.users.get(userId);
    return connections ? this.deliverAll(connections, new SharedMessage(message)) : 0;
  }

  sendToConnection(connectionId: string, message: DataMessage): number {
    const connection = this.connections.get(connectionId);
    return connection ? this.deliverAll([connection], new SharedMessage(message)) : 0;
  }

  private deliverAll(targets: Iterable<PubSubConnection>, message: SharedMessage, excluded?: ReadonlySet<string>): number {
    let count = 0;
    let failed: [PubSubConnection, 'SlowConsumer' | 'SessionBufferFull'][] | undefined;
    for (const connection of targets) {
      if (excluded?.has(connection.id)) continue;
      const failure = connection.deliver(message);
      if (failure) (failed ??= []).push([connection, failure]);
      else count++;
    }
    // Ended after the loop: ending a connection changes the sets being iterated.
    if (failed) for (const [connection, code] of failed) this.endConnection(connection, code);
    return count;
  }
}

function addTo(index: Map<string, Set<PubSubConnection>>, key: string, connection: PubSubConnection): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(connection);
}

function removeFrom(index: Map<string, Set<PubSubConnection>>, key: string, connection: PubSubConnection): void {
  const set = index.get(key);
  if (!set) return;
  set.delete(connection);
  if (set.size === 0) index.delete(key);
}
