// Secrets kept out of the config file (docs/security.md, "Secrets"), so the
// file can be committed: a SAS rule's key, a hub's access keys and the NATS
// password or token may be written as ${ENV_NAME}; a key may come from a
// file (sas[].keyFile, pubsub.hubs[].accessKeyFile and secondaryAccessKeyFile,
// metrics.bearerTokenFile),
// read whenever the config is loaded, at start and on every reload, so a
// rotated file takes effect with SIGHUP. Relative paths are relative to the
// config file's folder. Also the check `serve` makes before it puts keys on a
// network: long enough to resist guessing, and not the ones this repository
// ships for development.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from './errors.ts';
import type { RelayConfig } from './types.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** `${NAME}` as a whole value: taken from the environment. */
const ENV_REFERENCE = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** Keys shorter than this are refused off loopback: 32 bytes is the size of the HMAC-SHA256 key the tokens are signed with. */
export const MIN_KEY_BYTES = 32;

/**
 * Keys published in this repository (config/dev.json, and the Compose demo's
 * former ones): anyone can sign tokens with them.
 */
const SHIPPED_KEYS = new Set([
  'dev-only-key-0123456789',
  'dev-only-hub-key-0123456789',
  'compose-demo-key-change-me-0123456789',
  'compose-demo-hub-key-change-me-0123',
]);

export interface SecretSources {
  env: NodeJS.ProcessEnv;
  /** Folder relative file names are read from: the config file's. */
  baseDir: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export function resolvePath(file: string, baseDir: string): string {
  return isAbsolute(file) ? file : resolve(baseDir, file);
}

/**
 * A secret file's text without its trailing newline (as `echo` and `openssl rand` leave it), or why
 * there is none: the read error's code, or `empty`. What the config's key files and the CLI's share.
 */
export function secretFileText(path: string): { text: string } | { problem: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return { problem: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
  const value = text.replace(/[\r\n]+$/, '');
  return value === '' ? { problem: 'empty' } : { text: value };
}

/** A secret file of the config (relative to `baseDir`) as secretFileText reads it; ConfigError naming `where` otherwise. */
export function readSecretFile(file: string, where: string, baseDir: string): string {
  const read = secretFileText(resolvePath(file, baseDir));
  if ('text' in read) return read.text;
  throw new ConfigError(read.problem === 'empty' ? `config: ${where}: ${file} is empty` : `config: ${where}: cannot read ${file}: ${read.problem}`);
}

function fromEnv(value: unknown, where: string, env: NodeJS.ProcessEnv): unknown {
  if (typeof value !== 'string') return value;
  const ref = ENV_REFERENCE.exec(value);
  if (!ref) return value;
  const found = env[ref[1]];
  if (found === undefined || found === '') throw new ConfigError(`config: ${where}: environment variable ${ref[1]} is not set`);
  return found;
}

/**
 * Where secrets the config refers to came from, by the path the schema reports them under (`/pubsub/hubs/0/accessKey`
 * -> `read from accessKeyFile hub.key`): a refusal of the key then says where to look.
 */
export type SecretOrigins = Map<string, string>;

/** Fills `key` from `${ENV}` or `keyFile` (one of the two ways, not both) in one object of the raw config. */
function resolveKey(item: Json, keyName: string, fileName: string, where: string, sources: SecretSources, origins: SecretOrigins): void {
  if (item[keyName] !== undefined && item[fileName] !== undefined) {
    throw new ConfigError(`config: ${where}: give ${keyName} or ${fileName}, not both`);
  }
  if (typeof item[fileName] === 'string') {
    item[keyName] = readSecretFile(item[fileName] as string, `${where}/${fileName}`, sources.baseDir);
    origins.set(`${where}/${keyName}`, `read from ${fileName} ${item[fileName] as string}`);
  } else if (item[keyName] !== undefined) {
    const ref = typeof item[keyName] === 'string' ? ENV_REFERENCE.exec(item[keyName] as string) : null;
    item[keyName] = fromEnv(item[keyName], `${where}/${keyName}`, sources.env);
    if (ref) origins.set(`${where}/${keyName}`, `read from environment variable ${ref[1]}`);
  }
}

/**
 * Replaces secret references in a raw config (before validation, so the
 * schema checks the keys themselves): `${ENV}` values and key files.
 */
export function resolveSecrets(raw: Json, sources: SecretSources, origins: SecretOrigins = new Map()): SecretOrigins {
  if (Array.isArray(raw.sas)) {
    raw.sas.forEach((rule, i) => {
      if (isObject(rule)) resolveKey(rule, 'key', 'keyFile', `/sas/${i}`, sources, origins);
    });
  }
  const hubs = isObject(raw.pubsub) ? raw.pubsub.hubs : undefined;
  if (Array.isArray(hubs)) {
    hubs.forEach((hub, i) => {
      if (!isObject(hub)) return;
      resolveKey(hub, 'accessKey', 'accessKeyFile', `/pubsub/hubs/${i}`, sources, origins);
      resolveKey(hub, 'secondaryAccessKey', 'secondaryAccessKeyFile', `/pubsub/hubs/${i}`, sources, origins);
    });
  }
  if (isObject(raw.bus)) {
    for (const name of ['pass', 'token']) {
      if (raw.bus[name] !== undefined) raw.bus[name] = fromEnv(raw.bus[name], `/bus/${name}`, sources.env);
    }
  }
  return origins;
}

/**
 * One hub's name and access key from a raw config, resolving that key alone (`${ENV}` or
 * `accessKeyFile`): what `pub`, `sub` and `token client --config` need. Loading the whole config
 * asked for every other secret it names (the SAS keys' variables, the NATS password) too.
 * Undefined when no hub of that name (A-Z compared without case) is in it.
 */
export function hubAccessKey(raw: unknown, hub: string, sources: SecretSources): { name: string; accessKey: string } | undefined {
  const hubs = isObject(raw) && isObject(raw.pubsub) ? raw.pubsub.hubs : undefined;
  if (!Array.isArray(hubs)) return undefined;
  const i = hubs.findIndex((h) => isObject(h) && typeof h.name === 'string' && asciiLowerCase(h.name) === asciiLowerCase(hub));
  if (i < 0) return undefined;
  const found = { ...(hubs[i] as Json) };
  resolveKey(found, 'accessKey', 'accessKeyFile', `/pubsub/hubs/${i}`, sources, new Map());
  if (typeof found.accessKey !== 'string' || found.accessKey === '') throw new ConfigError(`config: /pubsub/hubs/${i}: no accessKey`);
  return { name: found.name as string, accessKey: found.accessKey };
}

/**
 * After validation: every file the config names becomes an absolute path (the
 * relay reads some of them again later, on reload or reconnect), and the
 * metrics bearer token is read.
 */
export function resolveFiles(config: RelayConfig, baseDir: string): void {
  const tls = config.listen.tls;
  if (tls) {
    tls.certFile = resolvePath(tls.certFile, baseDir);
    tls.keyFile = resolvePath(tls.keyFile, baseDir);
    if (tls.caFile) tls.caFile = resolvePath(tls.caFile, baseDir);
  }
  const bus = config.bus;
  if (bus.credsFile) bus.credsFile = resolvePath(bus.credsFile, baseDir);
  if (bus.nkeyFile) bus.nkeyFile = resolvePath(bus.nkeyFile, baseDir);
  if (bus.tls) {
    for (const key of ['caFile', 'certFile', 'keyFile'] as const) {
      const file = bus.tls[key];
      if (file) bus.tls[key] = resolvePath(file, baseDir);
    }
  }
  for (const rule of config.sas) if (rule.keyFile) rule.keyFile = resolvePath(rule.keyFile, baseDir);
  for (const hub of config.pubsub.hubs) {
    if (hub.accessKeyFile) hub.accessKeyFile = resolvePath(hub.accessKeyFile, baseDir);
    if (hub.secondaryAccessKeyFile) hub.secondaryAccessKeyFile = resolvePath(hub.secondaryAccessKeyFile, baseDir);
  }
  if (config.metrics.bearerTokenFile) {
    config.metrics.bearerTokenFile = resolvePath(config.metrics.bearerTokenFile, baseDir);
    // White space around it goes, as Prometheus trims its credentials_file (a trailing space kept here was a 401 for
    // every scrape); inside, no Authorization header can carry it (`Bearer <token>` is one word): refused.
    const token = readSecretFile(config.metrics.bearerTokenFile, '/metrics/bearerTokenFile', baseDir).trim();
    if (token === '' || /\s/.test(token)) {
      throw new ConfigError(`config: /metrics/bearerTokenFile: ${config.metrics.bearerTokenFile} ${token === '' ? 'holds only white space' : 'holds a token with white space inside, which no Authorization header carries'}`);
    }
    config.metrics.bearerToken = token;
  }
}

/** True for a host only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  return bare === '::1' || bare.startsWith('::ffff:127.');
}

/** Every key too weak to serve on a network with, by where it is and why (never the key itself). */
export function weakKeys(config: RelayConfig): string[] {
  const problems: string[] = [];
  const check = (key: string, where: string) => {
    if (SHIPPED_KEYS.has(key)) problems.push(`${where} is a development key published with edge-relay`);
    else if (Buffer.byteLength(key, 'utf8') < MIN_KEY_BYTES) problems.push(`${where} is ${Buffer.byteLength(key, 'utf8')} bytes, fewer than ${MIN_KEY_BYTES}`);
  };
  config.sas.forEach((rule, i) => check(rule.key, `/sas/${i}/key (${rule.keyName})`));
  config.pubsub.hubs.forEach((hub, i) => {
    check(hub.accessKey, `/pubsub/hubs/${i}/accessKey (${hub.name})`);
    if (hub.secondaryAccessKey !== undefined) check(hub.secondaryAccessKey, `/pubsub/hubs/${i}/secondaryAccessKey (${hub.name})`);
  });
  // Whoever guesses it reads /$relay/metrics (entity names, node ids, traffic); failed guesses are not slowed.
  if (config.metrics.bearerToken !== undefined) check(config.metrics.bearerToken, 'the token in /metrics/bearerTokenFile');
  return problems;
}

/**
 * Why a relay on a loopback address is reached from elsewhere all the same, or undefined: a proxy on this machine
 * forwards to it (listen.trustProxy lists one), or listeners are told to dial another host (publicUrl).
 */
function reachedFromElsewhere(config: RelayConfig): string | undefined {
  if (config.listen.trustProxy.length > 0) return 'behind the proxies of listen.trustProxy';
  if (config.publicUrl === undefined) return undefined;
  let host: string;
  try {
    host = new URL(config.publicUrl).hostname;
  } catch {
    return undefined;
  }
  return isLoopbackHost(host) ? undefined : `as ${host} (publicUrl)`;
}

/**
 * Why `serve` refuses this config, or undefined: weak keys are fine on
 * loopback when nobody else can reach the port, and with --dev. Before, loopback
 * alone was enough: behind nginx on the same machine (trustProxy 127.0.0.1,
 * publicUrl https://relay.example.com) the published development keys signed
 * Manage tokens for anyone on the internet (found by review).
 */
export function weakKeysRefusal(config: RelayConfig, dev: boolean): string | undefined {
  if (dev) return undefined;
  const elsewhere = reachedFromElsewhere(config);
  if (isLoopbackHost(config.listen.host) && elsewhere === undefined) return undefined;
  const problems = weakKeys(config);
  if (problems.length === 0) return undefined;
  return (
    `refusing to serve on ${config.listen.host}${elsewhere ? `, reached ${elsewhere},` : ''} with weak keys: ${problems.join('; ')}. ` +
    `Anyone who can reach the port could sign tokens with such a key. Use random keys of ${MIN_KEY_BYTES} bytes or more ` +
    '(openssl rand -base64 48), kept out of the file with keyFile/accessKeyFile or ${ENV_NAME}; or pass --dev for a development relay'
  );
}
