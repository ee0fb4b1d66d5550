// New WebSocket connections per client address: a token bucket per address
// (`perSecond` refill, `burst` capacity). An IPv6 client counts by its /64:
// one host or home is given a /64 and can pick any address in it for each
// connection, so a bucket per address would give it 2^64 of them. The table
// of addresses is bounded: when full, the address seen longest ago is
// forgotten (a forgotten address starts with a full bucket, which errs towards
// letting clients in).
import { isIP } from 'node:net';

/** Hex groups of an IPv6 address without zone in its written form (`::` expanded, a dotted IPv4 tail as two groups), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address;
  const v4Tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4Tail) {
    const [a, b, c, d] = v4Tail.slice(1).map(Number);
    text = `${text.slice(0, v4Tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left, right] = text.split('::');
  const head = left === '' ? [] : left.split(':');
  const tail = right === undefined || right === '' ? [] : right.split(':');
  const groups = right === undefined ? head : [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  return groups.length === 8 ? groups.map((g) => parseInt(g, 16)) : undefined;
}

/**
 * The key an address is counted under: an IPv4 address as itself (also when
 * IPv6 carries it: mapped, translated, NAT64), any other IPv6 one as its /64.
 */
export function rateKey(address: string): string {
  const withoutZone = address.replace(/%.*$/, '');
  if (isIP(withoutZone) !== 6) return address;
  const groups = ipv6Groups(withoutZone);
  if (!groups) return address;
  const ipv4 = () => `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`;
  // IPv4 mapped (::ffff:a.b.c.d), translated (::ffff:0:a.b.c.d, SIIT) or behind NAT64's well-known prefix
  // (64:ff9b::a.b.c.d): each IPv4 client counted as itself, not every one of them together in one /64.
  const zeros = (from: number, to: number) => groups.slice(from, to).every((g) => g === 0);
  if ((zeros(0, 5) && groups[5] === 0xffff) || (zeros(0, 4) && groups[4] === 0xffff && groups[5] === 0) || (groups[0] === 0x64 && groups[1] === 0xff9b && zeros(2, 6))) {
    return ipv4();
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

export class ConnectionRateLimiter {
  /** Each address's tokens and when they were counted: performance.now(), monotonic (a wall clock stepped back an hour refused every address seen before for that hour). */
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
  take(address: string, now = performance.now()): boolean {
    if (this.perSecond <= 0) return true;
    const key = rateKey(address);
    let bucket = this.buckets.get(key);
    if (bucket) {
      this.buckets.delete(key);
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
    } else {
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value as string);
      bucket = { tokens: this.burst, at: now };
    }
    // Re-inserted: the map's order is least recently seen first.
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}
