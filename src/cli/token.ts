// `edge-relay token sas|client`: prints a Shared Access Signature token, or
// (token-client.ts) a pub/sub client access URL.
import { parseArgs } from 'node:util';
import { MAX_SAS_EXPIRY, createSasToken, resourceForUrl } from '../auth/sas-token.ts';
import { KEY_ENV, keyOf } from './key-source.ts';
import { tokenClient } from './token-client.ts';
import { wholeNumber } from './whole-number.ts';

export const TOKEN_HELP = `Usage: edge-relay token sas --uri URI --key-name NAME [--key KEY | --key-file FILE] [--ttl SECONDS]
       edge-relay token client --hub HUB (--key-file FILE | --key KEY | --config FILE) [...]   (token client --help)

Prints a Shared Access Signature token for a hybrid connection, as Azure
Relay clients build it: the resource is the URI with scheme http and no
query or "$hc/" (a token for ws://127.0.0.1:9400/$hc/echo signs
http://127.0.0.1:9400/echo). The relay matches the resource's host name and
path, not its port or scheme. A URI with no entity path covers every entity.

Options of token sas:
  --uri URI          the relay URL the token is for
  --key-name NAME    the rule's keyName (skn)
  --key KEY          the rule's key (visible to every user of the machine in ps:
                     prefer --key-file or the environment variable EDGE_RELAY_KEY)
  --key-file FILE    read the key from FILE (its trailing newline dropped)
  --ttl SECONDS      lifetime, default 3600
  -h, --help         this text

Example:
  edge-relay token sas --uri ws://127.0.0.1:9400/\\$hc/echo --key-name RootManageSharedAccessKey \\
    --key dev-only-key-0123456789
`;

export function token(argv: string[]): number {
  const [kind, ...rest] = argv;
  if (kind === '-h' || kind === '--help' || kind === undefined) {
    process.stdout.write(TOKEN_HELP);
    return kind === undefined ? 2 : 0;
  }
  if (kind === 'client') return tokenClient(rest);
  if (kind !== 'sas') {
    process.stderr.write(`edge-relay token: unknown kind "${kind}"\n\n${TOKEN_HELP}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      uri: { type: 'string' },
      'key-name': { type: 'string' },
      key: { type: 'string' },
      'key-file': { type: 'string' },
      ttl: { type: 'string', default: '3600' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(TOKEN_HELP);
    return 0;
  }
  if (values.key !== undefined && values['key-file'] !== undefined) {
    process.stderr.write(`edge-relay token sas: --key or --key-file, not both\n\n${TOKEN_HELP}`);
    return 2;
  }
  const key = keyOf(values.key, values['key-file'], process.env[KEY_ENV]);
  if (typeof key === 'object') {
    process.stderr.write(`edge-relay token sas: ${key.problem}\n`);
    return 2;
  }
  if (!values.uri || !values['key-name'] || !key) {
    process.stderr.write(`edge-relay token sas: --uri, --key-name and --key (or --key-file, or ${KEY_ENV}) are required\n\n${TOKEN_HELP}`);
    return 2;
  }
  const ttl = wholeNumber(values.ttl, 15);
  const expiresAt = Math.floor(Date.now() / 1000) + ttl;
  // An expiry past 12 digits makes a token every relay refuses (TokenMalformed): said here, not at its first use.
  if (!(ttl > 0) || expiresAt > MAX_SAS_EXPIRY) {
    process.stderr.write('edge-relay token sas: --ttl must be a positive whole number of seconds, the expiry at most 12 digits\n');
    return 2;
  }
  let resource: string;
  try {
    resource = resourceForUrl(values.uri);
  } catch {
    process.stderr.write(`edge-relay token sas: --uri "${values.uri}" is not a URL\n`);
    return 2;
  }
  process.stdout.write(createSasToken(resource, values['key-name'], key, expiresAt) + '\n');
  return 0;
}
