// pino logger for the relay: JSON lines on stderr (stdout is kept for the
// one "listening on" line scripts read), each carrying the node id. Child
// loggers add entity and trackingId. Never log tokens, keys or payloads.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, nodeId: string): Logger {
  return pino({ level, base: { node: nodeId } }, pino.destination({ fd: 2, sync: false }));
}
