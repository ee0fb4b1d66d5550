// Waits that end when woken, or when their time is up, whichever comes first.
// A wait leaves the set either way: one that timed out stays nowhere (before,
// two copies of this kept timed-out waits until the next wake, which, while
// JetStream never answered or an edge never read its hub's stream, did not
// come: one closure and timer per refused write, for good).
export class TimedWaits {
  private readonly waits = new Set<() => void>();

  /** Resolves once wakeAll() is called, or after `ms`. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.waits.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waits.add(wake);
    });
  }

  /** Ends every wait now. */
  wakeAll(): void {
    for (const wake of [...this.waits]) wake();
  }

  /** Waits not yet ended. */
  get size(): number {
    return this.waits.size;
  }
}
