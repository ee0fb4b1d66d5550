// Corks a socket until the end of the current turn of the event loop, so that
// everything written to it meanwhile leaves in one writev instead of one
// syscall per write (on this project's VMs a socket write costs ~25 µs). The
// uncork runs from setImmediate, after the turn's I/O callbacks.
import type { Writable } from 'node:stream';

export class TurnCork {
  private corked = false;

  /** `beforeUncork`: what to write last in the turn (a TurnWriter's staged bytes). */
  constructor(
    private readonly socket: Writable,
    private readonly beforeUncork?: () => void,
  ) {}

  /** Corks the socket unless it already is for this turn. */
  hold(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    setImmediate(() => {
      this.corked = false;
      this.beforeUncork?.();
      this.socket.uncork();
    });
  }
}
