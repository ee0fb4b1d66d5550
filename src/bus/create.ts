// Builds the bus the config names.
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Bus } from './bus.ts';
import { JetStreamAccess } from './jetstream.ts';
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
    },
    busLog,
  );
}

/** JetStream access when the NATS bus has it on and some hub is durable; undefined otherwise. */
export function createJetStream(bus: Bus, config: RelayConfig, log: Logger): JetStreamAccess | undefined {
  const js = config.bus.jetstream;
  if (!(bus instanceof NatsBus) || !js.enabled || !config.pubsub.hubs.some((h) => h.durable)) return undefined;
  return new JetStreamAccess(
    bus,
    { replicas: js.replicas, storage: js.storage, publishTimeoutMs: js.publishTimeoutMs, requestTimeoutMs: config.bus.requestTimeoutMs },
    log.child({ component: 'jetstream' }),
  );
}
