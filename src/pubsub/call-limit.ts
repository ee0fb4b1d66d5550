// A bound on calls in flight, with a bounded line of calls waiting for a
// place: connected and disconnected events to event handlers (cloud-events.ts).
// Those are fire-and-forget and outlive the connection they are about, so
// nothing else bounds them: before, a client opening and closing connections
// against a silent handler had the relay hold thousands of requests (each its
// own socket, and the connection objects they belong to) for their timeouts.
// Past both bounds a call is not made (the caller logs it lost).

export class CallLimit {
  private running = 0;
  private readonly waiting: Array<(admitted: boolean) => void> = [];

  constructor(
    private readonly inFlight: number,
    private readonly maxWaiting: number,
  ) {}

  /** Resolves true once the call may start (it must then call release()), false when it may not be made. */
  acquire(): Promise<boolean> {
    if (this.running < this.inFlight) {
      this.running++;
      return Promise.resolve(true);
    }
    if (this.waiting.length >= this.maxWaiting) return Promise.resolve(false);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next(true);
    else this.running--;
  }

  /** Every call still waiting is not made (the relay drained). */
  refuseWaiting(): void {
    for (const waiter of this.waiting.splice(0)) waiter(false);
  }

  get waitingCount(): number {
    return this.waiting.length;
  }
}
