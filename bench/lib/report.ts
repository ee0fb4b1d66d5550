// The bench's results: one row per (scenario, system) with its figures, and
// the ratios of ours to each peer, printed as a table. A row or a ratio that
// could not be measured is kept, with no figure and a reason (`notMeasured`),
// printed as 'not measured: REASON': it never drops out of the table or the
// JSON, and never stands as a number it is not.

export interface Result {
  /** The bench scenario that produced it (its name on the command line). */
  group: string;
  scenario: string;
  system: string;
  /** True for edge-relay rows, false for peers. */
  ours: boolean;
  /** The headline figure and its unit (e.g. deliveries/s); null when the row could not be measured (`notMeasured` says why). */
  value: number | null;
  unit: string;
  /** Why the row has no figure, when it has none. */
  notMeasured?: string;
  /** Every other figure: latencies in ms, CPU in percent of one core, sizes in bytes. */
  figures: Record<string, number>;
}

/** A result as a scenario makes it (run.ts adds the group). */
export type ScenarioResult = Omit<Result, 'group'>;

export interface Ratio {
  scenario: string;
  ours: string;
  peer: string;
  /** ours / peer on the headline figure (for memory: peer / ours, so above 1 is better for us too), or on `figure`; null when not measured. */
  ratio: number | null;
  /** Why there is no ratio (a row it compares was not measured, a figure it divides by is not positive), when there is none. */
  notMeasured?: string;
  /** The figure compared when it is not the headline one, e.g. `p99 ms`. */
  figure?: string;
  /** Whether a higher ratio is better (throughput) or a lower one (latency); default higher. */
  better?: 'higher' | 'lower';
  /** What the ratio must reach (the target), when there is one: at least it when higher is better, at most it when lower is. */
  target?: number;
  /** Whether the target is met (filled in by `withVerdict`). */
  met?: boolean;
}

/** Fills in `met` from the target and which way is better (none for a ratio not measured: neither met nor missed). */
export function withVerdict(r: Ratio): Ratio {
  if (r.target === undefined || r.ratio === null) return r;
  return { ...r, met: r.better === 'lower' ? r.ratio <= r.target : r.ratio >= r.target };
}

/**
 * A scenario's rows and ratios as the run writes them: a headline figure or a
 * ratio that came out as no number (NaN from an empty histogram, Infinity
 * from a division by zero) is made not measured, with what it came out as.
 * Left as it was, the JSON would hold it as a bare null (JSON has no NaN nor
 * Infinity) and the table as '-', 'NaN' or 'Infinity', with no reason: a row
 * gone quiet, or a ratio that reads as a figure.
 */
export function accounted<R extends { value: number | null; notMeasured?: string }>(results: R[], ratios: Ratio[]): { results: R[]; ratios: Ratio[] } {
  const why = (n: number, what: string) => `${what} came out as ${n} (a figure in it was zero, missing or not a number)`;
  return {
    results: results.map((r) => (r.value !== null && !Number.isFinite(r.value) ? { ...r, value: null, notMeasured: r.notMeasured ?? why(r.value, 'the figure') } : r)),
    ratios: ratios.map((r) => (r.ratio !== null && !Number.isFinite(r.ratio) ? { ...r, ratio: null, notMeasured: r.notMeasured ?? why(r.ratio, 'the ratio') } : r)),
  };
}

/** What a ratio divides: a row (its headline figure) or a figure of one, named for the reason. */
export interface Operand {
  system: string;
  value: number | null | undefined;
  notMeasured?: string;
}

/**
 * `numerator.value / denominator.value` as a ratio's `ratio`, or, when either
 * is not a positive finite number (a row not measured, a rate of zero, a
 * figure missing), no ratio and why: a quotient of those would read as a
 * figure (0, Infinity, NaN, a negative size) and mean nothing.
 */
export function quotient(numerator: Operand, denominator: Operand): Pick<Ratio, 'ratio' | 'notMeasured'> {
  for (const o of [numerator, denominator]) {
    if (o.notMeasured !== undefined) return { ratio: null, notMeasured: `${o.system} not measured (${o.notMeasured})` };
    if (o.value === null || o.value === undefined || !Number.isFinite(o.value) || o.value <= 0) {
      return { ratio: null, notMeasured: `${o.system}: figure ${o.value === undefined ? 'missing' : o.value}, not a positive number` };
    }
  }
  return { ratio: numerator.value! / denominator.value! };
}

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || Number.isNaN(n)) return '-';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return n.toFixed(digits);
}

export function printTable(results: Result[], ratios: Ratio[]): void {
  process.stdout.write(formatTable(results, ratios));
}

/** The rows and the ratios as two Markdown tables, every one of them, measured or not. */
export function formatTable(results: Result[], ratios: Ratio[]): string {
  const rows = [['scenario', 'system', 'figure', 'unit', 'p50 ms', 'p99 ms', 'p99.9 ms', 'gen CPU%', 'srv CPU%', 'of it kernel%']];
  for (const r of results) {
    const f = r.figures;
    rows.push([
      r.scenario,
      r.system,
      r.value === null ? `not measured: ${r.notMeasured ?? 'no figure'}` : fmt(r.value, r.value < 100 ? 2 : 0),
      r.unit,
      fmt(f.p50Ms, 2),
      fmt(f.p99Ms, 2),
      fmt(f.p999Ms, 2),
      fmt(f.generatorCpu),
      fmt(f.serverCpu),
      fmt(f.serverKernelCpu),
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => '| ' + row.map((cell, c) => cell.padEnd(widths[c])).join(' | ') + ' |';
  const out = [line(rows[0]), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.slice(1).map(line)];
  out.push('', '| scenario | ours | peer | figure | ratio | better | target | met |', '|---|---|---|---|---|---|---|---|');
  for (const r of ratios) {
    const target = r.target === undefined ? '-' : (r.better === 'lower' ? '≤ ' : '≥ ') + r.target;
    const met = r.met === undefined ? '-' : r.met ? 'yes' : '**no**';
    const ratio = r.ratio === null ? `not measured: ${r.notMeasured ?? 'no figure'}` : r.ratio.toFixed(2);
    out.push(`| ${r.scenario} | ${r.ours} | ${r.peer} | ${r.figure ?? 'figure'} | ${ratio} | ${r.better ?? 'higher'} | ${target} | ${met} |`);
  }
  return out.join('\n') + '\n';
}
