// What the hybrid connection flows share: config, log, listeners, pending
// rendezvous, and how rendezvous addresses are spelled.
import type { FrameSplice } from '../websocket/frame-splice.ts';
import { PIECE_COST } from '../websocket/message-socket.ts';
import type { Duplex } from 'node:stream';
import type { RelayConfig } from '../config/types.ts';
import { keepQueryParams } from '../http/query-params.ts';
import { HYBRID_ERRORS, failUpgrade, type HybridErrorCode } from './errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import { entityToTrace, type HybridEntity } from './entity-catalog.ts';
import type { EntityTraffic } from './entity-traffic.ts';
import type { ListenerRegistry } from './listener-registry.ts';
import type { RendezvousTable } from './rendezvous-table.ts';

/**
 * What a sender's WebSocket address carries past `/$hc/{entity}`: a path
 * suffix and a query, which Azure passes through to the listener in the
 * accept's address (sb-hc-* parameters removed).
 */
/**
 * How many parts (frames, socket reads) a message of at most `bytes` may come
 * in: one per PIECE_COST (64) bytes, as a pub/sub message is charged
 * (message-socket.ts), at least 16. Each part is kept until the message is
 * whole: without this, a message sent a byte at a time cost ~25 times its cap.
 */
export function partsAllowed(bytes: number): number {
  return Math.max(16, Math.floor(bytes / PIECE_COST));
}

export interface HybridPathBelow {
  /** The suffix's segments as a token's scope compares them (scopeSegment). */
  subPath: string[];
  /** The suffix as sent: '' or '/a/b'. */
  rawPath: string;
  /** The query as sent, sb-hc-* parameters removed ('' when none). */
  rawQuery: string;
}

export interface HybridContext {
  config: RelayConfig;
  log: Logger;
  listeners: ListenerRegistry;
  rendezvous: RendezvousTable;
  /**
   * Connects and requests other edges routed to this edge's listeners that are still watched here, per entity key:
   * counted with the rendezvous table against limits.pendingPerEntity (before, each sender's edge counted only its own,
   * so a listener's edge took the limit once from every edge).
   */
  routedHere: Map<string, number>;
  /** ws(s)://public-host[:port]: the base listeners dial. */
  rendezvousBase: string;
  metrics: RelayMetrics;
  /** What is open right now: for the connections gauge, and relayed WebSockets (by entity) for the drain or a reload to close. */
  open: { splices: Map<FrameSplice, HybridEntity>; httpRequests: number };
  /** Traffic per entity, for the dashboard. */
  traffic: EntityTraffic;
  /** A new rendezvous id (naming this worker process: rendezvous-table.ts). */
  newRendezvousId(): string;
  /** The name this relay gives itself in `Via` on relayed HTTP requests and listeners' responses: publicUrl's host name. */
  viaName: string;
}

/** True (and counted) when an entity has as many connects and requests waiting as limits.pendingPerEntity allows. */
export function pendingLimitReached(ctx: HybridContext, entity: HybridEntity): boolean {
  if (ctx.rendezvous.pendingFor(entity.key) + (ctx.routedHere.get(entity.key) ?? 0) < ctx.config.limits.pendingPerEntity) return false;
  ctx.metrics.limitRefused('pendingPerEntity');
  return true;
}

/** Counts a relayed WebSocket that did not open, and answers the sender's upgrade with why. */
export function connectFailed(ctx: HybridContext, socket: Duplex, code: HybridErrorCode, entity: HybridEntity | string, message?: string): void {
  countConnectFailure(ctx, code, entity);
  failUpgrade(socket, code, message);
}

/** As connectFailed, for a sender refused before it was authorized (no such entity, its token): traced under the refusals' cap. */
export function connectRefused(ctx: HybridContext, socket: Duplex, code: HybridErrorCode, entity: HybridEntity | string): void {
  countConnectFailure(ctx, code, entity, undefined, true);
  failUpgrade(socket, code);
}

/**
 * Counts (and traces) a relayed WebSocket that did not open; `entity` is a name when no such hybrid connection exists.
 * `refusal`: the sender was refused before it was authorized (telemetry/trace.ts, the refusals' own cap).
 */
export function countConnectFailure(ctx: HybridContext, code: HybridErrorCode | 'RejectedByListener', entity: HybridEntity | string, status?: number, refusal = false): void {
  ctx.metrics.rendezvousFailed.inc({ reason: code });
  ctx.traffic.failed(code, entity);
  const trace = ctx.metrics.trace;
  if (!trace.on) return;
  const kind = code === 'AcceptTimeout' ? 'connect.timeout' : code === 'RejectedByListener' ? 'connect.rejected' : 'connect.failed';
  const fields = { ...(typeof entity === 'string' ? entityToTrace(entity) : { entity: entity.name }), code, status: status ?? (code === 'RejectedByListener' ? undefined : HYBRID_ERRORS[code].status) };
  if (refusal) trace.emitRefusal(kind, fields);
  else trace.emit(kind, fields);
}

/** Counts a relayed HTTP request by the status its sender got (and a failure by its code). */
export function countHttpStatus(ctx: HybridContext, status: number | HybridErrorCode, entity?: HybridEntity | string): void {
  ctx.metrics.httpRequests.inc({ status: String(typeof status === 'number' ? status : HYBRID_ERRORS[status].status) });
  if (typeof status === 'string') ctx.traffic.failed(status, entity);
}

/**
 * The address a listener dials to complete rendezvous `id`. An accept's
 * carries the sender's path suffix and query, as Azure's does (the listener's
 * client reads the sender's request URI from it), less `statusCode` and
 * `statusDescription`: the relay reads those on the listener's leg as its
 * reject (hyco-ws appends them to this address).
 */
export function rendezvousAddress(ctx: HybridContext, action: 'accept' | 'request', entity: HybridEntity, id: string, below?: HybridPathBelow): string {
  // A raw `#` (Node's parser lets it through) would end the address for the listener's client.
  const path = (below?.rawPath ?? '').replace(/#/g, '%23');
  const base = `${ctx.rendezvousBase}/$hc/${encodeURIComponent(entity.name)}${path}?sb-hc-action=${action}&sb-hc-id=${id}`;
  const query = below ? forwardedQuery(below.rawQuery).replace(/#/g, '%23') : '';
  return query ? `${base}&${query}` : base;
}

/** Names the relay reads on a listener's leg (its reject), however a sender spells them. */
const LEG_PARAMS = new Set(['statuscode', 'statusdescription']);

/**
 * A sender's query as it rides in an accept's address: without any parameter
 * the relay reads on the listener's leg (`statusCode`, `statusDescription`,
 * any `sb-hc-*`, even bare), compared decoded and in any case, so a sender
 * can neither fake its listener's reject nor take the place of the one
 * hyco-ws appends.
 */
function forwardedQuery(rawQuery: string): string {
  return keepQueryParams(rawQuery, (_pair, name) => {
    const lower = name.toLowerCase();
    return !LEG_PARAMS.has(lower) && !lower.startsWith('sb-hc-');
  });
}

/** A request target without its query, where tokens and secrets travel: what a trace may show. */
export function pathOf(requestTarget: string): string {
  const q = requestTarget.indexOf('?');
  return q < 0 ? requestTarget : requestTarget.slice(0, q);
}
