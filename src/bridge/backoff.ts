// Reconnect delays with "full jitter": each wait is random between zero and an
// exponentially growing cap, so many clients that lost the relay together do
// not come back together. A connection that stayed up resets the growth.
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A connection that lasted this long counts as healthy: the next delay starts small again. */
  healthyAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30000, healthyAfterMs: 10000 };

export class Backoff {
  private attempt = 0;
  private connectedAt = 0;

  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** Call when a connection is established. */
  connected(now = Date.now()): void {
    this.connectedAt = now;
  }

  /** The wait before the next attempt, in ms. */
  next(now = Date.now()): number {
    if (this.connectedAt > 0 && now - this.connectedAt >= this.options.healthyAfterMs) this.attempt = 0;
    this.connectedAt = 0;
    const cap = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(this.random() * cap);
  }
}
