// `edge-relay sub`: watches a pub/sub group from a terminal: one line per
// message on stdout. A dropped connection is re-opened after a jittered,
// growing delay. With --after or --from-start (a hub that keeps history) it
// prints the group's history first and then live messages, joined by their
// sequence: nothing missed, nothing twice, also across reconnects. Without,
// messages sent while it reconnects are not seen (the plain subprotocol).
import { parseArgs } from 'node:util';
import { Backoff } from '../bridge/backoff.ts';
import { HUB_GROUP_OPTIONS, isBaseUrl, resolveHubAccess, type HubAccess } from './hub-access.ts';
import { readGroupHistory, type HistoryNumbering, type SequencedMessage } from './group-history.ts';
import { HUB_CLIENT_TIMEOUTS, HubClient, type HubClientTimeouts, type HubMessage } from './hub-client.ts';
import { TLS_HELP, readClientTls, type ClientTls } from './tls-options.ts';
import { safeWholeNumber } from './whole-number.ts';

export const SUB_HELP = `Usage: edge-relay sub --hub HUB --group GROUP (--key-file FILE | --key KEY | --config FILE) [options]

Joins the group and prints each message it gets on a line of standard output:
text as it is, JSON as JSON, binary as base64 (or, with --format json, each
whole message as the relay sent it). Says on standard error when it is
watching and when it reconnects. Runs until interrupted (or until --count
messages were printed).

Options:
  --hub HUB            the hub (must be in the relay's pubsub.hubs)
  --group GROUP        the group to watch
  --key-file FILE      read the hub's accessKey from FILE (its trailing newline dropped)
  --key KEY            the hub's accessKey (visible to every user of the machine in ps:
                       prefer --key-file or --config)
  --config FILE        read the hub's accessKey from this relay config instead
                       (that key alone: \${ENV} or accessKeyFile; not the config's other secrets)
  --url URL            the relay's base URL (http, https, ws or wss), default http://127.0.0.1:9400
  --user ID            connect as this user id
  --format FORMAT      data (default) or json
  --count N            exit 0 after N messages (a whole number in digits)
  --after SEQUENCE     first print the kept messages after this history sequence
                       (digits, at most 9007199254740991), then live ones (the
                       hub must keep history)
  --from-start         the same from the oldest kept message (--after 0)
${TLS_HELP}
  -h, --help           this text

Example (with npm start running):
  edge-relay sub --config config/dev.json --hub chat --group room
  edge-relay sub --config config/dev.json --hub chat --group room --from-start
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
      options: {
        ...HUB_GROUP_OPTIONS,
        format: { type: 'string', default: 'data' },
        count: { type: 'string' },
        after: { type: 'string' },
        'from-start': { type: 'boolean' },
      },
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
  // Digits only (before: Number() took `1e3`, `0x10`, ` 5` and an empty value, `--after ''` read the history from its start).
  const count = values.count === undefined ? Infinity : safeWholeNumber(values.count);
  if (typeof count !== 'number' || count === 0) return fail(`--count must be a positive whole number in digits, at most ${Number.MAX_SAFE_INTEGER}`);
  if (values.after !== undefined && values['from-start']) return fail('give --after or --from-start, not both');
  const after = values['from-start'] ? 0 : values.after === undefined ? undefined : safeWholeNumber(values.after);
  if (after === 'not digits') return fail('--after must be a history sequence: a whole number in digits, 0 or more');
  // A history's sequences are JSON numbers (a JetStream hub's are its stream's, which may reach 2^64 but which the relay
  // reads only as safe integers), and the relay reads `after` only up to this one: refused here, not by the relay's 400
  // once connected (sequences stay far below it: one message a microsecond takes 285 years to reach it).
  if (after === 'too large') return fail(`--after ${values.after} is past the largest history sequence, ${Number.MAX_SAFE_INTEGER}`);
  const access = resolveHubAccess(values.hub, values.key, values.config, values['key-file']);
  if (typeof access === 'string') return fail(access);
  const tls = readClientTls(values);
  if (typeof tls === 'string') return fail(tls);
  // Its output is all it is for: once its reader is gone (`sub ... | head -3`), it stops, 0, as after --count.
  // Before, the failed write was an 'error' nothing listened to: it ended as crashed, with a stack trace.
  const readerGone = new AbortController();
  process.stdout.on('error', () => readerGone.abort());
  return watch(values.url, access, values.group, values.user, values.format, count, after, tls, {
    timeouts: HUB_CLIENT_TIMEOUTS,
    print: (line) => {
      if (!readerGone.signal.aborted) process.stdout.write(line);
    },
    signal: readerGone.signal,
  });
}

/** A refusal for a limit of the moment (429: too many new connections from this address, the hub full; 408): waited out. */
function momentary(status: number | undefined): boolean {
  return status === 429 || status === 408;
}

/** Prints the group's messages until `limit` or a signal; 0, or 1 when the relay refused. Exported for its tests (shorter `timeouts`, lines kept). */
export function watch(
  url: string,
  access: HubAccess,
  group: string,
  userId: string | undefined,
  format: string,
  limit: number,
  after: number | undefined,
  tls: ClientTls,
  io: { timeouts: HubClientTimeouts; print: (line: string) => void; signal?: AbortSignal } = { timeouts: HUB_CLIENT_TIMEOUTS, print: (line) => process.stdout.write(line) },
): Promise<number> {
  const { timeouts } = io;
  const backoff = new Backoff();
  let printed = 0;
  let current: HubClient | undefined;
  let stopping = false;
  let retry: NodeJS.Timeout | undefined;
  // With history: the last sequence printed (it only goes up, until the relay's history starts over).
  let cursor = after;
  const numbering: HistoryNumbering = {};
  return new Promise<number>((resolve) => {
    const finish = (code: number) => {
      stopping = true;
      if (retry) clearTimeout(retry);
      current?.close();
      resolve(code);
    };
    process.once('SIGINT', () => finish(0));
    io.signal?.addEventListener('abort', () => finish(0), { once: true });
    process.once('SIGTERM', () => finish(0));
    const reconnect = (why: string) => {
      if (stopping) return;
      const delay = backoff.next();
      process.stderr.write(`edge-relay sub: ${why}; reconnecting in ${delay} ms\n`);
      retry = setTimeout(open, delay);
    };
    /** Prints a group message unless history mode printed it already; false once the count is reached. */
    const print = (m: HubMessage): boolean => {
      if (stopping) return false;
      const sequence = (m as { sequence?: unknown }).sequence;
      if (cursor !== undefined && typeof sequence === 'number') {
        if (sequence <= cursor) return true;
        cursor = sequence;
      }
      io.print(lineOf(m, format) + '\n');
      if (++printed >= limit) {
        finish(0);
        return false;
      }
      return true;
    };
    const open = () => {
      // With history: this connection's live messages, held from the join on until the history before them is
      // printed. Its own: a catch-up of a connection that closed meanwhile must not print (and so skip past
      // the history of) the next connection's.
      const connection: { client?: HubClient; held?: HubMessage[] } = { held: cursor !== undefined ? [] : undefined };
      const onMessage = (m: HubMessage) => {
        if (m.type !== 'message' || m.group !== group || stopping) return;
        if (connection.held) connection.held.push(m);
        else print(m);
      };
      /** Still the connection watched: a catch-up of one that closed since stops (the next one reads on from the cursor). */
      const isCurrent = () => !stopping && current === connection.client && connection.client?.isOpen === true;
      /** After a join: history from the cursor, then what arrived live meanwhile, in sequence order. */
      const catchUp = async () => {
        const each = (m: SequencedMessage) => isCurrent() && print(m);
        let read = await readGroupHistory(url, access, group, cursor!, each, tls, numbering);
        if (read.restarted) {
          // Its sequences mean nothing now: what it holds is printed from its start (before, every message
          // numbered up to the old cursor, new ones included, was taken for one printed already). Also when
          // this connection closed meanwhile: the next one reads from the start with the new id known.
          const why =
            read.restarted === 'behind'
              ? `holds nothing numbered past ${cursor} (it started over since, or never reached it)`
              : 'started over (a relay keeping it in memory restarted)';
          process.stderr.write(`edge-relay sub: the relay's history of ${group} ${why}: printing it from its start\n`);
          cursor = 0;
          if (!isCurrent()) return false;
          read = await readGroupHistory(url, access, group, 0, each, tls, numbering);
        }
        if (!isCurrent()) return false;
        cursor = Math.max(cursor!, read.last);
        const live = connection.held ?? [];
        connection.held = undefined;
        for (const m of live) if (!print(m)) break;
        return true;
      };
      HubClient.connect(url, access, { userId, roles: [`webpubsub.joinLeaveGroup.${group}`], tls, timeouts }, onMessage).then(
        async (client) => {
          current = client;
          connection.client = client;
          client.onClose((code, reason) => reconnect(`connection closed (${code}${reason ? ` ${reason}` : ''})`));
          try {
            await client.request({ type: 'joinGroup', group });
          } catch (err) {
            // Not answered (no ack in time, or the connection went meanwhile): try again on a new connection, as after a drop.
            // Refused (no permission, say): say so and stop.
            if ((err as { unacknowledged?: boolean }).unacknowledged) {
              client.drop(`joining ${group} not acknowledged`);
              return;
            }
            process.stderr.write(`edge-relay sub: cannot join ${group}: ${(err as Error).message}\n`);
            return finish(1);
          }
          if (cursor !== undefined) {
            try {
              if (!(await catchUp())) return;
            } catch (err) {
              // The connection went meanwhile: its successor reads the history again.
              if (!isCurrent()) return;
              // The read failed on the way (the relay went away: a reset, no answer; a 5xx, 429, 408): tried again
              // on a new connection, as after a drop (before, sub ended when a relay restarting cut the read).
              const status = (err as { status?: number }).status;
              if (status === undefined || status >= 500 || momentary(status)) {
                client.drop(`reading the history: ${(err as Error).message}`);
                return;
              }
              process.stderr.write(`edge-relay sub: ${(err as Error).message}\n`);
              return finish(1);
            }
          }
          backoff.connected();
          process.stderr.write(`edge-relay sub: watching group ${group} in hub ${access.hub}\n`);
        },
        (err: Error & { status?: number }) => {
          // Refused for a reason retrying cannot change (bad key, unknown hub): say so and stop (not for a limit of the moment).
          if (err.status !== undefined && err.status >= 400 && err.status < 500 && !momentary(err.status)) {
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
