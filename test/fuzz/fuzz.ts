// Shared settings for the property-based fuzz tests (fast-check): each
// property runs a bounded number of cases and stops early, without failing,
// at a time limit, so every file stays within a few seconds on a loaded
// machine. FUZZ_RUNS=N multiplies the cases for a longer hunt; a failure
// prints its seed and the shrunk counterexample, which replays with
// `{ seed, path }`.
import fc from 'fast-check';

export const FUZZ_TIME_LIMIT_MS = 4000;

export function fuzzOptions<T>(numRuns: number, timeLimitMs = FUZZ_TIME_LIMIT_MS): fc.Parameters<T> {
  const scale = Number(process.env.FUZZ_RUNS ?? 1);
  return {
    numRuns: Math.max(1, Math.round(numRuns * scale)),
    plugins: process.env.FUZZ_RUNS ? [] : [fc.interruptAfterTimeLimit(timeLimitMs)],
  };
}

/** Splits `bytes` into chunks at the given cut points (as TCP may deliver them). */
export function chunked(bytes: Uint8Array, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...at, bytes.length]) {
    if (cut > from) out.push(Buffer.from(bytes.subarray(from, cut)));
    from = Math.max(from, cut);
  }
  return out;
}
