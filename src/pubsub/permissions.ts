// Which groups a pub/sub connection may join/leave or send to, from the
// `role` claims of its access token (docs/protocols/web-pubsub.md, "Access tokens"):
//   webpubsub.joinLeaveGroup            any group
//   webpubsub.joinLeaveGroup.<group>    exactly <group> (which may contain dots)
//   webpubsub.joinLeaveGroups.<pattern> groups matching a pattern: `*` within
//                                       one dot-segment, `**` across segments, `?` one char
// and the same three forms for sendToGroup. Without a role a client may only
// send events. Grants made over REST add to the token's roles.

import type { Permission, PermissionSnapshot } from '../bus/messages.ts';

export type { Permission, PermissionSnapshot };

const PREFIX = 'webpubsub.';

/** Compiles a group pattern to an anchored RegExp; every other character is literal. */
export function compileGroupPattern(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') {
      source += '[^.]*';
    } else if (c === '?') {
      source += '[^.]';
    } else {
      source += c.replace(/[\\^$.|+()[\]{}\-/]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`, 's');
}

class PermissionSet {
  any = false;
  readonly exact = new Set<string>();
  readonly patterns: { source: string; re: RegExp }[] = [];

  allows(group: string): boolean {
    return this.any || this.exact.has(group) || this.patterns.some((p) => p.re.test(group));
  }

  addPattern(source: string): void {
    this.patterns.push({ source, re: compileGroupPattern(source) });
  }

  snapshot(): PermissionSnapshot {
    return { any: this.any, exact: [...this.exact], patterns: this.patterns.map((p) => p.source) };
  }

  restore(snapshot: PermissionSnapshot): void {
    this.any = snapshot.any;
    for (const group of snapshot.exact) this.exact.add(group);
    for (const source of snapshot.patterns) this.addPattern(source);
  }
}

export class ConnectionPermissions {
  private readonly sets: Record<Permission, PermissionSet> = {
    joinLeaveGroup: new PermissionSet(),
    sendToGroup: new PermissionSet(),
  };

  constructor(roles: readonly string[]) {
    for (const role of roles) this.addRole(role);
  }

  static fromSnapshot(snapshot: Record<Permission, PermissionSnapshot>): ConnectionPermissions {
    const permissions = new ConnectionPermissions([]);
    permissions.sets.joinLeaveGroup.restore(snapshot.joinLeaveGroup);
    permissions.sets.sendToGroup.restore(snapshot.sendToGroup);
    return permissions;
  }

  snapshot(): Record<Permission, PermissionSnapshot> {
    return { joinLeaveGroup: this.sets.joinLeaveGroup.snapshot(), sendToGroup: this.sets.sendToGroup.snapshot() };
  }

  allows(permission: Permission, group: string): boolean {
    return this.sets[permission].allows(group);
  }

  /** Grants `permission` for one group, or for every group when `group` is undefined. */
  grant(permission: Permission, group: string | undefined): void {
    if (group === undefined) this.sets[permission].any = true;
    else this.sets[permission].exact.add(group);
  }

  /** Revokes a grant made for one group, or every grant when `group` is undefined. */
  revoke(permission: Permission, group: string | undefined): void {
    const set = this.sets[permission];
    if (group === undefined) {
      set.any = false;
      set.exact.clear();
      set.patterns.length = 0;
    } else {
      set.exact.delete(group);
    }
  }

  private addRole(role: string): void {
    if (!role.startsWith(PREFIX)) return;
    const rest = role.slice(PREFIX.length);
    for (const permission of ['joinLeaveGroup', 'sendToGroup'] as const) {
      const set = this.sets[permission];
      if (rest === permission) set.any = true;
      else if (rest.startsWith(`${permission}.`)) set.exact.add(rest.slice(permission.length + 1));
      else if (rest.startsWith(`${permission}s.`)) set.addPattern(rest.slice(permission.length + 2));
    }
  }
}
