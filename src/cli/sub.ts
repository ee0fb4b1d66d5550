// `edge-relay sub`: watches a pub/sub group from a terminal: one line per
// message on stdout. A dropped connection is re-opened after a jittered,
// growing delay (messages sent meanwhile are not seen: this is the plain
// subprotocol).
import { parseArgs } from 'node:util';
import { Backoff } from '../bridge/backoff.ts';
import { HUB_GROUP_OPTIONS, isBaseUrl, resolveHubAccess, type HubAccess } from './hub-access.ts';
import { HubClient, type HubMessage } from './hub-client.ts';

export const SUB_HELP = `Usage: edge-relay sub --hub HUB --group GROUP (--key KEY | --config FILE) [options]

Joins the group and prints each message it gets on a line of standard output:
text as it is, JSON as JSON, binary as base64 (or, with --format json, each
whole message as the relay sent it). Says on standard error when it is
watching and when it reconnects. Runs until interrupted (or until --count
messages were printed).

Options:
  --hub HUB            the hub (must be in the relay's pubsub.hubs)
  --group GROUP        the group to watch
  --key KEY            the hub's accessKey
  --config FILE        read the hub's accessKey from this relay config instead
  --url URL            the relay's base URL, default http://127.0.0.1:9400
  --user ID            connect as this user id
  --format FORMAT      data (default) or json
  --count N            exit 0 after N messages
  -h, --help           this text

Example (with npm start running):
  edge-relay sub --config config/dev.json --hub chat --group room
`;

function fail(message: string): number {
  process.stderr.write(`edge-relay sub: ${message}\n`);
  return 2;
}

function lineOf(message: HubMessage, format: string): string {
  if (format === 'json') return JSON.stringify(message);
  if (message.dataType === 'json') return JSON.stringify(message.data);
  return String(message.data);
}

export async function sub(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { ...HUB_GROUP_OPTIONS, format: { type: 'string', default: 'data' }, count: { type: 'string' } },
    }));
  } catch (err) {
    return fail(`${(err as Error).message}\n\n${SUB_HELP}`);
  }
  if (values.help) {
    process.stdout.write(SUB_HELP);
    return 0;
  }
  if (!values.hub || !values.group) return fail(`--hub and --group are required\n\n${SUB_HELP}`);
  if (!isBaseUrl(values.url)) return fail(`--url "${values.url}" is not a base URL`);
  if (values.format !== 'data' && values.format !== 'json') return fail('--format must be data or json');
  const limit = values.count === undefined ? Infinity : Number(values.count);
  if (!(limit > 0) || (limit !== Infinity && !Number.isInteger(limit))) return fail('--count must be a positive whole number');
  const access = resolveHubAccess(values.hub, values.key, values.config);
  if (typeof access === 'string') return fail(access);
  return watch(values.url, access, values.group, values.user, values.format, limit);
}

function watch(url: string, access: HubAccess, group: string, userId: string | undefined, format: string, limit: number): Promise<number> {
  const backoff = new Backoff();
  let printed = 0;
  let current: HubClient | undefined;
  let stopping = false;
  let retry: NodeJS.Timeout | undefined;
  return new Promise<number>((resolve) => {
    const finish = (code: number) => {
      stopping = true;
      if (retry) clearTimeout(retry);
      current?.close();
      resolve(code);
    };
    process.once('SIGINT', () => finish(0));
    process.once('SIGTERM', () => finish(0));
    const reconnect = (why: string) => {
      if (stopping) return;
      const delay = backoff.next();
      process.stderr.write(`edge-relay sub: ${why}; reconnecting in ${delay} ms\n`);
      retry = setTimeout(open, delay);
    };
    const onMessage = (m: HubMessage) => {
      if (m.type !== 'message' || m.group !== group || stopping) return;
      process.stdout.write(lineOf(m, format) + '\n');
      if (++printed >= limit) finish(0);
    };
    const open = () => {
      HubClient.connect(url, access, { userId, roles: [`webpubsub.joinLeaveGroup.${group}`] }, onMessage).then(
        async (client) => {
          current = client;
          client.onClose((code, reason) => reconnect(`connection closed (${code}${reason ? ` ${reason}` : ''})`));
          try {
            await client.request({ type: 'joinGroup', group });
          } catch (err) {
            process.stderr.write(`edge-relay sub: cannot join ${group}: ${(err as Error).message}\n`);
            return finish(1);
          }
          backoff.connected();
          process.stderr.write(`edge-relay sub: watching group ${group} in hub ${access.hub}\n`);
        },
        (err: Error & { status?: number }) => {
          // Refused for a reason retrying cannot change (bad key, unknown hub): say so and stop.
          if (err.status !== undefined && err.status >= 400 && err.status < 500) {
            process.stderr.write(`edge-relay sub: ${err.message}\n`);
            return finish(1);
          }
          reconnect(err.message);
        },
      );
    };
    open();
  });
}
