// CI runs the bench in quick mode so it cannot rot: every scenario must
// produce figures for ours and its peers (nginx, haproxy, socat, nats-server,
// Mosquitto), from our generator and from wrk and iperf3. What the figures are
// is not checked here (performance is read from `npm run bench`, never
// asserted in tests), nor whether targets are met.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SCENARIOS } from '../../bench/scenarios/index.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

function runBench(t: Parameters<typeof cleanupFor>[0], args: string[], ms: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanupFor(t).after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d).slice(-20000)));
  return withTimeout(new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr }))), ms, `bench ${args.join(' ')}`);
}

describe('npm run bench', () => {
  // About two minutes on a loaded 2-core machine: every row runs, each briefly.
  it('quick mode runs every scenario and reports figures for ours and each peer', { timeout: 300000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bench-test-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const out = join(dir, 'latest.json');
    const run = await runBench(t, ['--quick', '--out', out], 280000);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(readFileSync(out, 'utf8')) as {
      mode: string;
      machine: { cpus: number; node: string };
      results: { group: string; scenario: string; system: string; ours: boolean; value: number; figures: Record<string, number> }[];
      ratios: { scenario: string; ours: string; peer: string; figure?: string; ratio: number; target?: number; met?: boolean }[];
    };
    assert.equal(report.mode, 'quick');
    assert.ok(report.machine.cpus > 0);
    assert.equal(report.machine.node, process.version);
    for (const name of Object.keys(SCENARIOS)) {
      const rows = report.results.filter((r) => r.group === name);
      assert.ok(rows.some((r) => r.ours), `${name}: no figure for edge-relay`);
      assert.ok(rows.some((r) => !r.ours), `${name}: no figure for a peer`);
      for (const r of rows) assert.ok(Number.isFinite(r.value), `${name}: ${JSON.stringify(r)}`);
    }
    assert.ok(report.ratios.length > 0);
    for (const r of report.ratios) {
      assert.ok(Number.isFinite(r.ratio), JSON.stringify(r));
      if (r.target !== undefined) assert.equal(typeof r.met, 'boolean', JSON.stringify(r));
    }
    // Each scenario of issue 17 has a figure for ours and for the peer it names.
    const figure = (scenario: RegExp, system: RegExp, ours: boolean) =>
      assert.ok(
        report.results.some((r) => scenario.test(r.scenario) && system.test(r.system) && r.ours === ours && Number.isFinite(r.value) && r.value > 0),
        `no figure for ${system} in ${scenario}`,
      );
    for (const connections of [32, 128]) {
      for (const generator of ['', ', wrk -t1']) {
        const scenario = new RegExp(`^HTTP GET, ${connections} connections${generator}$`);
        figure(scenario, /^edge-relay -> listener$/, true);
        figure(scenario, /^nginx, 1 worker/, false);
        figure(scenario, /^nginx, auto/, false);
        figure(scenario, /^node http server, direct$/, false);
      }
    }
    figure(/^tunnel /, /^haproxy/, false);
    for (const scenario of [/^bridge \d+ MiB$/, /^bridge, iperf3 /]) {
      figure(scenario, /^edge-relay bridge -L -> relay -> bridge -R$/, true);
      figure(scenario, /^socat$/, false);
      figure(scenario, /^haproxy/, false);
      figure(scenario, /^plain TCP/, false);
    }
    figure(/^fan-out /, /memory bus, reliable/, true);
    figure(/^fan-out /, /NATS bus \(2 edges\), reliable/, true);
    figure(/^fan-out /, /^nats-server websocket$/, false);
    // Latency is a ratio to nats-server's p99, lower is better.
    assert.ok(report.ratios.some((r) => /^fan-out /.test(r.scenario) && r.peer === 'nats-server websocket' && r.figure?.startsWith('p99')));
    // The table went to stdout.
    assert.match(run.stdout, /\| scenario .*\| system .*\|/);
  });

  it('refuses an unknown scenario with usage', async (t) => {
    const run = await runBench(t, ['no-such-scenario'], 20000);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown scenario: no-such-scenario/);
    assert.match(run.stderr, /Scenarios: fanout, tunnel, bridge, http, rendezvous, memory/);
  });
});
