// `edge-relay pub`: publishes to a pub/sub group from a terminal or a script.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { HUB_GROUP_OPTIONS, isBaseUrl, resolveHubAccess } from './hub-access.ts';
import { HubClient } from './hub-client.ts';
import { TLS_HELP, readClientTls } from './tls-options.ts';

/** Requests waiting for their acks at once (the relay reads up to limits.requestsInFlightPerConnection of them at a time). */
const MAX_AWAITING_ACK = 256;

export const PUB_HELP = `Usage: edge-relay pub --hub HUB --group GROUP (--key-file FILE | --key KEY | --config FILE) [options] [MESSAGE...]

Publishes each MESSAGE to the group, or, with no MESSAGE, each line read from
standard input, and waits for the relay to acknowledge each one. Exits 0 when
every message was acknowledged, 1 when one was refused (the reason is printed),
2 on bad arguments.

Options:
  --hub HUB            the hub (must be in the relay's pubsub.hubs)
  --group GROUP        the group to publish to
  --key-file FILE      read the hub's accessKey from FILE (its trailing newline dropped)
  --key KEY            the hub's accessKey (visible to every user of the machine in ps:
                       prefer --key-file or --config)
  --config FILE        read the hub's accessKey from this relay config instead
                       (that key alone: \${ENV} or accessKeyFile; not the config's other secrets)
  --url URL            the relay's base URL (http, https, ws or wss), default http://127.0.0.1:9400
  --user ID            publish as this user id
  --data-type TYPE     text (default) or json (each message must be JSON)
${TLS_HELP}
  -h, --help           this text

Example (with npm start running):
  edge-relay pub --config config/dev.json --hub chat --group room "hello, room"
  printf 'one\\ntwo\\n' | edge-relay pub --config config/dev.json --hub chat --group room
`;

function fail(message: string): number {
  process.stderr.write(`edge-relay pub: ${message}\n`);
  return 2;
}

export async function pub(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { ...HUB_GROUP_OPTIONS, 'data-type': { type: 'string', default: 'text' } },
    });
  } catch (err) {
    return fail(`${(err as Error).message}\n\n${PUB_HELP}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(PUB_HELP);
    return 0;
  }
  if (!values.hub || !values.group) return fail(`--hub and --group are required\n\n${PUB_HELP}`);
  if (!isBaseUrl(values.url)) return fail(`--url "${values.url}" is not a base URL`);
  const dataType = values['data-type'];
  if (dataType !== 'text' && dataType !== 'json') return fail('--data-type must be text or json');
  const access = resolveHubAccess(values.hub, values.key, values.config, values['key-file']);
  if (typeof access === 'string') return fail(access);
  const tls = readClientTls(values);
  if (typeof tls === 'string') return fail(tls);
  const group = values.group;
  const dataOf = (line: string): unknown => (dataType === 'json' ? JSON.parse(line) : line);
  if (dataType === 'json') {
    for (const m of positionals) {
      try {
        JSON.parse(m);
      } catch {
        return fail(`not JSON: ${m}`);
      }
    }
  }

  let client: HubClient;
  try {
    client = await HubClient.connect(values.url, access, { userId: values.user, roles: [`webpubsub.sendToGroup.${group}`], tls });
  } catch (err) {
    process.stderr.write(`edge-relay pub: ${(err as Error).message}\n`);
    return 1;
  }
  // At most this many requests wait for their acks: a large stdin is read as acks come back (before, every line was
  // queued at once, in memory, and a long queue's last acks came later than any bound on them).
  const sends = new Set<Promise<void>>();
  let failed = 0;
  let count = 0;
  const publish = (line: string) => {
    // Each failure names its message: its number (from 1, in the order given) and its first characters.
    const which = `message ${++count} (${line.length > 40 ? `${line.slice(0, 40)}...` : line})`;
    let data: unknown;
    try {
      data = dataOf(line);
    } catch {
      process.stderr.write(`edge-relay pub: ${which} skipped, not JSON\n`);
      failed++;
      return;
    }
    const sent: Promise<void> = client
      .request({ type: 'sendToGroup', group, dataType, data, noEcho: true })
      .catch((err: Error & { unacknowledged?: boolean }) => {
        failed++;
        process.stderr.write(`edge-relay pub: ${which} ${err.unacknowledged ? 'not acknowledged' : 'refused'}: ${err.message}\n`);
      })
      .finally(() => sends.delete(sent));
    sends.add(sent);
  };
  // The connection ended under it (the relay drained or went away): what is left is not sent, and said so
  // (before, every later line failed alone as "refused: WebSocket is not open", and an endless stdin never ended).
  // Also while it waits for a line of a quiet stdin (`tail -f log | edge-relay pub ...`): the reading ends then.
  let closed: string | undefined;
  const fromStdin = positionals.length === 0;
  const lines = fromStdin ? createInterface({ input: process.stdin, crlfDelay: Infinity }) : undefined;
  client.onClose((code, reason) => {
    closed = `${code}${reason ? ` ${reason}` : ''}`;
    lines?.close();
  });
  // Closing counts as closed: its close frame came, and a send now fails on its own.
  const gone = () => closed !== undefined || !client.isOpen;
  for await (const message of lines ?? positionals) {
    if (fromStdin && message === '') continue;
    while (sends.size >= MAX_AWAITING_ACK && !gone()) await Promise.race(sends);
    if (gone()) break;
    publish(message);
  }
  await Promise.all(sends);
  if (gone()) {
    process.stderr.write(`edge-relay pub: the connection closed${closed ? ` (${closed})` : ''} after message ${count}: nothing after it is sent\n`);
    if (fromStdin) process.stdin.destroy();
    return 1;
  }
  client.close();
  return failed === 0 ? 0 : 1;
}
