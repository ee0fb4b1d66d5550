// Builds the bus the config names.
import type { RelayConfig } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Bus } from './bus.ts';
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
      reconnectTimeWaitMs: bus.reconnectTimeWaitMs,
      pingIntervalMs: bus.pingIntervalMs,
      flushTimeoutMs: bus.requestTimeoutMs,
    },
    busLog,
  );
}
