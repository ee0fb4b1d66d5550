// A high-dynamic-range histogram of latencies in microseconds: exact below
// 2,048 µs, then 1,024 buckets per power of two (under 0.1% relative error),
// up to about an hour. Recording is an index computation and an increment.
const LINEAR = 2048;
const SUB = 1024;
const OCTAVES = 32;

export class Histogram {
  private readonly counts = new Float64Array(LINEAR + OCTAVES * SUB);
  count = 0;
  max = 0;

  record(micros: number): void {
    const v = micros < 0 ? 0 : Math.round(micros);
    this.counts[indexOf(v)]++;
    this.count++;
    if (v > this.max) this.max = v;
  }

  /** p50, p99 and p99.9 in milliseconds, as the report names them. */
  figuresMs(): { p50Ms: number; p99Ms: number; p999Ms: number } {
    return { p50Ms: this.quantile(0.5) / 1000, p99Ms: this.quantile(0.99) / 1000, p999Ms: this.quantile(0.999) / 1000 };
  }

  /** The value at quantile q (0..1), in microseconds: the upper edge of its bucket. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(upperEdge(i), this.max);
    }
    return this.max;
  }
}

function indexOf(v: number): number {
  if (v < LINEAR) return v;
  const exponent = Math.floor(Math.log2(v)) - 10; // v >> exponent lies in [1024, 2048)
  const sub = Math.floor(v / 2 ** exponent) - SUB;
  return Math.min(LINEAR + (exponent - 1) * SUB + sub, LINEAR + OCTAVES * SUB - 1);
}

function upperEdge(index: number): number {
  if (index < LINEAR) return index;
  const exponent = Math.floor((index - LINEAR) / SUB) + 1;
  const sub = ((index - LINEAR) % SUB) + SUB;
  return (sub + 1) * 2 ** exponent - 1;
}
