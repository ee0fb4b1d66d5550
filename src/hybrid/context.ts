// What the hybrid connection flows share: config, log, listeners, pending
// rendezvous, and how rendezvous addresses are spelled.
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../ops/logger.ts';
import type { HybridEntity } from './entity-catalog.ts';
import type { ListenerRegistry } from './listener-registry.ts';
import type { RendezvousTable } from './rendezvous-table.ts';
import type { HttpExchange } from './http-exchange.ts';
import type { PendingConnect } from './websocket-rendezvous.ts';

export interface HybridContext {
  config: RelayConfig;
  log: Logger;
  listeners: ListenerRegistry;
  rendezvous: RendezvousTable<PendingConnect | HttpExchange>;
  /** ws(s)://public-host[:port]: the base listeners dial. */
  rendezvousBase: string;
}

/** The address a listener dials to complete rendezvous `id`. */
export function rendezvousAddress(ctx: HybridContext, action: 'accept' | 'request', entity: HybridEntity, id: string): string {
  return `${ctx.rendezvousBase}/$hc/${encodeURIComponent(entity.name)}?sb-hc-action=${action}&sb-hc-id=${id}`;
}
