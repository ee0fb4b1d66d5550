// Rendezvous waiting for a listener to dial in, by their unguessable id (the
// sb-hc-id in the address the listener was given). Counts per entity so one
// busy entity cannot fill the relay's memory.
import { randomFillSync } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { HybridEntity } from './entity-catalog.ts';
import { TransientMap } from '../collections/transient-map.ts';

/**
 * A new rendezvous id: a random UUID (version 4) whose last four hex digits
 * name the worker process holding the rendezvous (serve --workers), so a
 * listener's leg that lands on another worker of the same port can be handed
 * to this one.
 *
 * Written as ASCII bytes from a pool of random bytes and read back as one
 * string: randomUUID's text (16 byte pairs joined one by one), cut and joined
 * to the worker's digits, cost ~5,100 instructions an id against ~1,900, and
 * was a rope in V8 whose every charCodeAt walked it (the id is hashed by its
 * characters at each lookup, collections/transient-map.ts). Every relayed
 * request and connect takes one.
 */
export function newRendezvousId(worker: number): string {
  if (randomUsed + ID_RANDOM_BYTES > randomPool.length) {
    randomFillSync(randomPool);
    randomUsed = 0;
  }
  let at = 0;
  for (let i = 0; i < ID_RANDOM_BYTES; i++) {
    if (at === 8 || at === 13 || at === 18 || at === 23) at++;
    const byte = randomPool[randomUsed + i];
    idText[at++] = HEX_DIGITS[byte >> 4];
    idText[at++] = HEX_DIGITS[byte & 15];
  }
  // RFC 9562's version (4) and variant (10xx) bits, as randomUUID sets them.
  idText[14] = HEX_DIGITS[4];
  idText[19] = HEX_DIGITS[8 | ((randomPool[randomUsed + 8] >> 4) & 3)];
  randomUsed += ID_RANDOM_BYTES;
  idText[32] = HEX_DIGITS[(worker >> 12) & 15];
  idText[33] = HEX_DIGITS[(worker >> 8) & 15];
  idText[34] = HEX_DIGITS[(worker >> 4) & 15];
  idText[35] = HEX_DIGITS[worker & 15];
  return idText.toString('latin1', 0, ID_LENGTH);
}

/** The random bytes of an id: its first 28 hex digits (106 random bits once the version and variant are set, as before). */
const ID_RANDOM_BYTES = 14;
const ID_LENGTH = 36;
const HEX_DIGITS = new Uint8Array(Buffer.from('0123456789abcdef', 'latin1'));
/** Random bytes for the next ids (each byte used once), refilled from the CSPRNG when used up. */
const randomPool = Buffer.alloc(ID_RANDOM_BYTES * 256);
let randomUsed = randomPool.length;
/**
 * The id being written: its dashes stay. A buffer of its own (Buffer.alloc), not a piece of Node's shared pool
 * slab (Buffer.from), where the last id issued, an unguessable token, would sit beside unrelated buffers.
 */
const idText = Buffer.alloc(ID_LENGTH, '00000000-0000-0000-0000-000000000000', 'latin1');

/** The worker a rendezvous id names, or undefined for an id that is not one of ours. */
export function workerOfRendezvousId(id: string): number | undefined {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id) ? parseInt(id.slice(32), 16) : undefined;
}

/** A sender's connect or HTTP request waiting for its listener to dial the rendezvous address. */
export interface PendingRendezvous {
  readonly id: string;
  readonly entity: HybridEntity;
  /** The sb-hc-action a listener's leg for it names: accept (a WebSocket) or request (HTTP). */
  readonly action: 'accept' | 'request';
  /** The listener's leg arrived at the address. */
  arrive(req: IncomingMessage, socket: Duplex, head: Buffer, params: URLSearchParams): void;
  /** The listener that was told to dial lost its control channel first: the sender hears it at once (502). */
  listenerLost(): void;
  /** A reload removed the entity: the sender hears it at once (404 EntityRemoved); a leg dialed later finds nothing. */
  entityRemoved(): void;
}

/** HTTP requests remembered as abandoned at most (the oldest of the entity remembered most forgotten first): a sender hanging up in a loop grows nothing past it. */
const MAX_ABANDONED = 10_000;
/** How long after the oldest abandoned request's end the sweep runs (those ending meanwhile go with it). */
const SWEEP_SLACK_MS = 1000;

export class RendezvousTable<T extends { readonly id: string; readonly entity: HybridEntity } = PendingRendezvous> {
  /** One entry per request in flight: a TransientMap, not a Map (transient-map.ts says why). */
  private readonly entries = new TransientMap<T>();
  private readonly perEntity = new Map<string, number>();
  /**
   * HTTP requests that ended before their listener answered (the sender left, or timed out), oldest first, each
   * until a time: the listener may still dial its address to answer (hyco-https does for an answer over 64 KiB).
   */
  private readonly abandoned = new Map<string, { entityKey: string; until: number }>();
  /**
   * The same ids by entity, oldest first: when MAX_ABANDONED are remembered, the entity remembered most loses its
   * oldest. Before, the oldest of all went: a sender hanging up in a loop on one hybrid connection evicted every
   * other's, whose hyco-https listener then had its late answer refused 404, which ended its process (found by review).
   */
  private readonly abandonedBy = new Map<string, Set<string>>();

  get size(): number {
    return this.entries.size;
  }

  /** HTTP requests remembered as abandoned (for tests and metrics). */
  get abandonedCount(): number {
    return this.abandoned.size;
  }

  pendingFor(entityKey: string): number {
    return this.perEntity.get(entityKey) ?? 0;
  }

  add(entry: T): void {
    this.entries.set(entry.id, entry);
    this.perEntity.set(entry.entity.key, this.pendingFor(entry.entity.key) + 1);
  }

  get(id: string): T | undefined {
    return this.entries.get(id);
  }

  /** The entries of the entities `entityKeys` names. */
  of(entityKeys: ReadonlySet<string>): T[] {
    return this.entries.values().filter((entry) => entityKeys.has(entry.entity.key));
  }

  /** Removes the entry; returns whether it was there. */
  delete(entry: T): boolean {
    if (this.entries.get(entry.id) !== entry) return false;
    this.entries.delete(entry.id);
    const left = this.pendingFor(entry.entity.key) - 1;
    if (left > 0) this.perEntity.set(entry.entity.key, left);
    else this.perEntity.delete(entry.entity.key);
    return true;
  }

  /** Forgets the abandoned requests whose time is up (oldest first; stops at the first that is not). */
  private forgetExpired(now: number): void {
    for (const [id, a] of this.abandoned) {
      if (a.until > now) break;
      this.forget(id, a.entityKey);
    }
  }

  /** A timer for the oldest abandoned request's end (unref'd): an edge gone quiet forgets them too, not only the next abandon(). */
  private sweepTimer: NodeJS.Timeout | undefined;

  private scheduleSweep(): void {
    if (this.sweepTimer !== undefined) return;
    const oldest = this.abandoned.values().next().value;
    if (oldest === undefined) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      this.forgetExpired(Date.now());
      this.scheduleSweep();
    }, Math.max(0, oldest.until - Date.now()) + SWEEP_SLACK_MS);
    this.sweepTimer.unref();
  }

  /** Remembers an HTTP request that ended before its listener answered, for `keepMs`. */
  abandon(entry: T, keepMs: number): void {
    const now = Date.now();
    this.forgetExpired(now);
    if (this.abandoned.size >= MAX_ABANDONED) {
      let most: [string, Set<string>] | undefined;
      for (const held of this.abandonedBy) if (!most || held[1].size > most[1].size) most = held;
      const [entityKey, ids] = most!;
      this.forget(ids.values().next().value!, entityKey);
    }
    this.abandoned.delete(entry.id);
    this.abandoned.set(entry.id, { entityKey: entry.entity.key, until: now + keepMs });
    const ids = this.abandonedBy.get(entry.entity.key) ?? new Set<string>();
    ids.add(entry.id);
    this.abandonedBy.set(entry.entity.key, ids);
    this.scheduleSweep();
  }

  /** Whether `id` names a request of `entityKey` abandoned lately; forgotten once asked (one leg per address). */
  takeAbandoned(id: string, entityKey: string): boolean {
    const a = this.abandoned.get(id);
    if (!a) return false;
    this.forget(id, a.entityKey);
    return a.entityKey === entityKey && a.until > Date.now();
  }

  private forget(id: string, entityKey: string): void {
    this.abandoned.delete(id);
    const ids = this.abandonedBy.get(entityKey);
    if (!ids) return;
    ids.delete(id);
    if (ids.size === 0) this.abandonedBy.delete(entityKey);
  }
}
