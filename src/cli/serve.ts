// `edge-relay serve`: runs one edge node until SIGTERM/SIGINT; SIGHUP reloads
// its config and certificates (server/reload.ts). Keys too weak for a network
// are refused off loopback unless --dev (config/secrets.ts).
import { parseArgs } from 'node:util';
import { ConfigError, FLAG_KEYS, NODE_ID_MAX, loadConfig, type ConfigOverrides } from '../config/load.ts';
import { weakKeysRefusal } from '../config/secrets.ts';
import type { RelayConfig } from '../config/types.ts';
import { createLogger } from '../telemetry/logger.ts';
import { startRelay, type RunningRelay } from '../server/relay-server.ts';
import { replaceSignalHandler, takeOverEarlyHangups } from './signal-handlers.ts';
import { wholeNumber } from './whole-number.ts';
import { restartOnlyValues, withRestartOnlyValues } from '../server/reload.ts';
import { WorkerStartError, announceListening, answerPings, announceReady, followPeers, pinnedAtStart, reloadOtherWorkers, startWorkers, workerIndex } from '../server/worker-cluster.ts';

export const SERVE_HELP = `Usage: edge-relay serve --config FILE [options]

Runs one edge node. Prints "listening on http://HOST:PORT" (https:// with
listen.tls) on stdout once it accepts connections; logs go to stderr as JSON
lines. SIGHUP reads the config file and the TLS certificates again; a config
that does not load changes nothing (the log says which key failed).

Options:
  --config FILE      JSON config (schemas/config.schema.json); env EDGE_RELAY_CONFIG
  --host HOST        listen.host        (env EDGE_RELAY_HOST)
  --port N           listen.port, 0 = any free port (env EDGE_RELAY_PORT)
  --public-url URL   publicUrl          (env EDGE_RELAY_PUBLIC_URL)
  --log-level LEVEL  log.level          (env EDGE_RELAY_LOG_LEVEL)
  --node-id ID       nodeId             (env EDGE_RELAY_NODE_ID)
  --nats URLS        bus: { kind: "nats", servers: URLS } (comma-separated; env EDGE_RELAY_NATS)
  --workers N        N edge processes sharing the port, each an edge on the NATS bus
                     named NODEID-wN (1 to 256, default 1; env EDGE_RELAY_WORKERS)
  --worker-watchdog S
                     with --workers: a worker that answers no ping for S seconds (its
                     event loop stuck) is killed and started again (0.5 to 86400,
                     default 30, 0 = off; env EDGE_RELAY_WORKER_WATCHDOG)
  --dev              allow keys shorter than 32 bytes, or the published development
                     keys, on a non-loopback listen.host or behind a proxy
                     (listen.trustProxy, a publicUrl of another host; never in production)
  -h, --help         this text

Flags override environment variables, which override the file.

Examples:
  edge-relay serve --config config/dev.json --port 0
  edge-relay serve --config config/dev.json --port 9401 --node-id edge-1 --nats nats://127.0.0.1:4222
`;

/** Exit code after an uncaught exception (sysexits EX_SOFTWARE). */
const EX_SOFTWARE = 70;
/** How long a crash waits for its log line to be written before exiting anyway. */
const CRASH_FLUSH_MS = 1000;

export async function serve(argv: string[]): Promise<number> {
  if (workerIndex() === undefined) return serveCommand(argv);
  answerPings();
  // A worker ends with its command, however it ends: its channel to the primary would keep it alive (a worker that
  // could not start, a bad config or certificate, stayed for good; the primary neither failed nor started it again).
  let code: number;
  try {
    code = await serveCommand(argv);
  } catch (err) {
    process.stderr.write(`edge-relay: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    code = 1;
  }
  if (code !== 0) process.exit(code);
  if (process.connected) process.disconnect();
  return code;
}

async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'public-url': { type: 'string' },
      'log-level': { type: 'string' },
      'node-id': { type: 'string' },
      nats: { type: 'string' },
      workers: { type: 'string' },
      'worker-watchdog': { type: 'string' },
      dev: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  // stdout carries the one ready line, here or in the primary of --workers: a reader that took it and went (EPIPE) is
  // no failure of the relay's (before, the write's error ended it as crashed, exit 70; found by review).
  process.stdout.on('error', () => {});
  const file = values.config ?? process.env.EDGE_RELAY_CONFIG;
  if (!file) {
    process.stderr.write('edge-relay serve: --config FILE is required\n\n' + SERVE_HELP);
    return 2;
  }
  const flags: ConfigOverrides = {};
  for (const [key, flag] of Object.entries(FLAG_KEYS) as [keyof ConfigOverrides, string][]) {
    const value = (values as Record<string, string | undefined>)[flag.slice(2)];
    if (value !== undefined) flags[key] = value;
  }
  // At start and on every reload: the file, the environment, the flags, the secrets, and the check of the keys.
  // A reload checks the keys against the address the relay is bound to and the publicUrl it runs with (a new
  // listen.host or publicUrl waits for a restart; before, a publicUrl dropped from the file let weak keys in while
  // the relay was still reached by that name).
  let reachedAs: { host: string; publicUrl: string | undefined } | undefined;
  const worker = workerIndex();
  // A worker starts with the primary's restart-only values (one started again after a crash must not take a
  // port, TLS or NATS server the file has since and the others wait a restart for); its reloads compare the
  // file's with them and say restartNeeded, as any edge's do.
  let pinned = worker !== undefined ? pinnedAtStart() : undefined;
  const load = (): RelayConfig => {
    let loaded = loadConfig(file, process.env, flags);
    // A worker is an edge of its own on the bus (at start and on every reload alike).
    if (worker !== undefined) loaded.nodeId = `${loaded.nodeId}-w${worker}`;
    if (pinned) loaded = withRestartOnlyValues(loaded, pinned);
    pinned = undefined;
    reachedAs ??= { host: loaded.listen.host, publicUrl: loaded.publicUrl };
    const refusal = weakKeysRefusal({ ...loaded, publicUrl: reachedAs.publicUrl, listen: { ...loaded.listen, host: reachedAs.host } }, values.dev === true);
    if (refusal) throw new ConfigError(refusal);
    return loaded;
  };
  let config;
  try {
    config = load();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`edge-relay: ${err.message}\n`);
      return 78; // EX_CONFIG
    }
    throw err;
  }
  // An empty EDGE_RELAY_WORKERS is unset, as every EDGE_RELAY_* variable (config/load.ts).
  const workersText = values.workers ?? (process.env.EDGE_RELAY_WORKERS || undefined) ?? '1';
  const workers = wholeNumber(workersText, 3);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    process.stderr.write('edge-relay serve: --workers must be a whole number from 1 to 256\n');
    return 2;
  }
  const watchdogText = values['worker-watchdog'] ?? (process.env.EDGE_RELAY_WORKER_WATCHDOG || undefined) ?? '30';
  const watchdogSeconds = /^[0-9]{1,5}(\.[0-9]{1,3})?$/.test(watchdogText) ? Number(watchdogText) : NaN;
  if (!(watchdogSeconds === 0 || (watchdogSeconds >= 0.5 && watchdogSeconds <= 86400))) {
    process.stderr.write('edge-relay serve: --worker-watchdog must be 0 (off) or seconds from 0.5 to 86400\n');
    return 2;
  }
  if (workers > 1 && worker === undefined) return runWorkers(config, workers, watchdogSeconds * 1000);
  const log = createLogger(config.log.level, config.nodeId, undefined, config.log.bufferBytes);
  // A last resort, not a fix: an exception nothing caught ends the process
  // (its state can no longer be trusted), logged as relay.crash. No input may
  // reach it; test/hostile/ checks that none of theirs does.
  let crashed = false;
  process.on('uncaughtException', (err) => {
    // Once: an exception while the crash is written (or flushed) must not start it again.
    if (crashed) return;
    crashed = true;
    log.fatal({ event: 'relay.crash', err: { name: err.name, message: err.message, stack: err.stack } });
    setTimeout(() => process.exit(EX_SOFTWARE), CRASH_FLUSH_MS);
    log.flush(() => process.exit(EX_SOFTWARE));
  });
  // SIGHUP reloads; one that comes while the relay is starting would otherwise end the process. One after the config
  // was read and before the relay listens is owed: done once it does (before, it was refused and lost, while
  // `systemctl reload` said it had worked).
  let running: RunningRelay | undefined;
  let reloadOwed = false;
  const onHup = () => {
    log.info({ event: 'relay.signal', signal: 'SIGHUP' });
    if (running) running.reload('signal');
    else {
      reloadOwed = true;
      log.info({ event: 'config.reload_deferred', reason: 'signal', detail: 'the relay is still starting: it reloads once it listens' });
    }
  };
  const early = takeOverEarlyHangups(onHup);
  if (early > 0) log.info({ event: 'relay.signal', signal: 'SIGHUP', count: early, detail: 'came before the config was read: the config read has what it asked for' });
  // Stop signals are taken from here on: one before the relay has started closes it as soon as it has (a port
  // bound, a drain with nothing in it); one while it waits for JetStream below drains it (it serves already).
  let relay: RunningRelay | undefined;
  let stopFailed = false;
  let stopRequested = false;
  let stoppedNow!: () => void;
  const stopped = new Promise<void>((resolve) => (stoppedNow = resolve));
  const closeRelay = (started: RunningRelay) =>
    // A stop that throws is said, and ends the command with EX_SOFTWARE: not a quiet 0 without relay.stopped.
    started.close().then(stoppedNow, (err: Error) => {
      stopFailed = true;
      log.error({ event: 'relay.stop_failed', err: { name: err?.name, message: err?.message, stack: err?.stack } });
      stoppedNow();
    });
  const stop = (signal: string) => {
    stopRequested = true;
    log.info({ event: 'relay.signal', signal });
    // While it drains a reload means nothing. A worker also waits out further
    // stop signals: a terminal's Ctrl-C reaches the whole process group and the
    // primary passes it on again (the primary ends a worker that outstays its
    // drain). A lone edge ends at once on a second one, as a second Ctrl-C asks.
    const ignored = (s: string) => () => log.info({ event: 'relay.signal_ignored', signal: s, reason: 'draining' });
    replaceSignalHandler('SIGHUP', onHup, ignored('SIGHUP'));
    if (worker !== undefined) {
      replaceSignalHandler('SIGTERM', onTerm, ignored('SIGTERM'));
      replaceSignalHandler('SIGINT', onInt, ignored('SIGINT'));
    } else {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
    }
    if (relay) void closeRelay(relay);
  };
  const onTerm = () => stop('SIGTERM');
  const onInt = () => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  // A worker knows the others before it takes its first connection (a leg for one of them is handed over).
  if (worker !== undefined) await followPeers();
  try {
    relay = await startRelay(config, log, { loadConfig: load, worker, onApiReload: worker === undefined ? undefined : reloadOtherWorkers });
  } catch (err) {
    // A certificate that cannot be used, a port that cannot be bound.
    const code = (err as NodeJS.ErrnoException).code;
    // A listen.host that names no interface of this machine is the config's fault: said so, 78 (before: getaddrinfo's words, 1).
    const noSuchAddress = code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL';
    const problem = noSuchAddress ? `config: listen.host: "${config.listen.host}" is no address of this machine to listen on (${code})` : (err as Error).message;
    process.stderr.write(`edge-relay: ${problem}\n`);
    log.flush();
    return noSuchAddress || err instanceof ConfigError ? 78 : 1;
  }
  if (stopRequested) void closeRelay(relay);
  else if (worker !== undefined) announceListening(relay.privateSocket!);
  if (relay.jetstream && !stopRequested) {
    // Durable hubs need JetStream: say at once when the NATS servers do not have it. (Without
    // NATS at all the edge starts anyway and serves its own clients, as the readiness probe says.)
    const busDeadline = Date.now() + config.bus.requestTimeoutMs;
    while (!relay.bus.connected && !stopRequested && Date.now() < busDeadline) await new Promise((r) => setTimeout(r, 25));
    if (relay.bus.connected && !stopRequested) await Promise.race([relay.jetstream.whenSettled(config.bus.jetstream.readyTimeoutMs), stopped]);
    if (relay.jetstream.state === 'unavailable' && !stopRequested) {
      process.stderr.write(`edge-relay: bus.jetstream: ${relay.jetstream.problem}\n`);
      await relay.close();
      log.flush();
      return 78; // EX_CONFIG
    }
    if (!relay.jetstream.answered && relay.bus.connected && !stopRequested) {
      process.stderr.write(`edge-relay: ${relay.jetstream.problem ?? 'JetStream is not ready'}; publishes to durable hubs are refused until it is (still trying)\n`);
    }
  }
  if (!stopRequested) {
    if (worker !== undefined) announceReady(relay.url);
    else process.stdout.write(`listening on ${relay.url}\n`);
    running = relay;
    if (reloadOwed) relay.reload('signal');
  }
  await stopped;
  log.flush();
  return stopFailed ? EX_SOFTWARE : 0;
}

/**
 * The primary of `serve --workers N`: starts the workers (each runs this
 * command as an edge), prints one `listening on` line once all listen, and
 * passes SIGTERM/SIGINT on to them. Workers are edges of a NATS cluster: on
 * the memory bus they could not reach each other.
 */
async function runWorkers(config: RelayConfig, count: number, watchdogMs: number): Promise<number> {
  if (config.bus.kind !== 'nats') {
    process.stderr.write('edge-relay serve: --workers needs the NATS bus (bus.kind nats or --nats): workers are separate edges that reach each other through NATS\n');
    return 2;
  }
  // Each worker is nodeId-wN on the bus, whose messages name edges in NODE_ID_MAX characters at most: a longer one
  // was refused by every other edge, its events, answers and roster dropped as invalid (found by review).
  const longest = `${config.nodeId}-w${count}`;
  if (longest.length > NODE_ID_MAX) {
    const most = NODE_ID_MAX - (longest.length - config.nodeId.length);
    process.stderr.write(`edge-relay: config: nodeId "${config.nodeId}" is too long for --workers ${count}: each worker is an edge named nodeId-wN (here up to ${longest.length} characters, the bus takes ${NODE_ID_MAX}); give nodeId (--node-id) at most ${most} characters\n`);
    return 78; // EX_CONFIG
  }
  // The primary's lines about its workers are best effort: a reader gone (EPIPE) does not end it.
  process.stderr.on('error', () => {});
  const cluster = startWorkers(count, config.nodeId, restartOnlyValues(config), watchdogMs);
  let stopping = false;
  // Each worker reloads its config and certificates (not once they drain). In place before the
  // workers listen: a SIGHUP meanwhile would end this process (a worker still starting is not sent it).
  takeOverEarlyHangups(() => {
    if (!stopping) cluster.signal('SIGHUP');
  });
  // Stop signals are taken from the start: one while the workers start stops them (each drains as far as it
  // got); a second one cuts them at once (SIGKILL), as a second Ctrl-C asks. Either way this process ends by
  // itself, removing its workers' socket folder (it would stay behind a process ended by the signal).
  const stopped = new Promise<boolean>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        process.stderr.write(`edge-relay: ${signal} again while stopping: cutting the workers\n`);
        cluster.stop('SIGKILL', 0).then(() => resolve(false), () => resolve(false));
        return;
      }
      stopping = true;
      // Each worker drains for up to timeouts.shutdownMs; past a little more, what is left is cut.
      cluster.stop(signal, config.timeouts.shutdownMs + 5000).then(resolve, () => resolve(false));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  let url: string | undefined;
  try {
    url = await Promise.race([cluster.ready, stopped.then(() => undefined)]);
  } catch (err) {
    // A worker that ended by the stop signal before it was ready is no failure to start.
    if (!stopping) {
      process.stderr.write(`edge-relay: ${(err as Error).message}\n`);
      await cluster.stop('SIGKILL', 0);
      // The worker's own code: 78 for a config or certificate it could not use, as a single edge says.
      return err instanceof WorkerStartError ? err.exitCode : 1;
    }
  }
  if (url !== undefined && !stopping) process.stdout.write(`listening on ${url} (${count} workers)\n`);
  const clean = await stopped;
  // A worker cut past its drain, or whose stop failed, ends the command with EX_SOFTWARE, as a single edge's would.
  if (!clean) process.stderr.write('edge-relay: a worker did not stop cleanly (cut past its drain, or its stop failed)\n');
  return clean ? 0 : EX_SOFTWARE;
}
