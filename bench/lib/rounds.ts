// Repeated measurements paired in time: scenarios run their systems in
// rounds, one system after the other in the same order in each round, so that
// a slow minute on this shared machine hits ours and its peers alike. A ratio
// is the median over the rounds of the ratio within a round; a row shows the
// run with the median figure. With an even count, the upper of the two middle
// values.

/** The median of `values` (the upper middle one when their count is even). */
export function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

/** The item whose `figure` is the median of all items' (the upper middle one when their count is even). */
export function medianBy<T>(items: T[], figure: (item: T) => number): T {
  return [...items].sort((a, b) => figure(a) - figure(b))[Math.floor(items.length / 2)];
}

/**
 * `count` rounds, each running every one of `systems` once, in order; each round maps a system's name to what its
 * run measured. With `scenario`, each run is announced on stderr (`  scenario: system (round i of n)`).
 */
export async function runRounds<S extends { system: string }, T>(
  count: number,
  systems: readonly S[],
  run: (system: S, round: number) => Promise<T>,
  scenario?: string,
): Promise<Map<string, T>[]> {
  const rounds: Map<string, T>[] = [];
  for (let round = 1; round <= count; round++) {
    const measured = new Map<string, T>();
    for (const s of systems) {
      if (scenario) process.stderr.write(`  ${scenario}: ${s.system}${count > 1 ? ` (round ${round} of ${count})` : ''}\n`);
      measured.set(s.system, await run(s, round));
    }
    rounds.push(measured);
  }
  return rounds;
}

/** What `system` measured in each round. */
export function runsOf<T>(rounds: Map<string, T>[], system: string): T[] {
  return rounds.map((r) => r.get(system)!);
}

/** The median over the rounds of `ratio(ours's run, peer's run)` within each round. */
export function pairedMedian<T>(rounds: Map<string, T>[], ours: string, peer: string, ratio: (ours: T, peer: T) => number): number {
  return median(rounds.map((r) => ratio(r.get(ours)!, r.get(peer)!)));
}
