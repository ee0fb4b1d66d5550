// Builds the bus the config names.
import { accessSync, constants, statSync } from 'node:fs';
import { ConfigError } from '../config/errors.ts';
import type { RelayConfig } from '../config/types.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Bus } from './bus.ts';
import { JetStreamAccess, NOT_ENABLED } from './jetstream.ts';
import { MemoryBus } from './memory.ts';
import { NatsBus } from './nats.ts';

export function createBus(config: RelayConfig, log: Logger): Bus {
  const busLog = log.child({ component: 'bus' });
  const bus = config.bus;
  if (bus.kind === 'memory') {
    return new MemoryBus({ onHandlerError: (err, subject) => busLog.error({ event: 'bus.handler_failed', subject, err: String(err) }) });
  }
  return new NatsBus(
    {
      servers: bus.servers ?? [],
      randomizeServers: bus.randomizeServers,
      name: `edge-relay ${config.nodeId}`,
      user: bus.user,
      pass: bus.pass,
      token: bus.token,
      credsFile: bus.credsFile,
      nkeyFile: bus.nkeyFile,
      tls: bus.tls,
      reconnectTimeWaitMs: bus.reconnectTimeWaitMs,
      connectTimeoutMs: bus.connectTimeoutMs,
      pingIntervalMs: bus.pingIntervalMs,
      flushTimeoutMs: bus.requestTimeoutMs,
      republishBytes: bus.replayWindowMs > 0 ? bus.replayBufferBytes : 0,
    },
    busLog,
  );
}

/**
 * The files the NATS client reads at every connect (so a rotated one is taken), checked once at start, before the
 * relay binds its port: one that cannot be read (or is a folder) is the config's error (exit 78, its key named), not
 * a bus that never connects (found by the TLS review: before, the edge started and logged bus.unreachable, or nothing
 * past bus.disconnected, for as long as it ran).
 */
export function checkBusFiles(config: RelayConfig): void {
  const bus = config.bus;
  if (bus.kind === 'memory') return;
  const files: [string, string | undefined][] = [
    ['bus.tls.caFile', bus.tls?.caFile],
    ['bus.tls.certFile', bus.tls?.certFile],
    ['bus.tls.keyFile', bus.tls?.keyFile],
    ['bus.credsFile', bus.credsFile],
    ['bus.nkeyFile', bus.nkeyFile],
  ];
  for (const [key, file] of files) {
    if (file === undefined) continue;
    try {
      accessSync(file, constants.R_OK);
      if (statSync(file).isDirectory()) throw Object.assign(new Error('a folder'), { code: 'EISDIR' });
    } catch (err) {
      throw new ConfigError(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}

/** The hubs of `config` kept in JetStream (none on the memory bus or with bus.jetstream.enabled false). */
export function durableHubs(bus: Bus, config: RelayConfig): string[] {
  if (!(bus instanceof NatsBus) || !config.bus.jetstream.enabled) return [];
  return config.pubsub.hubs.filter((h) => h.durable).map((h) => h.name);
}

/**
 * Why a reload to `next` cannot take the durable hubs it adds (the NATS server this edge is connected to has no
 * JetStream: start-up refuses such a config), or undefined. Hubs running before are not asked about again.
 */
export function durableHubsWithoutJetStream(bus: Bus, current: RelayConfig, next: RelayConfig, jetstream: JetStreamAccess | undefined): string | undefined {
  // bus.* changes at a restart only: the running config says whether durable hubs use JetStream. A kept hub's
  // `durable` waits for a restart too (reload.ts): only new hubs count.
  if (!(bus instanceof NatsBus) || !current.bus.jetstream.enabled) return undefined;
  const running = new Set(current.pubsub.hubs.map((h) => asciiLowerCase(h.name)));
  const added = next.pubsub.hubs.filter((h) => h.durable && !running.has(asciiLowerCase(h.name))).map((h) => h.name);
  if (added.length === 0) return undefined;
  // JetStream that answers (through another server of the cluster) is taken at its word over this server's INFO.
  const lacks = jetstream?.state !== 'ready' && ((jetstream?.state === 'unavailable' && jetstream.problem === NOT_ENABLED) || bus.serverHasJetStream === false);
  return lacks ? `pubsub.hubs: ${added.join(', ')} would be durable: ${NOT_ENABLED} (or set durable to false)` : undefined;
}

/** JetStream access when the NATS bus has it on and some hub is durable; undefined otherwise. */
export function createJetStream(bus: Bus, config: RelayConfig, log: Logger): JetStreamAccess | undefined {
  const js = config.bus.jetstream;
  if (!(bus instanceof NatsBus) || durableHubs(bus, config).length === 0) return undefined;
  return new JetStreamAccess(
    bus,
    { replicas: js.replicas, storage: js.storage, publishTimeoutMs: js.publishTimeoutMs, unsureRetryMs: js.unsureRetryMs, requestTimeoutMs: config.bus.requestTimeoutMs },
    log.child({ component: 'jetstream' }),
  );
}
