// Which groups a pub/sub connection may join/leave or send to, from the
// `role` claims of its access token (docs/protocols/web-pubsub.md, "Access tokens"):
//   webpubsub.joinLeaveGroup            any group
//   webpubsub.joinLeaveGroup.<group>    exactly <group> (which may contain dots)
//   webpubsub.joinLeaveGroups.<pattern> groups matching a pattern: `*` within
//                                       one dot-segment, `**` across segments, `?` one char,
//                                       `\` before `*`, `?` or `\` the character itself;
//                                       at most five `*` (more: the role grants nothing)
// and the same three forms for sendToGroup. Without a role a client may only
// send events. Grants made over REST add to the token's roles.

import type { Permission, PermissionSnapshot } from '../bus/messages.ts';

export type { Permission, PermissionSnapshot };

const PREFIX = 'webpubsub.';
/** The longest group name the protocol takes (pubsub-client-message.schema.json; the bus's schema takes the same). */
const MAX_GROUP_NAME = 1024;
/** The most `*` a pattern may have, those of `**` included, as Azure allows (concept-wildcard-group-roles). */
export const MAX_PATTERN_STARS = 5;

/** What one step of a group pattern matches. */
const LITERAL = 0;
/** `?`: one character other than `.`. */
const ONE = 1;
/** `*`: any run of characters within one dot-segment. */
const STAR = 2;
/** `**` (or a longer run of stars): any run of characters, dots included. */
const ANY = 3;

/**
 * A group pattern, compiled once, matched without backtracking: the name is
 * read once, left to right, keeping the set of pattern positions reachable so
 * far (a Thompson NFA, as RE2 does). A check costs at most name length times
 * pattern length steps, whatever the name, where the RegExp this replaces
 * backtracked through every way of splitting a name among the stars (n^4 for
 * `*-*-*-*`: seconds for a 360-character name, minutes for 1024).
 * Characters are code points; every character but the three wildcards is literal, and `\` before `*`, `?` or `\`
 * makes that character literal, as in Azure's pattern syntax (`literal\*star` matches `literal*star` only). Before,
 * the `\` was a character of its own: `project\*123` granted `project\x123` and not `project*123`.
 */
export class GroupPattern {
  private readonly kinds: number[] = [];
  private readonly chars: string[] = [];
  /** How many `*` the pattern has (not escaped ones): Azure allows MAX_PATTERN_STARS. */
  readonly stars: number = 0;

  constructor(readonly source: string) {
    const cs = [...source];
    for (let i = 0; i < cs.length; i++) {
      if (cs[i] === '\\' && (cs[i + 1] === '*' || cs[i + 1] === '?' || cs[i + 1] === '\\')) {
        this.push(LITERAL, cs[++i]);
      } else if (cs[i] === '*') {
        let run = 1;
        while (cs[i + 1] === '*') {
          run++;
          i++;
        }
        this.stars += run;
        this.push(run > 1 ? ANY : STAR, '*');
      } else {
        this.push(cs[i] === '?' ? ONE : LITERAL, cs[i]);
      }
    }
  }

  private push(kind: number, char: string): void {
    this.kinds.push(kind);
    this.chars.push(char);
  }

  matches(name: string): boolean {
    const m = this.kinds.length;
    let current = new Uint8Array(m + 1);
    let next = new Uint8Array(m + 1);
    this.reach(current, 0);
    for (const c of name) {
      next.fill(0);
      let live = false;
      for (let i = 0; i < m; i++) {
        if (current[i] === 0) continue;
        const kind = this.kinds[i];
        let to = -1;
        if (kind === LITERAL) to = this.chars[i] === c ? i + 1 : -1;
        else if (kind === ONE) to = c !== '.' ? i + 1 : -1;
        // A star takes the character and stays where it is.
        else to = kind === ANY || c !== '.' ? i : -1;
        if (to >= 0) {
          this.reach(next, to);
          live = true;
        }
      }
      if (!live) return false;
      [current, next] = [next, current];
    }
    return current[m] === 1;
  }

  /** Marks position `i`, and the positions after it that stars let it skip to (a star may match nothing). */
  private reach(set: Uint8Array, i: number): void {
    while (set[i] === 0) {
      set[i] = 1;
      const kind = this.kinds[i];
      if (kind !== STAR && kind !== ANY) return;
      i++;
    }
  }
}

class PermissionSet {
  any = false;
  readonly exact = new Set<string>();
  readonly patterns: GroupPattern[] = [];
  /** Groups revoked one by one out of `any` or a pattern (a REST revoke with targetName). */
  readonly denied = new Set<string>();

  allows(group: string): boolean {
    if (this.denied.has(group)) return false;
    return this.any || this.exact.has(group) || this.patterns.some((p) => p.matches(group));
  }

  addPattern(pattern: string | GroupPattern): void {
    this.patterns.push(typeof pattern === 'string' ? new GroupPattern(pattern) : pattern);
  }

  snapshot(): PermissionSnapshot {
    const snapshot: PermissionSnapshot = { any: this.any, exact: [...this.exact], patterns: this.patterns.map((p) => p.source) };
    if (this.denied.size > 0) snapshot.denied = [...this.denied];
    return snapshot;
  }

  restore(snapshot: PermissionSnapshot): void {
    this.any = snapshot.any;
    for (const group of snapshot.exact) this.exact.add(group);
    for (const source of snapshot.patterns) this.addPattern(source);
    for (const group of snapshot.denied ?? []) this.denied.add(group);
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

  /** Takes `snapshot`'s grants of `permission` in place of its own. */
  replace(permission: Permission, snapshot: PermissionSnapshot): void {
    const set = new PermissionSet();
    set.restore(snapshot);
    this.sets[permission] = set;
  }

  snapshot(): Record<Permission, PermissionSnapshot> {
    return { joinLeaveGroup: this.sets.joinLeaveGroup.snapshot(), sendToGroup: this.sets.sendToGroup.snapshot() };
  }

  allows(permission: Permission, group: string): boolean {
    return this.sets[permission].allows(group);
  }

  /** True when `permission` holds for every group (a REST check without targetName). */
  allowsEvery(permission: Permission): boolean {
    const set = this.sets[permission];
    return set.any && set.denied.size === 0;
  }

  /**
   * Grants `permission` for one group, or for every group when `group` is
   * undefined. False, changing nothing, when the group would be one more than
   * `maxGroups` named for that permission (granted or revoked one by one).
   */
  grant(permission: Permission, group: string | undefined, maxGroups = Infinity): boolean {
    const set = this.sets[permission];
    if (group === undefined) {
      set.any = true;
      set.denied.clear();
    } else {
      if (!set.exact.has(group) && !set.denied.has(group) && set.exact.size + set.denied.size >= maxGroups) return false;
      set.denied.delete(group);
      set.exact.add(group);
    }
    return true;
  }

  /**
   * Revokes `permission` for one group, or every grant when `group` is
   * undefined. A group the connection may still reach through its role (every
   * group, or a pattern) is denied on its own, so that the revoke holds:
   * false, changing nothing, when that would name one more than `maxGroups`.
   */
  revoke(permission: Permission, group: string | undefined, maxGroups = Infinity): boolean {
    const set = this.sets[permission];
    if (group === undefined) {
      set.any = false;
      set.exact.clear();
      set.patterns.length = 0;
      set.denied.clear();
    } else {
      const named = set.exact.has(group);
      if (!named && set.allows(group) && set.exact.size + set.denied.size >= maxGroups) return false;
      set.exact.delete(group);
      if (set.allows(group)) set.denied.add(group);
    }
    return true;
  }

  private addRole(role: string): void {
    if (!role.startsWith(PREFIX)) return;
    const rest = role.slice(PREFIX.length);
    for (const permission of ['joinLeaveGroup', 'sendToGroup'] as const) {
      const set = this.sets[permission];
      if (rest === permission) set.any = true;
      else if (rest.startsWith(`${permission}.`)) {
        // A group no client can name (empty, or past the protocol's 1,024 characters) grants nothing, and is not kept:
        // a session holding one could not be moved to another edge or read back from its checkpoint, whose bus schema
        // refuses it (found by review: the session was lost, 1008 SessionNotFound).
        const group = rest.slice(permission.length + 1);
        if (group.length >= 1 && group.length <= MAX_GROUP_NAME) set.exact.add(group);
      } else if (rest.startsWith(`${permission}s.`)) {
        const source = rest.slice(permission.length + 2);
        const pattern = source.length <= MAX_GROUP_NAME ? new GroupPattern(source) : undefined;
        // Past Azure's five `*` the role grants nothing, as Microsoft's emulator ignores it (before: it granted).
        if (pattern && pattern.stars <= MAX_PATTERN_STARS) set.addPattern(pattern);
      }
    }
  }
}
