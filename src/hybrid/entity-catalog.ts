// The hybrid connections this relay knows: those in the config and, when
// `autoCreate` is on, those a listener created by attaching. Names compare
// case-insensitively, as in Azure Relay. A reload changes the list in place:
// the entity objects open listeners hold are the ones updated.
import type { HybridConnectionConfig, SenderKind } from '../config/types.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export interface HybridEntity {
  /** The name as first configured or created. */
  name: string;
  /** Lower-case lookup key. */
  key: string;
  requiresClientAuthorization: boolean;
  /** What its listeners take from senders (hybridConnections[].accepts; both when unset, and for a created entity). */
  accepts: ReadonlySet<SenderKind>;
  /** Created by a listener rather than listed in the config. */
  dynamic: boolean;
}

/** Both kinds of sender: a relayed WebSocket and an HTTP request. */
export const ACCEPTS_ALL: ReadonlySet<SenderKind> = new Set(['websocket', 'http']);

/** The entity a listener creates for `name` with autoCreate on: its senders need tokens, and it takes both kinds. */
export function createdEntity(name: string): HybridEntity {
  return { name, key: asciiLowerCase(name), requiresClientAuthorization: true, accepts: ACCEPTS_ALL, dynamic: true };
}

function acceptsOf(hc: HybridConnectionConfig): ReadonlySet<SenderKind> {
  return hc.accepts ? new Set(hc.accepts) : ACCEPTS_ALL;
}

const ENTITY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,259}$/;
const RESERVED = new Set(['client', 'api']);

/** A name a hybrid connection may have: one path segment, not reserved. */
export function isValidEntityName(name: string): boolean {
  return ENTITY_NAME.test(name) && !RESERVED.has(asciiLowerCase(name));
}

/**
 * How the live trace names an entity a request named: as named when it is a
 * valid name (ASCII), otherwise not at all. Any Unicode reached the trace from
 * an unknown name in a request's path, unauthenticated: a zero-width space or a
 * right-to-left override made a 404 read as one of a real entity's (found by review).
 */
export function entityToTrace(name: string): { entity: string } | { detail: string } {
  return isValidEntityName(name) ? { entity: name } : { detail: 'not a valid entity name' };
}

export class EntityCatalog {
  private readonly entities = new Map<string, HybridEntity>();

  constructor(
    configured: HybridConnectionConfig[],
    private autoCreate: boolean,
  ) {
    this.reconfigure(configured, autoCreate);
  }

  /**
   * Takes the list of a reloaded config: new entities are added, kept ones
   * take the new settings, and listed ones no longer listed are removed and
   * returned (their listeners must go). Auto-created entities stay while
   * their listeners do, and autoCreate stays on: turned off, they are removed
   * too (before, they kept taking new listeners for as long as one stayed).
   */
  reconfigure(configured: HybridConnectionConfig[], autoCreate: boolean): HybridEntity[] {
    this.autoCreate = autoCreate;
    const listed = new Set<string>();
    for (const hc of configured) {
      const key = asciiLowerCase(hc.name);
      listed.add(key);
      const existing = this.entities.get(key);
      if (existing) {
        existing.requiresClientAuthorization = hc.requiresClientAuthorization;
        existing.accepts = acceptsOf(hc);
        existing.dynamic = false;
      } else {
        this.entities.set(key, { name: hc.name, key, requiresClientAuthorization: hc.requiresClientAuthorization, accepts: acceptsOf(hc), dynamic: false });
      }
    }
    const removed: HybridEntity[] = [];
    for (const [key, entity] of this.entities) {
      if ((entity.dynamic && autoCreate) || listed.has(key)) continue;
      this.entities.delete(key);
      removed.push(entity);
    }
    return removed;
  }

  get(name: string): HybridEntity | undefined {
    return this.entities.get(asciiLowerCase(name));
  }

  /** The entity, created on the fly when auto-create is on. */
  getForListener(name: string): HybridEntity | undefined {
    const found = this.get(name);
    if (found || !this.autoCreate || !isValidEntityName(name)) return found;
    const created = createdEntity(name);
    this.entities.set(created.key, created);
    return created;
  }

  /**
   * Forgets an auto-created entity once its last listener has gone: that entity, not another under its name (one a
   * reload listed after this one was removed, while a listener of this one was being refused).
   */
  releaseDynamic(entity: HybridEntity): void {
    if (entity.dynamic && this.entities.get(entity.key) === entity) this.entities.delete(entity.key);
  }

  list(): HybridEntity[] {
    return [...this.entities.values()];
  }
}
