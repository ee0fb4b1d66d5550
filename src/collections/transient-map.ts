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
//
// Each slot keeps its key's hash beside it: an operation hashes its key once
// (set hashed it twice, to look it up and to insert it), a rebuild hashes
// nothing, and a probe compares a key's text only where the hashes match.
// Hashing the 36-character ids (the rendezvous table's, a control channel's)
// was the relay's largest own cost per relayed HTTP request: ~11,000
// instructions of ~156,000 (bench/http-instructions.ts).

import { randomBytes } from 'node:crypto';

/** Marks a slot whose entry was deleted: probing goes on past it. */
const DELETED = Symbol('deleted');
const MIN_CAPACITY = 16;
/** Where every key's hash starts (hashOf): which keys share a probe run is not known outside this process. */
const HASH_SEED = randomBytes(4).readInt32LE(0);

type Slots<T> = (T | undefined)[];

export class TransientMap<V> {
  private keys = emptySlots<string | typeof DELETED>(MIN_CAPACITY);
  private vals = emptySlots<V>(MIN_CAPACITY);
  /** The hash of the key in each used slot (hashOf). */
  private hashes = emptyHashes(MIN_CAPACITY);
  private mask = MIN_CAPACITY - 1;
  private live = 0;
  /** Live and deleted slots: a rebuild when they fill half the table. */
  private used = 0;

  get size(): number {
    return this.live;
  }

  get(key: string): V | undefined {
    const slot = this.find(key, hashOf(key));
    return slot < 0 ? undefined : this.vals[slot];
  }

  has(key: string): boolean {
    return this.find(key, hashOf(key)) >= 0;
  }

  set(key: string, value: V): this {
    const hash = hashOf(key);
    const found = this.find(key, hash);
    if (found >= 0) {
      this.vals[found] = value;
      return this;
    }
    if ((this.used + 1) * 2 > this.keys.length) this.rebuild(this.live + 1);
    this.insertNew(key, hash, value);
    return this;
  }

  /** Removes the entry; returns whether it was there. */
  delete(key: string): boolean {
    const slot = this.find(key, hashOf(key));
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

  /** The slot holding `key` (whose hash is `hash`), or -1. */
  private find(key: string, hash: number): number {
    let slot = hash & this.mask;
    for (;;) {
      const k = this.keys[slot];
      if (k === undefined) return -1;
      if (this.hashes[slot] === hash && k === key) return slot;
      slot = (slot + 1) & this.mask;
    }
  }

  /** Puts a key that is not in the table in the first free or deleted slot on its probe. */
  private insertNew(key: string, hash: number, value: V): void {
    let slot = hash & this.mask;
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
    this.hashes[slot] = hash;
    this.live++;
  }

  /** New arrays sized for `needed` live entries (at most a quarter full), the live entries moved over. */
  private rebuild(needed: number): void {
    let capacity = MIN_CAPACITY;
    while (capacity < needed * 4) capacity *= 2;
    const oldHashes = this.hashes;
    const [oldKeys, oldVals] = this.replaceArrays(capacity);
    for (let i = 0; i < oldKeys.length; i++) {
      const k = oldKeys[i];
      if (k !== undefined && k !== DELETED) this.insertNew(k, oldHashes[i], oldVals[i]!);
    }
    oldKeys.fill(undefined);
    oldVals.fill(undefined);
  }

  /** Starts on empty arrays of `capacity` slots; returns the old ones, for the caller to empty (a dead array holds nothing). */
  private replaceArrays(capacity: number): [Slots<string | typeof DELETED>, Slots<V>] {
    const old: [Slots<string | typeof DELETED>, Slots<V>] = [this.keys, this.vals];
    this.keys = emptySlots(capacity);
    this.vals = emptySlots(capacity);
    // Numbers only: the old array holds nothing to empty.
    this.hashes = emptyHashes(capacity);
    this.mask = capacity - 1;
    this.live = 0;
    this.used = 0;
    return old;
  }
}

function emptySlots<T>(capacity: number): Slots<T> {
  return new Array<T | undefined>(capacity).fill(undefined);
}

function emptyHashes(capacity: number): number[] {
  return new Array<number>(capacity).fill(0);
}

/**
 * The key's UTF-16 code units two at a time, each pair multiplied and rotated
 * in, then murmur3's finalizer, so that the low bits the table's mask keeps
 * depend on every unit (a product's low bits depend only on its factors' low
 * bits). Half the steps of FNV-1a's one unit at a time: ~320 instructions for
 * a 36-character id against ~590. Kept to 30 bits: V8 holds it as a small
 * integer, no heap number per slot. It starts from a seed drawn when the
 * process starts, so which ASCII keys share a probe run is not known outside
 * the process: the keys are the relay's own random ids, but a stream's
 * message ids end in a client's ackId (`{connection id}:{ackId}`, the ackId
 * checked to be a whole number), and keys made to fall on one probe run
 * would cost every lookup its length. It is no keyed hash: keys with code
 * units of 0x4000 or more can be made to collide under any seed (a flip of
 * 0x8000 in one unit of a pair undone by 0x4000 in the next), so keys from
 * outside must stay ASCII, or this needs a stronger mix per step.
 */
function hashOf(key: string): number {
  const n = key.length;
  let h = HASH_SEED ^ n;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    h = Math.imul(h ^ (key.charCodeAt(i) | (key.charCodeAt(i + 1) << 16)), 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
  }
  if (i < n) h = Math.imul(h ^ key.charCodeAt(i), 0xcc9e2d51);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h & 0x3fffffff;
}
