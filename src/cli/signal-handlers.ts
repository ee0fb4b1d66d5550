// Replacing a signal's handler without a moment in which the signal kills.
//
// Node watches a signal only while it has a listener: removing the last one
// gives the signal back its default action (SIGINT, SIGTERM and SIGHUP end
// the process). `off(old); on(new)` leaves that open between the two calls,
// and a second signal sent at once (a terminal's Ctrl-C reaches every
// process of the group, and the primary of `serve --workers` passes it on
// again) now and then landed there: a draining worker died without a line.

/** What bin/edge-relay.js left for `serve`: its SIGHUP listener and how many came before it took over. */
interface EarlyHangups {
  hangups: number;
  listener: () => void;
}

/**
 * Puts `next` in place of the SIGHUP listener bin/edge-relay.js set on its
 * first line (when there is one: the CLI run otherwise, as tests do, has
 * none) and returns how many SIGHUPs that listener took: each came before
 * the config was read, so the config in hand has what they asked for.
 */
export function takeOverEarlyHangups(next: () => void): number {
  process.on('SIGHUP', next);
  const key = Symbol.for('edge-relay.early-sighup');
  const early = (globalThis as Record<symbol, EarlyHangups | undefined>)[key];
  if (!early) return 0;
  process.off('SIGHUP', early.listener);
  delete (globalThis as Record<symbol, unknown>)[key];
  return early.hangups;
}

/** Puts `next` in place of `previous` for `signal`; the signal stays caught throughout. */
export function replaceSignalHandler(signal: NodeJS.Signals, previous: () => void, next: () => void): void {
  process.on(signal, next);
  process.off(signal, previous);
}
