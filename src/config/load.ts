// Builds the relay's configuration: the JSON file, then environment variables,
// then command-line flags (each overrides the one before), with secrets taken
// from the environment or files (secrets.ts), validated against
// schemas/config.schema.json. A bad value stops start-up (or a reload) with a
// ConfigError naming the key and the problem.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { describeErrors, validateConfig } from '../validation/schemas.ts';
import { ConfigError } from './errors.ts';
import { resolveFiles, resolveSecrets, type SecretSources } from './secrets.ts';
import type { RelayConfig } from './types.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export { ConfigError };

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

/** `serve`'s flag for each overridable key (serve.ts reads them by these names). */
export const FLAG_KEYS: Record<keyof ConfigOverrides, string> = {
  'listen.host': '--host',
  'listen.port': '--port',
  publicUrl: '--public-url',
  'log.level': '--log-level',
  nodeId: '--node-id',
  'bus.servers': '--nats',
};

/** Where a layer of overrides comes from, as a refusal names it: the environment variable or flag of a key. */
type LayerSource = (key: keyof ConfigOverrides) => string;

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
    throw new ConfigError(`config: ${path} is not valid JSON: ${jsonSyntaxError(text, (err as Error).message)}`);
  }
}

/** How many characters V8 quotes on each side of an unexpected token. */
const V8_CONTEXT_CHARS = 10;

/**
 * What is wrong and where (line and column), never the text itself: V8's
 * message for an unexpected token quotes the characters around it, and a
 * key written in single quotes (a common slip) would go, in part, to the
 * logs and to the answer of POST /$relay/reload.
 */
export function jsonSyntaxError(text: string, message: string): string {
  const place = (position: number) => {
    const before = text.slice(0, position).split('\n');
    return `line ${before.length} column ${before[before.length - 1].length + 1}`;
  };
  const positioned = /^(.*?) (?:in|after) JSON at position (\d+)/s.exec(message);
  if (positioned) return `${positioned[1]} at ${place(Number(positioned[2]))}`;
  const unexpected = /^Unexpected token .*?, (\.\.\.)?"(.*)"(\.\.\.)? is not valid JSON$/s.exec(message);
  if (unexpected) {
    // The quote is the text around the token: `...` + 10 characters + token + 10 + `...`, cut at either end of the text.
    const [, cutBefore, inner, cutAfter] = unexpected;
    const at = text.indexOf(inner);
    if (at >= 0 && (cutBefore || cutAfter)) return `an unexpected character at ${place(cutBefore ? at + V8_CONTEXT_CHARS : at + inner.length - V8_CONTEXT_CHARS)}`;
    return 'an unexpected character';
  }
  if (/^Unexpected end of JSON input/.test(message)) return 'it ends too soon';
  return 'a syntax error';
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
    if (!/^\d+$/.test(value)) throw new ConfigError(`config: listen.port: "${value}" (from --port or EDGE_RELAY_PORT) is not a port number`);
    return Number(value);
  }
  if (key === 'bus.servers') return String(value).split(',').map((s) => s.trim()).filter((s) => s !== '');
  return value;
}

/**
 * Validates a raw config object (from the file) with overrides applied on top.
 * Later overrides win: pass env overrides first, then flags. Secret
 * references are resolved from this process's environment, files relative to
 * the working directory (loadConfig uses the config file's).
 */
export function buildConfig(raw: unknown, ...layers: ConfigOverrides[]): RelayConfig {
  return buildConfigWith(raw, { env: process.env, baseDir: process.cwd() }, layers);
}

function buildConfigWith(raw: unknown, sources: SecretSources, layers: ConfigOverrides[], layerSources: LayerSource[] = []): RelayConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError('config: (root): must be a JSON object');
  }
  const merged = structuredClone(raw) as Record<string, unknown>;
  // The value of each key a later layer set, by its JSON pointer: a refusal says where it came from, not the file.
  const overridden = new Map<string, string>();
  for (const [i, layer] of layers.entries()) {
    for (const [key, value] of Object.entries(layer) as [keyof ConfigOverrides, string | number][]) {
      if (value === undefined) continue;
      setPath(merged, key, coerce(key, value));
      if (key === 'bus.servers') setPath(merged, 'bus.kind', 'nats');
      const source = layerSources[i]?.(key);
      if (source) overridden.set(`/${key.replace('.', '/')}`, source);
    }
  }
  const origins = resolveSecrets(merged, sources);
  const bus = merged.bus as Record<string, unknown> | undefined;
  if (!validateConfig(merged)) {
    // The schema's answer ("boolean schema is false") would not say what is missing.
    if (bus?.servers !== undefined && bus.kind !== 'nats') throw new ConfigError('config: /bus/servers: only with bus.kind "nats" (or --nats URLS, which sets both)');
    // A key from a file or the environment is refused under the name it takes in the config: where it came from is said too.
    const at = validateConfig.errors?.[0]?.instancePath ?? '';
    const origin = origins.get(at) ?? [...overridden].find(([pointer]) => at === pointer || at.startsWith(`${pointer}/`))?.[1];
    throw new ConfigError(`config: ${describeErrors(validateConfig.errors)}${origin ? ` (${origin})` : ''}`);
  }
  const config = merged as unknown as RelayConfig;
  config.nodeId ??= defaultNodeId();
  checkCrossFieldRules(config);
  resolveFiles(config, sources.baseDir);
  return config;
}

/** The longest node id, as the schemas take it (config and bus messages alike). */
export const NODE_ID_MAX = 64;
/** What `serve --workers` appends to a node id at most (`-w256`): each worker is an edge of its own on the bus. */
export const WORKER_SUFFIX_MAX = 5;

/**
 * `hostname-pid`, the host name cut so that a worker's suffix still fits (before: a 63-character pod name made
 * an id the bus refused, and every message of the edge to the others was dropped as invalid; found by review).
 */
function defaultNodeId(): string {
  const pid = String(process.pid);
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, NODE_ID_MAX - WORKER_SUFFIX_MAX - pid.length - 1);
  return `${host}-${pid}`;
}

function checkCrossFieldRules(config: RelayConfig): void {
  const seen = new Set<string>();
  for (const [i, hc] of config.hybridConnections.entries()) {
    const key = asciiLowerCase(hc.name);
    if (seen.has(key)) throw new ConfigError(`config: /hybridConnections/${i}/name: "${hc.name}" is listed twice`);
    seen.add(key);
  }
  for (const [i, hc] of config.hybridConnections.entries()) {
    if (['client', 'api'].includes(asciiLowerCase(hc.name))) {
      throw new ConfigError(`config: /hybridConnections/${i}/name: "${hc.name}" is reserved`);
    }
  }
  const hubs = new Set<string>();
  for (const [i, hub] of config.pubsub.hubs.entries()) {
    const key = asciiLowerCase(hub.name);
    if (hubs.has(key)) throw new ConfigError(`config: /pubsub/hubs/${i}/name: "${hub.name}" is listed twice`);
    hubs.add(key);
  }
  for (const [i, hc] of config.hybridConnections.entries()) {
    if (hc.presence && !hubs.has(asciiLowerCase(hc.presence.hub))) {
      throw new ConfigError(`config: /hybridConnections/${i}/presence/hub: "${hc.presence.hub}" is not in pubsub.hubs`);
    }
  }
  for (const [i, hub] of config.pubsub.hubs.entries()) {
    // Azure's two keys always differ: the same one twice is a rotation gone wrong (the key meant to replace it never came).
    if (hub.secondaryAccessKey !== undefined && hub.secondaryAccessKey === hub.accessKey) {
      throw new ConfigError(`config: /pubsub/hubs/${i}/secondaryAccessKey: the same key as accessKey (${hub.name}); a second key must differ, or be left out`);
    }
    if (hub.upstream && hub.eventHandlers) {
      throw new ConfigError(`config: /pubsub/hubs/${i}/upstream: give eventHandlers or the older upstream, not both`);
    }
    // A user:password@ in a handler's URL: fetch refuses such a URL, so every event failed (each connect 500), and its
    // refusal, quoting the URL whole (the password, an Azure Function's ?code= key), was logged with each (found by review).
    if (hub.upstream && hasUserInfo(hub.upstream.url)) throw new ConfigError(`config: /pubsub/hubs/${i}/upstream/url: ${USER_INFO_REFUSED}`);
    for (const [j, handler] of (hub.eventHandlers ?? []).entries()) {
      if (hasUserInfo(handler.urlTemplate)) throw new ConfigError(`config: /pubsub/hubs/${i}/eventHandlers/${j}/urlTemplate: ${USER_INFO_REFUSED}`);
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
  const tls = config.listen.tls;
  if (tls && tls.requestCert && !tls.caFile) {
    throw new ConfigError('config: /listen/tls/requestCert: needs listen.tls.caFile, the CA that signs client certificates');
  }
  if (tls && tls.requireClientCert !== 'none' && !tls.requestCert) {
    throw new ConfigError('config: /listen/tls/requireClientCert: needs listen.tls.requestCert (and caFile)');
  }
  // Tokens are matched by host name alone (ports and schemes are ignored, as clients rewrite them): an entry with a
  // port, a scheme or a path matched no token, and every listener, sender and Manage token was refused (a reload
  // closed every listener, and POST /$relay/reload itself then refused the token that could undo it; found by review).
  for (const [i, entry] of config.namespaceHosts.entries()) {
    if (!isHostName(entry)) throw new ConfigError(`config: /namespaceHosts/${i}: "${entry}" is not a host name (no scheme, port or path: relay.example.com, 10.0.0.1, ::1)`);
  }
  for (const [i, entry] of config.listen.trustProxy.entries()) {
    if (!isAddressOrCidr(entry)) throw new ConfigError(`config: /listen/trustProxy/${i}: "${entry}" is not an IP address or CIDR (10.0.0.0/8, fd00::/8)`);
  }
  if (config.listen.proxyProtocol && config.listen.trustProxy.length === 0) {
    throw new ConfigError('config: /listen/proxyProtocol: needs listen.trustProxy, the load balancers that send the header (from anyone else a header would be believed)');
  }
  // The schema's patterns take the shape of a URL; a port over 65535 or not a number, or a host a URL cannot have,
  // passed them and failed later: publicUrl with exit 1 and "Invalid URL", a NATS server by retrying forever.
  if (config.publicUrl !== undefined && !parsesAsUrl(config.publicUrl)) {
    throw new ConfigError(`config: /publicUrl: "${quotedUrl(config.publicUrl)}" is not a URL (its host or port cannot be read)`);
  }
  for (const [i, server] of (config.bus.servers ?? []).entries()) {
    if (!parsesAsUrl(server)) throw new ConfigError(`config: /bus/servers/${i}: "${quotedUrl(server)}" is not a URL (its host or port cannot be read)`);
    // nats.js connects to such a URL without them: every connect was refused ("Authorization Violation") and the edge
    // retried for ever, where the NATS CLI and the Go client take them from the URL.
    if (hasUserInfo(server)) throw new ConfigError(`config: /bus/servers/${i}: ${NATS_USER_INFO_REFUSED}`);
  }
  const busAuth = (['user', 'token', 'credsFile', 'nkeyFile'] as const).filter((k) => config.bus[k] !== undefined);
  if (busAuth.length > 1) throw new ConfigError(`config: /bus: give one way to authenticate to NATS, not ${busAuth.join(' and ')}`);
  if ((config.bus.user === undefined) !== (config.bus.pass === undefined)) throw new ConfigError('config: /bus: user and pass go together');
  if (config.timeouts.idleMs <= config.timeouts.keepAliveIntervalMs) {
    throw new ConfigError('config: /timeouts/idleMs: must be greater than timeouts.keepAliveIntervalMs');
  }
}

const NATS_USER_INFO_REFUSED = 'credentials in the URL (user:password@ or token@) are not sent by the NATS client: give bus.user and bus.pass, bus.token, bus.credsFile or bus.nkeyFile instead';
const USER_INFO_REFUSED = 'credentials in the URL (user:password@) are not sent: give auth { "type": "bearer", "token" } instead';

/** A URL whose authority holds a user name or password (`https://user:pass@host/`). */
function hasUserInfo(url: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*@/.test(url);
}

/**
 * A URL that did not parse, as an error message quotes it: everything before its last `@` after the scheme left out,
 * where a `user:password@` would be. Such a URL fails to parse precisely when its password holds a `#` or a `?`
 * (`nats://edge:pa#ss@nats-1:4222`), or its port is mistyped; before, the message, which goes to stderr, the log
 * (`config.reload_refused`) and the answer of POST /$relay/reload, quoted the password whole (found by the secrets
 * review). The last `@`, not the first: a password may hold one too.
 */
function quotedUrl(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^]*@/, '$1…@');
}

function parsesAsUrl(text: string): boolean {
  try {
    new URL(text);
    return true;
  } catch {
    return false;
  }
}

/** `relay.example.com`, `10.0.0.1`, `::1` or `[::1]`: what a token's resource names as its host, without a port. */
export function isHostName(text: string): boolean {
  const bracketed = /^\[(.*)\]$/.exec(text);
  if (bracketed) return isIP(bracketed[1]) === 6;
  if (isIP(text) !== 0) return true;
  return text.length <= 253 && /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(text);
}

/** `10.1.2.3`, `10.0.0.0/8`, `::1`, `fd00::/8`. */
export function isAddressOrCidr(text: string): boolean {
  const [address, bits, ...rest] = text.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}

export function loadConfig(path: string, env: NodeJS.ProcessEnv, flags: ConfigOverrides): RelayConfig {
  return buildConfigWith(readConfigFile(path), { env, baseDir: dirname(path) }, [overridesFromEnv(env), flags], [
    (key) => `from environment variable ${ENV_KEYS[key]}`,
    (key) => `from ${FLAG_KEYS[key]}`,
  ]);
}
