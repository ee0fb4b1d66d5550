// How many lines of complaint one peer may cause in a window. A listener
// that sends the same mistake in a loop (answers to requests it never got,
// answers that fail their schema, token renewals) cost a log line per
// message, as many lines as it could send messages: past the allowance the
// lines are counted, not written, and the count goes with the next line
// written (`suppressed`), or with the peer's last line when it leaves.

/** Lines per window a peer's complaints may write. */
const LINES_PER_WINDOW = 10;
const WINDOW_MS = 60_000;

export class LogAllowance {
  private windowStart = performance.now();
  private used = 0;
  private left = 0;

  /**
   * Calls `write` with the fields the line adds (`suppressed`, when lines were left out before it) if a line may be
   * written now; else counts the line left out.
   */
  write(write: (extra: { suppressed?: number }) => void): void {
    const leftOut = this.take();
    if (leftOut !== undefined) write(suppressedField(leftOut));
  }

  /** Whether a line may be written now: undefined when not; else how many were left out before it (usually 0). */
  private take(): number | undefined {
    const now = performance.now();
    if (now - this.windowStart >= WINDOW_MS) {
      this.windowStart = now;
      this.used = 0;
    }
    if (this.used >= LINES_PER_WINDOW) {
      this.left++;
      return undefined;
    }
    this.used++;
    const leftOut = this.left;
    this.left = 0;
    return leftOut;
  }

  /** The fields a last line adds for the lines left out since the one written before (when the peer leaves). */
  get leftOutField(): { suppressed?: number } {
    return suppressedField(this.left);
  }
}

/** The `suppressed` field of a line written after `leftOut` lines were left out (none when 0). */
function suppressedField(leftOut: number): { suppressed?: number } {
  return leftOut > 0 ? { suppressed: leftOut } : {};
}

/**
 * One LogAllowance per key (a limit's name, a refusal's reason: few, fixed in the code, so the map stays small), for
 * complaints anyone can cause before a token is read: a connection past limits.httpConnectionsPerAddress or the
 * connect rate, a bad PROXY header. Before, each wrote its line: a client connecting in a loop, sending nothing,
 * wrote a warn line per connection, as many as it could open.
 */
export class KeyedLogAllowance {
  private readonly byKey = new Map<string, LogAllowance>();

  write(key: string, write: (extra: { suppressed?: number }) => void): void {
    let allowance = this.byKey.get(key);
    if (!allowance) this.byKey.set(key, (allowance = new LogAllowance()));
    allowance.write(write);
  }
}
