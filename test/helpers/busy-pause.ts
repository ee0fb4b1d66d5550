// A pause of this whole process as a stalled VM or SIGSTOP would give it: a
// busy loop, during which nothing else runs (no timer, no read), so what
// arrives meanwhile is read only after the timers that ran late.

/** Blocks the event loop for `ms` milliseconds. */
export function blockEventLoop(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // nothing else runs
  }
}
