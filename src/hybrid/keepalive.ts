// One shared timer for every control channel: pings each, drops those silent
// past the idle timeout, and closes (1008) those whose token expired more than
// timeouts.tokenGraceMs ago without a renewal. Granularity is
// timeouts.keepAliveIntervalMs. The grace is for Microsoft's hyco-ws and
// hyco-https: they renew every hour on the hour with tokens that live an hour
// from a time rounded down to the second, so their renewal always arrives
// after the old token expired (0 to 1 s late, more on a busy or skewed host).
import type { RelayConfig } from '../config/types.ts';
import { SweepClock } from '../websocket/sweep-clock.ts';
import type { ListenerRegistry } from './listener-registry.ts';

export function startKeepAlive(listeners: ListenerRegistry, timeouts: RelayConfig['timeouts']): () => void {
  const clock = new SweepClock(timeouts.keepAliveIntervalMs);
  const timer = setInterval(() => {
    const now = Date.now();
    const judging = clock.onTime(now);
    for (const channel of listeners.all()) {
      if (judging && now - channel.lastSeen > timeouts.idleMs) {
        channel.log.info({ event: 'listener.idle_timeout', idleMs: now - channel.lastSeen });
        channel.terminate();
      } else if (channel.tokenExpiresAt * 1000 + timeouts.tokenGraceMs <= now) {
        channel.closeWith('TokenExpired');
      } else {
        channel.ping();
      }
    }
  }, timeouts.keepAliveIntervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
