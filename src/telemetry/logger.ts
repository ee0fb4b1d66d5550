// pino logger for the relay: JSON lines on stderr (stdout is kept for the
// one "listening on" line scripts read), each carrying the node id. Child
// loggers add entity and trackingId. Never log tokens, keys or payloads.
//
// A pino child copies its parent's level when it is made, so a new level
// (log.level on reload) must reach every child alive: the root keeps weak
// references to its descendants, dropped as they are collected.
//
// Lines wait in memory while stderr does not take them (a pipe whose reader
// stalled or stopped): up to log.bufferBytes, past which new lines are
// dropped, counted (edge_relay_log_lines_dropped_total) and reported by one
// line once there is room again. Before, the wait had no bound: a flood of
// refused connections, each logged at warn, grew the relay's memory for as
// long as the reader was stuck. Nor does the exit wait for a stuck stderr:
// pino writes what is left synchronously when the process exits, and that
// write blocked for good (a relay told to stop, or one that crashed, never
// ended while nobody read its stderr).
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** pino's levels, as log.level in schemas/config.schema.json takes them. */
export const LOG_LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** log.bufferBytes unless the config says otherwise. */
export const DEFAULT_LOG_BUFFER_BYTES = 16 * 1024 * 1024;
/** How often lines dropped since the last report are reported. */
const DROP_REPORT_MS = 1000;
/** A write to stderr waiting this long at exit means nobody reads it: the process ends without the lines left. */
const STUCK_AT_EXIT_MS = 1000;

interface Family {
  children: Set<WeakRef<Logger>>;
  collected: FinalizationRegistry<WeakRef<Logger>>;
  /** Lines the destination dropped, since start. */
  dropped: number;
}

const families = new WeakMap<Logger, Family>();

/**
 * The stream pino writes to (sonic-boom): it drops a line past `maxLength`
 * buffered bytes and says so, says when a write went out, and writes what is
 * left synchronously when the process exits (`flushSync`, pino's exit hook).
 */
interface DroppingDestination extends DestinationStream {
  on(event: 'drop' | 'write', listener: () => void): unknown;
  on(event: 'error', listener: (err?: NodeJS.ErrnoException) => void): unknown;
  flushSync(): void;
  /** sonic-boom's own: a write is under way (it waits on the reader). */
  readonly _writing: boolean;
}

/**
 * `destination`: stderr unless given (tests read the lines); `bufferBytes`:
 * how much of stderr's lines may wait in memory (log.bufferBytes).
 */
export function createLogger(level: string, nodeId: string, destination?: DestinationStream, bufferBytes = DEFAULT_LOG_BUFFER_BYTES): Logger {
  const children = new Set<WeakRef<Logger>>();
  const family: Family = { children, collected: new FinalizationRegistry((ref) => children.delete(ref)), dropped: 0 };
  const stderr = destination ? undefined : (pino.destination({ fd: 2, sync: false, maxLength: bufferBytes }) as unknown as DroppingDestination);
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
    destination ?? stderr!,
  );
  families.set(root, family);
  if (stderr) {
    reportDrops(root, family, stderr);
    boundExitFlush(stderr);
    dropWhenUnread(family, stderr);
  }
  return root;
}

/** Errors of a write to stderr that say nobody will ever read it (its reader gone, the descriptor closed). */
const READER_GONE = new Set(['EPIPE', 'EBADF', 'ECONNRESET']);

/**
 * A write to stderr whose reader is gone (EPIPE, as `serve 2>&1 | head -1` leaves it) ends the writing there: every
 * line from then on is dropped and counted, and the exit writes nothing. Before, the failure was an 'error' nothing
 * listened to: the relay ended as crashed, and the crash's own line failed again, over and over, so that the
 * process neither ended nor heeded SIGTERM (found by review). Another error (a disk full for a moment under a
 * redirect to a file) is let be: what failed stays buffered and goes with the next line, within log.bufferBytes.
 */
function dropWhenUnread(family: Family, stderr: DroppingDestination): void {
  stderr.on('error', (err?: NodeJS.ErrnoException) => {
    if (!READER_GONE.has(err?.code ?? '')) return;
    const discard = () => {
      family.dropped++;
      return true;
    };
    Object.assign(stderr, { write: discard, flushSync: () => {} });
  });
}

/** The exit's synchronous write of what is left is skipped when stderr has taken nothing for STUCK_AT_EXIT_MS with a write waiting. */
function boundExitFlush(stderr: DroppingDestination): void {
  let lastTaken = performance.now();
  stderr.on('write', () => {
    lastTaken = performance.now();
  });
  const flushSync = stderr.flushSync.bind(stderr);
  stderr.flushSync = () => {
    if (stderr._writing && performance.now() - lastTaken > STUCK_AT_EXIT_MS) return;
    flushSync();
  };
}

/**
 * Counts the lines `stderr` drops and reports them in one line a second while
 * any were: if that line is dropped too, its count waits for the next try.
 */
function reportDrops(root: Logger, family: Family, stderr: DroppingDestination): void {
  let unreported = 0;
  let reporting = 0;
  stderr.on('drop', () => {
    if (reporting > 0) {
      // The report itself did not fit: its lines are still unreported (and it is no line of the relay's).
      unreported += reporting;
      reporting = 0;
      return;
    }
    family.dropped++;
    unreported++;
  });
  setInterval(() => {
    if (unreported === 0) return;
    reporting = unreported;
    unreported = 0;
    root.warn({ event: 'log.lines_dropped', lines: reporting }, 'stderr did not take the log lines in time (log.bufferBytes): these were dropped');
    reporting = 0;
  }, DROP_REPORT_MS).unref();
}

/** Lines the logger's stderr dropped since start (0 for a logger with a destination of its own). */
export function droppedLogLines(root: Logger): number {
  return families.get(root)?.dropped ?? 0;
}

/** Sets the level of a logger from createLogger and of every child it has now; later children take it from their parents. */
export function setLogLevel(root: Logger, level: string): void {
  root.level = level;
  for (const ref of families.get(root)?.children ?? []) {
    const child = ref.deref();
    if (child) child.level = level;
  }
}
