// What `token client`, `pub` and `sub` share: finding a hub's access key
// (given with --key, or read from the relay's config with --config) and
// checking the relay's base URL.
import { dirname } from 'node:path';
import { ConfigError } from '../config/errors.ts';
import { readConfigFile } from '../config/load.ts';
import { hubAccessKey } from '../config/secrets.ts';
import { keyOf } from './key-source.ts';
import { TLS_OPTIONS } from './tls-options.ts';
import { validateHubName } from '../validation/schemas.ts';

export interface HubAccess {
  /** The hub's name as configured (hubs are found case-insensitively). */
  hub: string;
  key: string;
}

/**
 * The hub's key, or an error message for the user. From a config file only that hub's key is
 * resolved (its `${ENV}` or `accessKeyFile`): the relay's other secrets need not be at hand.
 */
export function resolveHubAccess(hub: string, given: string | undefined, configFile: string | undefined, keyFile?: string): HubAccess | string {
  // From a file, as `token sas` and `bridge` take a SAS key: --key is on the command line, which every user of the
  // machine reads in ps (a long-running `sub` kept the hub's key there, which signs REST tokens for the whole hub).
  if (given !== undefined && keyFile !== undefined) return '--key or --key-file, not both';
  const key = keyOf(given, keyFile, undefined);
  if (typeof key === 'object') return key.problem;
  // With a key the hub is as given: checked as the relay's config checks hub names (before, `--hub 'bad hub'` made
  // a URL with a space in its path, which every relay refuses).
  if (key !== undefined) return validateHubName(hub) ? { hub, key } : `--hub "${hub}" is not a hub name (a letter, then letters, digits or _, at most 128)`;
  if (!configFile) return '--key-file, --key or --config is required';
  try {
    const found = hubAccessKey(readConfigFile(configFile), hub, { env: process.env, baseDir: dirname(configFile) });
    if (!found) return `hub "${hub}" is not in ${configFile}`;
    return { hub: found.name, key: found.accessKey };
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
}

/** The parseArgs options `pub` and `sub` share: which relay, hub, group and key, and as whom. */
export const HUB_GROUP_OPTIONS = {
  hub: { type: 'string' },
  group: { type: 'string' },
  key: { type: 'string' },
  'key-file': { type: 'string' },
  config: { type: 'string' },
  url: { type: 'string', default: 'http://127.0.0.1:9400' },
  user: { type: 'string' },
  ...TLS_OPTIONS,
  help: { type: 'boolean', short: 'h' },
} as const;

/** A relay's base URL: scheme and authority only, which a URL parser reads (a port past 65535 is none). */
export function isBaseUrl(url: string): boolean {
  if (!/^(https?|wss?):\/\/[^/?#\s]+\/?$/.test(url)) return false;
  try {
    new URL(url);
    return true;
  } catch {
    return false;
  }
}
