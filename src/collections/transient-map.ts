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

type Slots<T> = (T | undefined)[];

export class TransientMap<V> {
  private keys = emptySlots<string | typeof DELETED>(MIN_CAPACITY);
  private vals = emptySlots<V>(MIN_CAPACITY);
  private mask = MIN_CAPACITY - 1;
  private live = 0;
  /** Live and deleted slots: a rebuild when they fill half the table. */
  private used = 0;

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
    this.insertNew(key, value);
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
    for (const old of this.replaceArrays(MIN_CAPACITY)) old.fill(undefined);
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

  /** Calls `visit` for each entry, allocating nothing; the table must not change meanwhile (entries() gives a copy for that). */
  forEach(visit: (value: V, key: string) => void): void {
    for (let i = 0; i < this.keys.length; i++) {
      const k = this.keys[i];
      if (k !== undefined && k !== DELETED) visit(this.vals[i]!, k);
    }
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

  /** Puts a key that is not in the table in the first free or deleted slot on its probe. */
  private insertNew(key: string, value: V): void {
    let slot = hashOf(key) & this.mask;
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
  }

  /** New arrays sized for `needed` live entries (at most a quarter full), the live entries moved over. */
  private rebuild(needed: number): void {
    let capacity = MIN_CAPACITY;
    while (capacity < needed * 4) capacity *= 2;
    const [oldKeys, oldVals] = this.replaceArrays(capacity);
    for (let i = 0; i < oldKeys.length; i++) {
      const k = oldKeys[i];
      if (k !== undefined && k !== DELETED) this.insertNew(k, oldVals[i]!);
    }
    oldKeys.fill(undefined);
    oldVals.fill(undefined);
  }

  /** Starts on empty arrays of `capacity` slots; returns the old ones, for the caller to empty (a dead array holds nothing). */
  private replaceArrays(capacity: number): [Slots<string | typeof DELETED>, Slots<V>] {
    const old: [Slots<string | typeof DELETED>, Slots<V>] = [this.keys, this.vals];
    this.keys = emptySlots(capacity);
    this.vals = emptySlots(capacity);
    this.mask = capacity - 1;
    this.live = 0;
    this.used = 0;
    return old;
  }
}

function emptySlots<T>(capacity: number): Slots<T> {
  return new Array<T | undefined>(capacity).fill(undefined);
}

/** FNV-1a over the key's UTF-16 code units. */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
