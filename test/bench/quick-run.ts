// Runs `npm run bench --quick` for some scenarios and checks what every
// quick run must hold: exit 0, a table on stdout, and for each scenario a
// finite figure for edge-relay and for a peer, every other row and ratio
// finite or saying why it was not measured (a reason, printed in the table),
// and every measured target with a verdict. The bench's quick tests are split in two files
// (relay and pub/sub scenarios) so each stays well inside the suite's
// per-file timeout on a loaded 2-core machine.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupFor } from '../helpers/cleanup.ts';
import { exitedWithOutput } from '../helpers/exit.ts';
import { withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

/** The scenarios each quick test file runs: quick.test.ts, quick-pubsub.test.ts and quick-durable.test.ts. */
export const RELAY_SCENARIOS = ['tunnel', 'bridge', 'http', 'rendezvous'];
export const PUBSUB_SCENARIOS = ['fanout', 'memory'];
export const DURABLE_SCENARIOS = ['durable'];
export const DASHBOARD_SCENARIOS = ['dashboard'];

type TestContext = Parameters<typeof cleanupFor>[0];

export interface QuickReport {
  mode: string;
  machine: { cpus: number; node: string };
  results: { group: string; scenario: string; system: string; ours: boolean; value: number | null; notMeasured?: string; figures: Record<string, number> }[];
  ratios: { scenario: string; ours: string; peer: string; figure?: string; ratio: number | null; notMeasured?: string; target?: number; met?: boolean }[];
}

export function runBench(t: TestContext, args: string[], ms: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanupFor(t).after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d).slice(-20000)));
  return withTimeout(exitedWithOutput(child).then((code) => ({ code, stdout, stderr })), ms, `bench ${args.join(' ')}`);
}

/** Runs the quick bench for `scenarios` (bounded by `ms`) and returns its report, checked as above. */
export async function runQuick(t: TestContext, scenarios: string[], ms: number): Promise<QuickReport> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bench-test-'));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'latest.json');
  const run = await runBench(t, [...scenarios, '--quick', '--out', out], ms);
  assert.equal(run.code, 0, run.stderr);
  const report = JSON.parse(readFileSync(out, 'utf8')) as QuickReport;
  assert.equal(report.mode, 'quick');
  assert.ok(report.machine.cpus > 0);
  assert.equal(report.machine.node, process.version);
  for (const name of scenarios) {
    const rows = report.results.filter((r) => r.group === name);
    assert.ok(rows.some((r) => r.ours && Number.isFinite(r.value)), `${name}: no figure for edge-relay`);
    assert.ok(rows.some((r) => !r.ours && Number.isFinite(r.value)), `${name}: no figure for a peer`);
    for (const r of rows) assertMeasuredOrSaysWhy(r.value, r.notMeasured, `${name}: ${JSON.stringify(r)}`);
  }
  assert.ok(report.ratios.length > 0);
  for (const r of report.ratios) {
    assertMeasuredOrSaysWhy(r.ratio, r.notMeasured, JSON.stringify(r));
    if (r.target !== undefined && r.ratio !== null) assert.equal(typeof r.met, 'boolean', JSON.stringify(r));
  }
  // The table went to stdout, with every row not measured in it.
  assert.match(run.stdout, /\| scenario .*\| system .*\|/);
  for (const r of [...report.results, ...report.ratios]) {
    if (r.notMeasured !== undefined) assert.ok(run.stdout.includes(`not measured: ${r.notMeasured}`), `not in the table: ${JSON.stringify(r)}`);
  }
  return report;
}

/** A figure is a finite number, or null with a reason why it was not measured (never a number with a reason, nor null without one). */
export function assertMeasuredOrSaysWhy(value: number | null, notMeasured: string | undefined, what: string): void {
  if (value === null) assert.ok(typeof notMeasured === 'string' && notMeasured.length > 0, `no figure and no reason: ${what}`);
  else {
    assert.ok(Number.isFinite(value), what);
    assert.equal(notMeasured, undefined, `a figure and a reason it was not measured: ${what}`);
  }
}

/** Asserts a positive figure for a system (by name pattern) in a scenario (by pattern), ours or a peer. */
export function assertFigure(report: QuickReport, scenario: RegExp, system: RegExp, ours: boolean): void {
  assert.ok(
    report.results.some((r) => scenario.test(r.scenario) && system.test(r.system) && r.ours === ours && r.value !== null && Number.isFinite(r.value) && r.value > 0),
    `no figure for ${system} in ${scenario}`,
  );
}
