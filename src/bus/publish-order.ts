// The order a stream's publishes are stored in, kept through a failover.
// Normally an edge's publishes to a stream go out at once, one after the
// other on one NATS connection, and the stream stores them in that order. A
// publish that was not stored (no answer in time, no leader, no stream) is
// tried again (durable-publish.ts), and so is everything sent on a connection that
// went away: tried apart, a later publish could be stored before an earlier
// one (a review froze a stream's leader: a client's second send, made 3 s
// after its first, was stored and delivered first). So while any publish of
// a stream is in such trouble, that stream's publishes go one at a time, in
// the order they began: only the oldest one not yet settled may try. When
// none is in trouble any more, they go at once again.

/** One publish call, from its start until it is stored or given up. */
export interface PublishTurn {
  readonly stream: string;
  /** It had a try that did not store, or one sent on a connection since gone. */
  troubled: boolean;
  /** Set while it waits for its turn. */
  wake: (() => void) | undefined;
}

interface StreamLine {
  /** Calls not settled yet, in the order they began (a Set keeps insertion order). */
  readonly calls: Set<PublishTurn>;
  /** How many of them are troubled. */
  troubled: number;
}

export class PublishOrder {
  private readonly lines = new Map<string, StreamLine>();

  /** A publish to `stream` begins. */
  begin(stream: string): PublishTurn {
    let line = this.lines.get(stream);
    if (!line) this.lines.set(stream, (line = { calls: new Set(), troubled: 0 }));
    const turn: PublishTurn = { stream, troubled: false, wake: undefined };
    line.calls.add(turn);
    return turn;
  }

  /** Whether `turn` may send a try now: its stream is in no trouble, or it is the oldest call not settled. */
  mayTry(turn: PublishTurn): boolean {
    const line = this.lines.get(turn.stream)!;
    return line.troubled === 0 || line.calls.values().next().value === turn;
  }

  /** Resolves once `turn` may try, or after `ms` (the caller's deadline: it then gives up, never having sent). */
  waitForTurn(turn: PublishTurn, ms: number): Promise<void> {
    if (this.mayTry(turn)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        turn.wake = undefined;
        resolve();
      }
      turn.wake = done;
    });
  }

  /** A try of `turn` did not store: its stream's publishes go one at a time until it settles. */
  troubled(turn: PublishTurn): void {
    if (turn.troubled) return;
    turn.troubled = true;
    const line = this.lines.get(turn.stream)!;
    line.troubled++;
  }

  /** The NATS connection was replaced: every publish not settled was sent on the one gone (or not sent yet). */
  reconnected(): void {
    for (const line of this.lines.values()) for (const turn of line.calls) this.troubled(turn);
  }

  /** `turn` is stored or given up: the next may go (all of them, when no publish of the stream is in trouble now). */
  end(turn: PublishTurn): void {
    const line = this.lines.get(turn.stream);
    if (!line?.calls.delete(turn)) return;
    if (turn.troubled) line.troubled--;
    if (line.calls.size === 0) {
      this.lines.delete(turn.stream);
      return;
    }
    if (line.troubled > 0) line.calls.values().next().value?.wake?.();
    // Nobody waits while nothing is in trouble: only the end of the last troubled call wakes them all (a loop over
    // every call at each end made a publish cost as many steps as publishes in flight, found by review).
    else if (turn.troubled) for (const waiting of line.calls) waiting.wake?.();
  }
}
