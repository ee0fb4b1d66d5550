// Medians of repeated measurements: scenarios that run their systems in
// rounds, one system after the other in each (durable, http), report the
// median of the per-round ratios and show the round with the median figure;
// transfers (tunnel, bridge) keep the median of their runs. With an even
// count, the upper of the two middle values.

/** The median of `values` (the upper middle one when their count is even). */
export function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

/** The item whose `figure` is the median of all items' (the upper middle one when their count is even). */
export function medianBy<T>(items: T[], figure: (item: T) => number): T {
  return [...items].sort((a, b) => figure(a) - figure(b))[Math.floor(items.length / 2)];
}
