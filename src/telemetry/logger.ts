// pino logger for the relay: JSON lines on stderr (stdout is kept for the
// one "listening on" line scripts read), each carrying the node id. Child
// loggers add entity and trackingId. Never log tokens, keys or payloads.
//
// A pino child copies its parent's level when it is made, so a new level
// (log.level on reload) must reach every child alive: the root keeps weak
// references to its descendants, dropped as they are collected.
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** pino's levels, as log.level in schemas/config.schema.json takes them. */
export const LOG_LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

interface Family {
  children: Set<WeakRef<Logger>>;
  collected: FinalizationRegistry<WeakRef<Logger>>;
}

const families = new WeakMap<Logger, Family>();

/** `destination`: stderr unless given (tests read the lines). */
export function createLogger(level: string, nodeId: string, destination?: DestinationStream): Logger {
  const children = new Set<WeakRef<Logger>>();
  const family: Family = { children, collected: new FinalizationRegistry((ref) => children.delete(ref)) };
  const root = pino(
    {
      level,
      base: { node: nodeId },
      // Inherited by every descendant.
      onChild: (child) => {
        const ref = new WeakRef(child);
        children.add(ref);
        family.collected.register(child, ref);
      },
    },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
  families.set(root, family);
  return root;
}

/** Sets the level of a logger from createLogger and of every child it has now; later children take it from their parents. */
export function setLogLevel(root: Logger, level: string): void {
  root.level = level;
  for (const ref of families.get(root)?.children ?? []) {
    const child = ref.deref();
    if (child) child.level = level;
  }
}
