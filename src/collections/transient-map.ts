// A string-keyed table for entries that come and go with every request or
// event (the rendezvous table, a control channel's outstanding requests,
// requests routed to other edges, stream publishes awaiting JetStream's
// answer), built on two plain arrays instead of a `Map`, for the garbage
// collector's sake.
//
// V8 rebuilds a Map's table as entries come and go (deletions leave holes;
// the table is rebuilt when full of them, or shrunk), and the old table keeps
// its entries and a pointer to the new one. Once a major collection has moved
// a busy table to the old generation, each table it is replaced by is reached
// from the one before, dead but not collected until the next major
// collection: the scavenger kept every table, and every request in them, and
// moved them to the old generation too, whose growth brought the next major
// collection, which moved the current table there again. Under relayed HTTP
// load (wrk, 128 connections) that was ~1.5 MB moved per scavenge, a major
// collection every ~2 s and half the request rate, from the first major
// collection under load on (after an idle pause, the memory reducer's) for as
// long as the load lasted (docs/performance.md, "Bursts after a pause").
//
// Here a rebuild copies the live entries to new arrays and empties the old
// ones, and nothing points from old arrays to new: a dead array holds nothing.
// Open addressing with linear probing; a deleted slot is marked until the next
// rebuild, which comes when live and marked slots fill half the table.

/** Marks a slot whose entry was deleted: probing goes on past it. */
const DELETED = Symbol('deleted');
const MIN_CAPACITY = 16;

export class TransientMap<V> {
  private keys: (string | typeof DELETED | undefined)[];
  private vals: (V | undefined)[];
  private mask: number;
  private live = 0;
  /** Live and deleted slots: a rebuild when they fill half the table. */
  private used = 0;

  constructor() {
    this.keys = new Array(MIN_CAPACITY).fill(undefined);
    this.vals = new Array(MIN_CAPACITY).fill(undefined);
    this.mask = MIN_CAPACITY - 1;
  }

  get size(): number {
    return this.live;
  }

  get(key: string): V | undefined {
    const slot = this.find(key);
    return slot < 0 ? undefined : this.vals[slot];
  }

  has(key: string): boolean {
    return this.find(key) >= 0;
  }

  set(key: string, value: V): this {
    const found = this.find(key);
    if (found >= 0) {
      this.vals[found] = value;
      return this;
    }
    if ((this.used + 1) * 2 > this.keys.length) this.rebuild(this.live + 1);
    let slot = hashOf(key) & this.mask;
    // The first free or deleted slot on the key's probe (the key is not in the table).
    for (;;) {
      const k = this.keys[slot];
      if (k === undefined) {
        this.used++;
        break;
      }
      if (k === DELETED) break;
      slot = (slot + 1) & this.mask;
    }
    this.keys[slot] = key;
    this.vals[slot] = value;
    this.live++;
    return this;
  }

  /** Removes the entry; returns whether it was there. */
  delete(key: string): boolean {
    const slot = this.find(key);
    if (slot < 0) return false;
    this.keys[slot] = DELETED;
    this.vals[slot] = undefined;
    this.live--;
    return true;
  }

  /** Forgets every entry (new arrays: the old ones are emptied, as at a rebuild). */
  clear(): void {
    this.keys.fill(undefined);
    this.vals.fill(undefined);
    this.keys = new Array(MIN_CAPACITY).fill(undefined);
    this.vals = new Array(MIN_CAPACITY).fill(undefined);
    this.mask = MIN_CAPACITY - 1;
    this.live = 0;
    this.used = 0;
  }

  /** The values, as an array of their own: the table may change while it is read. */
  values(): V[] {
    const out: V[] = [];
    for (let i = 0; i < this.keys.length; i++) {
      const k = this.keys[i];
      if (k !== undefined && k !== DELETED) out.push(this.vals[i]!);
    }
    return out;
  }

  /** The entries, as an array of their own: the table may change while it is read. */
  entries(): [string, V][] {
    const out: [string, V][] = [];
    for (let i = 0; i < this.keys.length; i++) {
      const k = this.keys[i];
      if (k !== undefined && k !== DELETED) out.push([k, this.vals[i]!]);
    }
    return out;
  }

  private find(key: string): number {
    let slot = hashOf(key) & this.mask;
    for (;;) {
      const k = this.keys[slot];
      if (k === undefined) return -1;
      if (k === key) return slot;
      slot = (slot + 1) & this.mask;
    }
  }

  /** New arrays sized for `needed` live entries (at most a quarter full), the old ones emptied. */
  private rebuild(needed: number): void {
    let capacity = MIN_CAPACITY;
    while (capacity < needed * 4) capacity *= 2;
    const oldKeys = this.keys;
    const oldVals = this.vals;
    this.keys = new Array(capacity).fill(undefined);
    this.vals = new Array(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.used = 0;
    this.live = 0;
    for (let i = 0; i < oldKeys.length; i++) {
      const k = oldKeys[i];
      if (k !== undefined && k !== DELETED) this.set(k, oldVals[i]!);
    }
    oldKeys.fill(undefined);
    oldVals.fill(undefined);
  }
}

/** FNV-1a over the key's UTF-16 code units. */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
