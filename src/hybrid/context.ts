// What the hybrid connection flows share: config, log, listeners, pending
// rendezvous, and how rendezvous addresses are spelled.
import type { Duplex } from 'node:stream';
import type { RelayConfig } from '../config/types.ts';
import { HYBRID_ERRORS, failUpgrade, type HybridErrorCode } from './errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import type { HybridEntity } from './entity-catalog.ts';
import type { ListenerRegistry } from './listener-registry.ts';
import type { RendezvousTable } from './rendezvous-table.ts';

export interface HybridContext {
  config: RelayConfig;
  log: Logger;
  listeners: ListenerRegistry;
  rendezvous: RendezvousTable;
  /** ws(s)://public-host[:port]: the base listeners dial. */
  rendezvousBase: string;
  metrics: RelayMetrics;
  /** What is open right now, for the connections gauge. */
  open: { splices: number; httpRequests: number };
  /** A new rendezvous id (naming this worker process: rendezvous-table.ts). */
  newRendezvousId(): string;
}

/** True (and counted) when an entity has as many connects and requests waiting as limits.pendingPerEntity allows. */
export function pendingLimitReached(ctx: HybridContext, entity: HybridEntity): boolean {
  if (ctx.rendezvous.pendingFor(entity.key) < ctx.config.limits.pendingPerEntity) return false;
  ctx.metrics.limitRefusals.inc({ limit: 'pendingPerEntity' });
  return true;
}

/** Counts a relayed WebSocket that did not open, and answers the sender's upgrade with why. */
export function connectFailed(ctx: HybridContext, socket: Duplex, code: HybridErrorCode, message?: string): void {
  ctx.metrics.rendezvousFailed.inc({ reason: code });
  failUpgrade(socket, code, message);
}

/** Counts a relayed HTTP request by the status its sender got. */
export function countHttpStatus(ctx: HybridContext, status: number | HybridErrorCode): void {
  ctx.metrics.httpRequests.inc({ status: String(typeof status === 'number' ? status : HYBRID_ERRORS[status].status) });
}

/** The address a listener dials to complete rendezvous `id`. */
export function rendezvousAddress(ctx: HybridContext, action: 'accept' | 'request', entity: HybridEntity, id: string): string {
  return `${ctx.rendezvousBase}/$hc/${encodeURIComponent(entity.name)}?sb-hc-action=${action}&sb-hc-id=${id}`;
}
