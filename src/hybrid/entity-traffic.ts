// Traffic per hybrid connection on this edge, for the dashboard (GET
// /$relay/stats): relayed requests and connects, failures, bytes, and the
// relayed WebSockets open now. Relayed WebSocket bytes are read from the open
// splices when asked, so bytes/s moves while a tunnel streams; an HTTP
// exchange's bodies count when it ends. The edge's totals are kept apart from
// the rows, which are bounded (MAX_TRACKED_ENTITIES): past it the oldest row
// without an open WebSocket is forgotten (its counts stay in the totals), so
// senders naming endless made-up entities cannot grow the table.
import type { EntityStats } from '../bus/messages.ts';
import type { HybridEntity } from './entity-catalog.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export const MAX_TRACKED_ENTITIES = 1000;

/** What the table needs of an open relayed WebSocket: its bytes so far. */
export interface OpenSplice {
  readonly bytes: number;
}

interface Row {
  name: string;
  requests: number;
  connects: number;
  failures: number;
  /** Bytes of finished exchanges and closed WebSockets. */
  bytes: number;
  open: Set<OpenSplice>;
}

export class EntityTraffic {
  private readonly rows = new Map<string, Row>();
  private readonly open = new Set<OpenSplice>();
  requests = 0;
  connects = 0;
  private closedBytes = 0;
  /** Failed connects and requests by error code (codes come from one table: bounded). */
  readonly failures = new Map<string, number>();

  /** Every byte relayed so far, open WebSockets included. */
  get bytes(): number {
    let bytes = this.closedBytes;
    for (const splice of this.open) bytes += splice.bytes;
    return bytes;
  }

  requested(entity: HybridEntity, bytes: number): void {
    this.requests++;
    this.closedBytes += bytes;
    const row = this.row(entity);
    row.requests++;
    row.bytes += bytes;
  }

  spliceOpened(entity: HybridEntity, splice: OpenSplice): void {
    this.connects++;
    this.open.add(splice);
    const row = this.row(entity);
    row.connects++;
    row.open.add(splice);
  }

  spliceClosed(entity: HybridEntity, splice: OpenSplice, bytes: number): void {
    this.open.delete(splice);
    this.closedBytes += bytes;
    const row = this.rows.get(entity.key);
    if (row?.open.delete(splice)) row.bytes += bytes;
  }

  /** A connect or request failed; `entity` is a name when no such hybrid connection exists (no row is made for it). */
  failed(code: string, entity: HybridEntity | string | undefined): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
    if (entity !== undefined && typeof entity !== 'string') this.row(entity).failures++;
  }

  /** The busiest `top` entities (listeners and open WebSockets first, then traffic), and how many there are. */
  snapshot(listeners: Map<string, number>, top: number): { entityCount: number; entities: EntityStats[] } {
    const byKey = new Map<string, EntityStats>();
    for (const [key, row] of this.rows) {
      let bytes = row.bytes;
      for (const splice of row.open) bytes += splice.bytes;
      byKey.set(key, { name: row.name, listeners: 0, senders: row.open.size, requests: row.requests, connects: row.connects, failures: row.failures, bytes });
    }
    for (const [name, count] of listeners) {
      const key = asciiLowerCase(name);
      const stats = byKey.get(key) ?? { name, listeners: 0, senders: 0, requests: 0, connects: 0, failures: 0, bytes: 0 };
      stats.listeners = count;
      byKey.set(key, stats);
    }
    const all = [...byKey.values()];
    all.sort(
      (a, b) =>
        b.listeners + b.senders - (a.listeners + a.senders) ||
        b.requests + b.connects - (a.requests + a.connects) ||
        a.name.localeCompare(b.name),
    );
    return { entityCount: all.length, entities: all.slice(0, top).map((e) => ({ ...e, name: e.name.slice(0, 300) })) };
  }

  private row(entity: HybridEntity): Row {
    let row = this.rows.get(entity.key);
    if (row) return row;
    if (this.rows.size >= MAX_TRACKED_ENTITIES) this.evictOne();
    row = { name: entity.name, requests: 0, connects: 0, failures: 0, bytes: 0, open: new Set() };
    this.rows.set(entity.key, row);
    return row;
  }

  /** Forgets the oldest row with no open WebSocket (or, when all have one, the oldest). */
  private evictOne(): void {
    let victim: string | undefined;
    for (const [key, row] of this.rows) {
      victim ??= key;
      if (row.open.size === 0) {
        victim = key;
        break;
      }
    }
    if (victim !== undefined) this.rows.delete(victim);
  }
}
