// `edge-relay bridge`: forwards TCP ports through hybrid connections, both
// ways (bridge/local-forwarder.ts, bridge/remote-forwarder.ts). Prints one
// line per forward on stdout once it is up; logs are JSON lines on stderr.
import { parseArgs } from 'node:util';
import { parseLocalForward, LocalForwarder } from '../bridge/local-forwarder.ts';
import { RelayAccess, tokenExpiredWhy } from '../bridge/relay-access.ts';
import { parseRemoteForward, RemoteForwarder } from '../bridge/remote-forwarder.ts';
import { hostBeforePort } from '../http/host-header.ts';
import { MAX_SAS_EXPIRY } from '../auth/sas-token.ts';
import { tokenExpiresAt } from '../auth/token-expiry.ts';
import { LOG_LEVELS, createLogger } from '../telemetry/logger.ts';
import { KEY_ENV, keyOf } from './key-source.ts';
import { TLS_HELP, TLS_OPTIONS, readClientTls } from './tls-options.ts';
import { wholeNumber } from './whole-number.ts';

export const BRIDGE_HELP = `Usage: edge-relay bridge --relay URL [credentials] (-L [bind:]port:entity | -R entity:host:port)...

Forwards TCP through the relay's hybrid connections, like Azure's azbridge.
  -L [bind:]port:entity   listen on bind:port (default bind, or an empty one,
                          127.0.0.1: every interface only as 0.0.0.0 or [::];
                          port 0 picks one); each accepted TCP connection
                          becomes a relayed WebSocket to the entity's listener
  -R entity:host:port     be a listener on the entity; each relayed connection
                          becomes a TCP connection to host:port (refused with
                          502 when host:port cannot be reached)
Both may be given, each several times. A lost listener connection is re-opened
after a jittered delay of a quarter to half the time the relay has been gone
(0.125 s at first, 15 to 30 s in a long outage), and the log says why it was lost;
a 401, or a 403 that names the token (TokenScopeInvalid, RightMissing), is
tried again only with tokens minted from --key (with --token, or no
credentials, it ends the bridge, exit 1, once its open connections have: see
--token); another 403 (ListenerLimitReached) is tried again.
An end (FIN) on either side of a forwarded connection crosses as an end and
leaves the other direction open (between two bridges of this version; with
an older -R, closing either end closes the other); a connection cut short (a
reset, the relay gone, a refused connect, this bridge stopped) reaches the
other end as a reset.

Options:
  --relay URL          the relay, e.g. http://127.0.0.1:9400 or https://relay.example.com
  --key-name NAME      SAS rule to mint tokens with (Listen for -R, Send for -L)
  --key KEY            that rule's key (seen by anyone on this machine who runs ps:
                       prefer --key-file or the environment variable EDGE_RELAY_KEY)
  --key-file FILE      read the key from FILE (its trailing newline dropped)
  --token TOKEN        a ready SAS token instead of --key-name/--key; never
                       renewed: one already expired (its se) is refused at start
                       (exit 2). When it expires, or the relay refuses it (401,
                       or 403 naming the token) on -R's listener connection,
                       the bridge takes no new connection (-L closes its
                       port, -R stops listening);
                       those open go on (the relay lets a relayed connection
                       outlive its token), and once the last has ended the
                       bridge ends, exit 1. That wait has no bound but
                       --keepalive's (a leg gone silent is reset): an idle SSH
                       session keeps it waiting; a signal stops it at once,
                       its connections reset
  --ttl SECONDS        lifetime of minted tokens, at least 60 (their expiry at most 12
                       digits, as the relay reads it), default 3600 (renewed at half)
  --buffer BYTES       bytes queued per direction before reading pauses, 16384 to
                       1073741824 (1 GiB), default 1048576
  --keepalive SECONDS  -R pings its listener connection this often and re-opens
                       it when the relay stays silent for two periods (a NAT or
                       firewall that dropped the path); both sides ping each
                       forwarded connection's leg as often and reset the
                       connection when its leg stays silent for two periods;
                       1 to 3600, default 30
  --connect-timeout SECONDS
                       how long a -R target may take to accept a TCP
                       connection, and the relay to answer a -L connect (the
                       listener accepting), 5 s longer, so a -R target that
                       never answers reaches -L as 502 with its reason; default
                       25 (with the 5 s, the relay's timeouts.acceptMs, 30 s by
                       default, after which the relay answers 504); 1 to 3600
  --log-level LEVEL    fatal, error, warn, info, debug, trace or silent; default info
${TLS_HELP}
  -h, --help           this text

Prints "forwarding 127.0.0.1:PORT -> ENTITY" or "listening on ENTITY -> HOST:PORT"
on stdout for each forward once it is up.

Example (config/dev.json's relay, entity "tunnel": one of its own, so no other
listener shares it):
  edge-relay bridge --relay http://127.0.0.1:9400 --key-name RootManageSharedAccessKey \\
    --key dev-only-key-0123456789 -R tunnel:127.0.0.1:8080
  edge-relay bridge --relay http://127.0.0.1:9400 --key-name RootManageSharedAccessKey \\
    --key dev-only-key-0123456789 -L 127.0.0.1:18080:tunnel
  curl http://127.0.0.1:18080/      # answered by whatever serves 127.0.0.1:8080
`;

/** The most --buffer takes: a bound per direction of each connection, and the largest message a leg takes (pipe.ts). */
const MAX_BUFFER = 2 ** 30;

function fail(message: string): number {
  process.stderr.write(`edge-relay bridge: ${message}\n\n${BRIDGE_HELP}`);
  return 2;
}

export async function bridge(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        relay: { type: 'string' },
        'key-name': { type: 'string' },
        key: { type: 'string' },
        'key-file': { type: 'string' },
        token: { type: 'string' },
        ttl: { type: 'string', default: '3600' },
        buffer: { type: 'string', default: '1048576' },
        keepalive: { type: 'string', default: '30' },
        'connect-timeout': { type: 'string', default: '25' },
        'log-level': { type: 'string', default: 'info' },
        L: { type: 'string', short: 'L', multiple: true, default: [] },
        R: { type: 'string', short: 'R', multiple: true, default: [] },
        ...TLS_OPTIONS,
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    return fail((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(BRIDGE_HELP);
    return 0;
  }
  // stdout carries the `forwarding` / `listening on` lines: a reader that took the one it wanted and went (EPIPE; a
  // -R's line comes whenever the relay first lets it listen) is no failure of the bridge's. Before, the write's
  // 'error' ended it as crashed, exit 1, every forwarded connection cut, as serve did (found by review).
  process.stdout.on('error', () => {});
  if (!values.relay) return fail('--relay URL is required');
  if (!/^(http|ws)s?:\/\//i.test(values.relay)) return fail(`--relay ${values.relay}: expected an http(s):// or ws(s):// URL`);
  // Checked here, not on the first connection (before: -L died with a SyntaxError on it, -R with a stack trace).
  if (!URL.canParse(values.relay)) return fail(`--relay ${values.relay}: not a valid URL`);
  if (/[?#]/.test(values.relay)) return fail(`--relay ${values.relay}: the relay's base URL, without a query or fragment`);
  if (values.key !== undefined && values['key-file'] !== undefined) return fail('--key or --key-file, not both');
  const key = keyOf(values.key, values['key-file'], values['key-name'] !== undefined ? process.env[KEY_ENV] : undefined);
  if (typeof key === 'object') return fail(key.problem);
  if ((values['key-name'] === undefined) !== (key === undefined)) return fail('--key-name and --key (or --key-file, or EDGE_RELAY_KEY) go together');
  // Alternatives, as the help says (before, both were taken, and which one signed went unsaid).
  if (values.token !== undefined && key !== undefined) return fail('--token or --key-name/--key, not both');
  // It goes in a header (ServiceBusAuthorization): a line break or other control character (a token file from Windows)
  // is a usage error here, not an uncaught ERR_INVALID_CHAR when -R dials.
  if (values.token !== undefined && !/^[\x20-\x7e]+$/.test(values.token)) return fail('--token must be printable ASCII (a SAS token: SharedAccessSignature sr=…&sig=…&se=…&skn=…)');
  // A ready token is never renewed: one past its expiry (`se`, or a JWT's `exp`) is refused here, before -L takes
  // connections that all fail or -R tries it again for good (before: -R retried the relay's 401 with backoff for ever).
  const tokenExpiry = values.token !== undefined ? tokenExpiresAt(values.token) : undefined;
  if (tokenExpiry !== undefined && tokenExpiry * 1000 <= Date.now()) {
    process.stderr.write(`edge-relay bridge: ${tokenExpiredWhy(tokenExpiry)}\n`);
    return 2;
  }
  const ttl = wholeNumber(values.ttl, 16);
  const buffer = wholeNumber(values.buffer, 16);
  if (!(ttl >= 60) || Math.floor(Date.now() / 1000) + ttl > MAX_SAS_EXPIRY) return fail('--ttl must be a whole number of seconds, at least 60, the expiry at most 12 digits');
  if (!(buffer >= 16384 && buffer <= MAX_BUFFER)) return fail(`--buffer must be a whole number of bytes from 16384 to ${MAX_BUFFER}`);
  if (!LOG_LEVELS.includes(values['log-level'])) return fail(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const keepAliveSeconds = wholeNumber(values.keepalive, 16);
  const connectTimeoutSeconds = wholeNumber(values['connect-timeout'], 16);
  if (!Number.isInteger(keepAliveSeconds) || keepAliveSeconds < 1 || keepAliveSeconds > 3600) return fail('--keepalive must be a whole number of seconds from 1 to 3600');
  if (!Number.isInteger(connectTimeoutSeconds) || connectTimeoutSeconds < 1 || connectTimeoutSeconds > 3600) return fail('--connect-timeout must be a whole number of seconds from 1 to 3600');
  const timing = { keepAliveMs: keepAliveSeconds * 1000, connectTimeoutMs: connectTimeoutSeconds * 1000 };
  if (values.L.length + values.R.length === 0) return fail('give at least one -L or -R');
  let locals;
  let remotes;
  try {
    locals = values.L.map(parseLocalForward);
    remotes = values.R.map(parseRemoteForward);
  } catch (err) {
    return fail((err as Error).message);
  }
  const tls = readClientTls(values);
  if (typeof tls === 'string') return fail(tls);
  const access = new RelayAccess({ url: values.relay, keyName: values['key-name'], key, token: values.token, tokenTtlSeconds: ttl, tls, handshakeTimeoutMs: timing.connectTimeoutMs });
  const log = createLogger(values['log-level'], 'bridge');
  const localForwarders = locals.map((f) => new LocalForwarder(f, access, log, buffer, timing.keepAliveMs));
  const remoteForwarders = remotes.map((f) => new RemoteForwarder(f, access, log, buffer, timing));
  for (const forwarder of remoteForwarders) {
    forwarder.start();
    void forwarder.ready.then(() => {
      const f = forwarder.forward;
      process.stdout.write(`listening on ${f.entity} -> ${hostBeforePort(f.host)}:${f.port}\n`);
    });
  }
  for (const forwarder of localForwarders) {
    let port: number;
    try {
      port = await forwarder.start();
    } catch (err) {
      process.stderr.write(`edge-relay bridge: cannot listen on ${hostBeforePort(forwarder.forward.bindHost)}:${forwarder.forward.port}: ${(err as Error).message}\n`);
      for (const r of remoteForwarders) r.stop();
      for (const l of localForwarders) await l.stop();
      return 1;
    }
    process.stdout.write(`forwarding ${hostBeforePort(forwarder.forward.bindHost)}:${port} -> ${forwarder.forward.entity}\n`);
  }
  access.watchExpiry();
  // Until a signal, or credentials that never change are refused or expire (RelayAccess.ended): then no forward takes
  // a new connection, and once those open have ended on their own (their keep-alive bounds a leg gone silent), exit 1.
  // The relay lets a relayed connection outlive the token it was opened with, as Azure's does: before, the expiry
  // reset them all, an SSH session through -L cut at the token's expiry. A signal still stops at once, whatever is open.
  let ended: string | undefined;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ event: 'bridge.signal', signal });
      resolve();
    };
    void access.ended.then(async (why) => {
      if (stopping) return;
      ended = why;
      const open = [...remoteForwarders, ...localForwarders].reduce((n, f) => n + f.openConnections, 0);
      log.error({ event: 'bridge.credentials_unusable', why, open });
      await Promise.all([...remoteForwarders.map((r) => r.retire()), ...localForwarders.map((l) => l.retire())]);
      if (stopping) return;
      stopping = true;
      if (open > 0) log.info({ event: 'bridge.connections_ended' });
      resolve();
    });
    // SIGHUP (a closed terminal or ssh session) stops it as the others do, so its connections are reset; left to its
    // default it ended the process with each socket closed by a clean end, and a cut download read as a complete one.
    // The handlers stay until exit: a second Ctrl-C while stopping (the terminal's and npm's both) ended the process
    // by signal (130), not 0. (Found by review.) One while the open connections finish cuts them, exit 1 still.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => stop(signal));
  });
  access.stop();
  for (const r of remoteForwarders) r.stop();
  for (const l of localForwarders) await l.stop();
  log.flush();
  if (ended === undefined) return 0;
  process.stderr.write(`edge-relay bridge: ${ended}\n`);
  return 1;
}
