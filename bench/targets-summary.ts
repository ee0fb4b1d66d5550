// Prints the targets of a bench run, one line per comparison with every
// scenario it holds for, met or not, as docs/performance.md shows them:
//
//   node --import tsx bench/targets-summary.ts [bench/results/latest.json]
import { readFileSync } from 'node:fs';
import type { Ratio } from './lib/report.ts';

const file = process.argv[2] ?? 'bench/results/latest.json';
const { ratios } = JSON.parse(readFileSync(file, 'utf8')) as { ratios: Ratio[] };

const lines = new Map<string, string[]>();
for (const r of ratios) {
  if (r.target === undefined) continue;
  const lower = r.better === 'lower';
  const what = r.figure && r.figure !== 'figure' ? r.figure : 'throughput';
  const key = `${r.ours} vs ${r.peer}, ${what} ${lower ? '≤' : '≥'} ${r.target}`;
  const entry =
    r.ratio === null
      ? `${r.scenario}: not measured (${r.notMeasured ?? 'no figure'})`
      : `${r.scenario}: ${r.ratio.toFixed(2)} (${(lower ? r.ratio <= r.target : r.ratio >= r.target) ? 'met' : '**not met**'})`;
  lines.set(key, [...(lines.get(key) ?? []), entry]);
}
for (const [key, entries] of lines) console.log(`- ${key}: ${entries.join(', ')}`);
