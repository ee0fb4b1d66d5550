// Reconnect delays that grow with how long the relay has been gone, not with
// how many tries failed: each wait is random between half a cap and the cap,
// and the cap is a fraction of the time since the outage began (at least
// initialMs, at most maxMs). Tries after a short outage (a relay restarted)
// come back within a fraction of that outage, where counting tries reached
// the 30 s cap within ~7 s; a long outage still ends with one try every
// maxMs/2 to maxMs, jittered so clients that lost the relay together do not
// come back together. A connection that stayed up ends the outage.
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** The cap is this fraction of the time since the outage began. */
  outageFraction: number;
  /** A connection that lasted this long counts as healthy: the next loss starts a new outage. */
  healthyAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30000, outageFraction: 0.5, healthyAfterMs: 10000 };

export class Backoff {
  /** When the current outage began (the first loss since a healthy connection). */
  private outageSince: number | undefined;
  private connectedAt: number | undefined;

  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** Call when a connection is established. */
  connected(now = Date.now()): void {
    this.connectedAt = now;
  }

  /** The wait before the next attempt, in ms (call once per loss or failed attempt). */
  next(now = Date.now()): number {
    if (this.connectedAt !== undefined && now - this.connectedAt >= this.options.healthyAfterMs) this.outageSince = undefined;
    this.connectedAt = undefined;
    this.outageSince ??= now;
    const { initialMs, maxMs, outageFraction } = this.options;
    const cap = Math.min(maxMs, Math.max(initialMs, (now - this.outageSince) * outageFraction));
    // Never less than half the cap: a client whose draw was small does not try again at once (a storm when many lost the relay together).
    return Math.round(cap / 2 + (this.random() * cap) / 2);
  }
}
