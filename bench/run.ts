// `npm run bench [-- SCENARIO...] [--quick]`: runs each scenario against our
// relay and its peers on 127.0.0.1, prints a table and writes
// bench/results/latest.json (every figure, the ratios to each peer with their
// targets and whether each is met, the machine's CPU count and Node version).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, hasCommand } from './lib/processes.ts';
import { accounted, printTable, withVerdict, type Result, type Ratio } from './lib/report.ts';
import { NEEDS, SCENARIOS, type Mode } from './scenarios/index.ts';

const HELP = `Usage: npm run bench [-- SCENARIO...] [--quick] [--out FILE]

Scenarios: ${Object.keys(SCENARIOS).join(', ')} (default: all)
  --quick      small sizes and short runs (under a minute), for CI
  --out FILE   where to write the JSON, default bench/results/latest.json
Needs on the PATH (Debian packages of the same names): ${[...new Set(Object.values(NEEDS).flat())].join(', ')}
(each scenario only what it starts).
`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { quick: { type: 'boolean', default: false }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const names = positionals.length > 0 ? positionals : Object.keys(SCENARIOS);
  const unknown = names.filter((n) => !(n in SCENARIOS));
  if (unknown.length > 0) {
    process.stderr.write(`unknown scenario: ${unknown.join(', ')}\n\n${HELP}`);
    return 2;
  }
  const missing = [...new Set(names.flatMap((n) => NEEDS[n]))].filter((c) => !hasCommand(c));
  if (missing.length > 0) {
    process.stderr.write(`missing on the PATH: ${missing.join(', ')} (apt-get install -y ${missing.join(' ')})\n`);
    return 2;
  }
  const mode: Mode = values.quick ? 'quick' : 'full';
  const results: Result[] = [];
  const ratios: Ratio[] = [];
  const started = Date.now();
  for (const name of names) {
    process.stderr.write(`bench: ${name} (${mode})...\n`);
    const t0 = Date.now();
    // A figure or ratio that is no number is kept as not measured, with why (accounted).
    const measured = await SCENARIOS[name](mode);
    const outcome = accounted(measured.results, measured.ratios);
    results.push(...outcome.results.map((r) => ({ ...r, group: name })));
    ratios.push(...outcome.ratios.map(withVerdict));
    process.stderr.write(`bench: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  printTable(results, ratios);
  const report = {
    when: new Date().toISOString(),
    mode,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, platform: `${process.platform} ${process.arch}` },
    seconds: (Date.now() - started) / 1000,
    results,
    ratios,
  };
  const out = values.out ?? join(ROOT, 'bench/results/latest.json');
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  process.stderr.write(`bench: wrote ${out}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : err}\n`);
    process.exit(1);
  },
);
