// A bound on calls in flight, with a bounded line of calls waiting for a
// place: connected and disconnected events to event handlers (cloud-events.ts).
// Those are fire-and-forget and outlive the connection they are about, so
// nothing else bounds them: before, a client opening and closing connections
// against a silent handler had the relay hold thousands of requests (each its
// own socket, and the connection objects they belong to) for their timeouts.
// Past both bounds a call is not made (the caller logs it lost).
//
// The places are shared by keys (hubs): one key takes at most `perKeyInFlight`
// of them and `perKeyWaiting` of the line, and a released place goes to the
// keys waiting in turn, the one served longest ago first. Before, one line for
// every hub, first come first served: one hub's silent handler (or a client
// coming and going there) held every place, and another hub's events waited
// for its timeouts or were lost (found by review).

/** One key's calls: how many are under way, and those waiting for a place. */
interface KeyCalls {
  running: number;
  waiting: Array<(admitted: boolean) => void>;
}

export class CallLimit {
  private running = 0;
  private waitingTotal = 0;
  /** Keys with calls under way or waiting, the one admitted longest ago first (Map order: admitted ones move last). */
  private readonly keys = new Map<string, KeyCalls>();

  constructor(
    private readonly inFlight: number,
    private readonly maxWaiting: number,
    private readonly perKeyInFlight = inFlight,
    private readonly perKeyWaiting = maxWaiting,
  ) {}

  /** Resolves true once the call may start (it must then call release(key)), false when it may not be made. */
  acquire(key = ''): Promise<boolean> {
    let calls = this.keys.get(key);
    if (!calls) {
      calls = { running: 0, waiting: [] };
      this.keys.set(key, calls);
    }
    if (this.running < this.inFlight && calls.running < this.perKeyInFlight && calls.waiting.length === 0) {
      this.running++;
      calls.running++;
      return Promise.resolve(true);
    }
    if (this.waitingTotal >= this.maxWaiting || calls.waiting.length >= this.perKeyWaiting) {
      this.forgetIfIdle(key, calls);
      return Promise.resolve(false);
    }
    this.waitingTotal++;
    return new Promise((resolve) => calls.waiting.push(resolve));
  }

  release(key = ''): void {
    const calls = this.keys.get(key);
    if (!calls || calls.running === 0) return;
    calls.running--;
    this.running--;
    this.admitWaiting();
    this.forgetIfIdle(key, calls);
  }

  /** Gives free places to waiting calls: each to the key admitted longest ago that has one waiting and room. */
  private admitWaiting(): void {
    while (this.running < this.inFlight && this.waitingTotal > 0) {
      let next: [string, KeyCalls] | undefined;
      for (const entry of this.keys) {
        if (entry[1].waiting.length > 0 && entry[1].running < this.perKeyInFlight) {
          next = entry;
          break;
        }
      }
      if (!next) return;
      const [key, calls] = next;
      this.keys.delete(key);
      this.keys.set(key, calls);
      this.waitingTotal--;
      this.running++;
      calls.running++;
      calls.waiting.shift()!(true);
    }
  }

  private forgetIfIdle(key: string, calls: KeyCalls): void {
    if (calls.running === 0 && calls.waiting.length === 0) this.keys.delete(key);
  }

  /** Every call still waiting is not made (the relay drained). */
  refuseWaiting(): void {
    for (const [key, calls] of [...this.keys]) {
      for (const waiter of calls.waiting.splice(0)) waiter(false);
      this.forgetIfIdle(key, calls);
    }
    this.waitingTotal = 0;
  }

  get waitingCount(): number {
    return this.waitingTotal;
  }

  /** Calls of `key` waiting for a place. */
  waitingFor(key: string): number {
    return this.keys.get(key)?.waiting.length ?? 0;
  }
}
