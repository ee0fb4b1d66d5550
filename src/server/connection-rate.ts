// New WebSocket connections per client address: a token bucket per address
// (`perSecond` refill, `burst` capacity). The table of addresses is bounded:
// when full, the address seen longest ago is forgotten (a forgotten address
// starts with a full bucket, which errs towards letting clients in).
export class ConnectionRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private perSecond: number,
    private burst: number,
    private readonly maxAddresses = 100000,
  ) {}

  /** New limits (reload): buckets refill at the new rate from now on, and never hold more than the new burst. */
  configure(perSecond: number, burst: number): void {
    this.perSecond = perSecond;
    this.burst = burst;
    for (const bucket of this.buckets.values()) bucket.tokens = Math.min(bucket.tokens, burst);
  }

  /** True when `address` may open a connection now (and takes a token); false when over its rate. */
  take(address: string, now = Date.now()): boolean {
    if (this.perSecond <= 0) return true;
    let bucket = this.buckets.get(address);
    if (bucket) {
      this.buckets.delete(address);
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
    } else {
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value as string);
      bucket = { tokens: this.burst, at: now };
    }
    // Re-inserted: the map's order is least recently seen first.
    this.buckets.set(address, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}
