// Builds the relay's configuration: the JSON file, then environment variables,
// then command-line flags (each overrides the one before), validated against
// schemas/config.schema.json. A bad value stops start-up with a ConfigError
// naming the key and the problem.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { describeErrors, validateConfig } from '../validation/schemas.ts';
import type { RelayConfig } from './types.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Overrides that flags or the environment may set, by config key path. */
export interface ConfigOverrides {
  'listen.host'?: string;
  'listen.port'?: string | number;
  publicUrl?: string;
  'log.level'?: string;
  nodeId?: string;
  /** Comma-separated NATS URLs: switches the bus to NATS. */
  'bus.servers'?: string;
}

/** Environment variable for each overridable key. */
export const ENV_KEYS: Record<keyof ConfigOverrides, string> = {
  'listen.host': 'EDGE_RELAY_HOST',
  'listen.port': 'EDGE_RELAY_PORT',
  publicUrl: 'EDGE_RELAY_PUBLIC_URL',
  'log.level': 'EDGE_RELAY_LOG_LEVEL',
  nodeId: 'EDGE_RELAY_NODE_ID',
  'bus.servers': 'EDGE_RELAY_NATS',
};

export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`config: cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config: ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

export function overridesFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  const out: ConfigOverrides = {};
  for (const [key, name] of Object.entries(ENV_KEYS) as [keyof ConfigOverrides, string][]) {
    const value = env[name];
    if (value !== undefined && value !== '') out[key] = value;
  }
  return out;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}

function coerce(key: keyof ConfigOverrides, value: string | number): unknown {
  if (key === 'listen.port' && typeof value === 'string') {
    if (!/^\d+$/.test(value)) throw new ConfigError(`config: listen.port: "${value}" is not a port number`);
    return Number(value);
  }
  if (key === 'bus.servers') return String(value).split(',').map((s) => s.trim()).filter((s) => s !== '');
  return value;
}

/**
 * Validates a raw config object (from the file) with overrides applied on top.
 * Later overrides win: pass env overrides first, then flags.
 */
export function buildConfig(raw: unknown, ...layers: ConfigOverrides[]): RelayConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError('config: (root): must be a JSON object');
  }
  const merged = structuredClone(raw) as Record<string, unknown>;
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer) as [keyof ConfigOverrides, string | number][]) {
      if (value === undefined) continue;
      setPath(merged, key, coerce(key, value));
      if (key === 'bus.servers') setPath(merged, 'bus.kind', 'nats');
    }
  }
  if (!validateConfig(merged)) {
    throw new ConfigError(`config: ${describeErrors(validateConfig.errors)}`);
  }
  const config = merged as unknown as RelayConfig;
  config.nodeId ??= `${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${process.pid}`;
  checkCrossFieldRules(config);
  return config;
}

function checkCrossFieldRules(config: RelayConfig): void {
  const seen = new Set<string>();
  for (const [i, hc] of config.hybridConnections.entries()) {
    const key = hc.name.toLowerCase();
    if (seen.has(key)) throw new ConfigError(`config: /hybridConnections/${i}/name: "${hc.name}" is listed twice`);
    seen.add(key);
  }
  for (const [i, hc] of config.hybridConnections.entries()) {
    if (['client', 'api'].includes(hc.name.toLowerCase())) {
      throw new ConfigError(`config: /hybridConnections/${i}/name: "${hc.name}" is reserved`);
    }
  }
  const hubs = new Set<string>();
  for (const [i, hub] of config.pubsub.hubs.entries()) {
    const key = hub.name.toLowerCase();
    if (hubs.has(key)) throw new ConfigError(`config: /pubsub/hubs/${i}/name: "${hub.name}" is listed twice`);
    hubs.add(key);
  }
  for (const [i, hc] of config.hybridConnections.entries()) {
    if (hc.presence && !hubs.has(hc.presence.hub.toLowerCase())) {
      throw new ConfigError(`config: /hybridConnections/${i}/presence/hub: "${hc.presence.hub}" is not in pubsub.hubs`);
    }
  }
  for (const [i, hub] of config.pubsub.hubs.entries()) {
    if (hub.upstream && hub.eventHandlers) {
      throw new ConfigError(`config: /pubsub/hubs/${i}/upstream: give eventHandlers or the older upstream, not both`);
    }
    for (const [j, handler] of (hub.eventHandlers ?? []).entries()) {
      if (handler.auth?.type === 'bearer' && !handler.auth.token) {
        throw new ConfigError(`config: /pubsub/hubs/${i}/eventHandlers/${j}/auth: type bearer needs a token`);
      }
    }
  }
  for (const [i, hub] of config.pubsub.hubs.entries()) {
    if (!hub.history || config.bus.kind === 'memory') continue;
    if (!config.bus.jetstream.enabled || !hub.durable) {
      throw new ConfigError(
        `config: /pubsub/hubs/${i}/history: on the NATS bus a hub keeps history in JetStream: needs bus.jetstream.enabled and the hub durable`,
      );
    }
  }
  if (config.timeouts.idleMs <= config.timeouts.keepAliveIntervalMs) {
    throw new ConfigError('config: /timeouts/idleMs: must be greater than timeouts.keepAliveIntervalMs');
  }
}

export function loadConfig(path: string, env: NodeJS.ProcessEnv, flags: ConfigOverrides): RelayConfig {
  return buildConfig(readConfigFile(path), overridesFromEnv(env), flags);
}
