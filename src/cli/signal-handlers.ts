// Replacing a signal's handler without a moment in which the signal kills.
//
// Node watches a signal only while it has a listener: removing the last one
// gives the signal back its default action (SIGINT, SIGTERM and SIGHUP end
// the process). `off(old); on(new)` leaves that open between the two calls,
// and a second signal sent at once (a terminal's Ctrl-C reaches every
// process of the group, and the primary of `serve --workers` passes it on
// again) now and then landed there: a draining worker died without a line.

/** Puts `next` in place of `previous` for `signal`; the signal stays caught throughout. */
export function replaceSignalHandler(signal: NodeJS.Signals, previous: () => void, next: () => void): void {
  process.on(signal, next);
  process.off(signal, previous);
}
