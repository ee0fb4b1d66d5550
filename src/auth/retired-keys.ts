// Keys a reload replaced (a SAS rule's or a hub's), still accepted until
// their grace ends (rotationGraceSeconds), so that clients holding tokens
// signed with the old key keep working while they move to the new one.
export class RetiredKeys {
  private readonly byName = new Map<string, { key: string; until: number }[]>();

  /**
   * Accepts `key` for `name` until `until` (ms since epoch). A rotation bounds
   * every key retired before it too: a key replaced twice, the second time
   * with a grace of 0 (after a leak), stops at once, not at the end of the
   * first grace.
   */
  retire(name: string, key: string, until: number): void {
    this.bound(name, until);
    const list = (this.byName.get(name) ?? []).filter((k) => k.key !== key);
    if (until > Date.now()) list.push({ key, until });
    if (list.length > 0) this.byName.set(name, list);
    else this.byName.delete(name);
  }

  /** Every retired key of `name` is accepted until `until` at the latest (a reload's grace bounds those of before it). */
  bound(name: string, until: number): void {
    const list = (this.byName.get(name) ?? []).map((k) => ({ key: k.key, until: Math.min(k.until, until) })).filter((k) => k.until > Date.now());
    if (list.length > 0) this.byName.set(name, list);
    else this.byName.delete(name);
  }

  /** `key` is the current key of `name` again: no longer a retired one. */
  restore(name: string, key: string): void {
    const list = this.byName.get(name)?.filter((k) => k.key !== key);
    if (list && list.length > 0) this.byName.set(name, list);
    else this.byName.delete(name);
  }

  /** The retired keys of `name` still in their grace. */
  keys(name: string, now = Date.now()): string[] {
    const list = this.byName.get(name);
    if (!list) return [];
    const live = list.filter((k) => k.until > now);
    if (live.length === 0) this.byName.delete(name);
    else if (live.length !== list.length) this.byName.set(name, live);
    return live.map((k) => k.key);
  }

  /** The name is gone: its retired keys go with it. */
  forget(name: string): void {
    this.byName.delete(name);
  }

  /** When the next grace running now ends (ms since epoch), or undefined. */
  nextExpiry(now = Date.now()): number | undefined {
    let next: number | undefined;
    for (const list of this.byName.values()) for (const k of list) if (k.until > now) next = Math.min(next ?? Infinity, k.until);
    return next;
  }
}
