// `edge-relay token client`: prints a pub/sub client access URL with a fresh
// access token for a hub, user and roles (what Azure's getClientAccessToken
// returns), signed with the hub's access key from --key or from a config file.
import { parseArgs } from 'node:util';
import { clientAccessUrl } from '../pubsub/client-access-url.ts';
import { isBaseUrl, resolveHubAccess } from './hub-access.ts';
import { wholeNumber } from './whole-number.ts';

export const TOKEN_CLIENT_HELP = `Usage: edge-relay token client --hub HUB (--key-file FILE | --key KEY | --config FILE) [options]

Prints a client access URL for a pub/sub hub: the hub's client endpoint with
an access_token (HS256 JWT) signed with the hub's access key. Pass the URL
unchanged to @azure/web-pubsub-client.

Options:
  --hub HUB          the hub (must be in the relay's pubsub.hubs)
  --key-file FILE    read the hub's accessKey from FILE (its trailing newline dropped)
  --key KEY          the hub's accessKey (visible to every user of the machine in ps:
                     prefer --key-file or --config)
  --config FILE      read the hub's accessKey from this config instead
                     (that key alone: \${ENV} or accessKeyFile; not the config's other secrets)
  --url URL          the relay's base URL, default http://127.0.0.1:9400
  --user ID          user id (sub claim)
  --role ROLE        a role, repeatable: webpubsub.joinLeaveGroup[.<group>],
                     webpubsub.sendToGroup[.<group>], webpubsub.joinLeaveGroups.<pattern>, ...
  --group GROUP      a group to join at connect, repeatable
  --ttl SECONDS      token lifetime, default 3600
  -h, --help         this text

Example:
  edge-relay token client --config config/dev.json --hub chat --user alice \\
    --role webpubsub.joinLeaveGroup --role webpubsub.sendToGroup
`;

function fail(message: string): number {
  process.stderr.write(`edge-relay token client: ${message}\n`);
  return 2;
}

export function tokenClient(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      hub: { type: 'string' },
      key: { type: 'string' },
      'key-file': { type: 'string' },
      config: { type: 'string' },
      url: { type: 'string', default: 'http://127.0.0.1:9400' },
      user: { type: 'string' },
      role: { type: 'string', multiple: true, default: [] },
      group: { type: 'string', multiple: true, default: [] },
      ttl: { type: 'string', default: '3600' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(TOKEN_CLIENT_HELP);
    return 0;
  }
  if (!values.hub) return fail(`--hub is required\n\n${TOKEN_CLIENT_HELP}`);
  const ttl = wholeNumber(values.ttl, 15);
  if (!(ttl > 0)) return fail('--ttl must be a positive whole number of seconds');
  if (!isBaseUrl(values.url)) return fail(`--url "${values.url}" is not a base URL`);
  const access = resolveHubAccess(values.hub, values.key, values.config, values['key-file']);
  if (typeof access === 'string') return fail(access);
  const url = clientAccessUrl(values.url, access.hub, access.key, {
    userId: values.user,
    roles: values.role,
    groups: values.group,
    ttlSeconds: ttl,
  });
  process.stdout.write(url + '\n');
  return 0;
}
