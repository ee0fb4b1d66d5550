// CI runs the bench in quick mode so it cannot rot: every scenario must
// produce figures for ours and its peers (nginx, haproxy, socat, nats-server,
// Mosquitto), from our generator and from wrk and iperf3. What the figures are
// is not checked here (performance is read from `npm run bench`, never
// asserted in tests), nor whether targets are met. This file runs the relay
// scenarios; quick-pubsub.test.ts the pub/sub ones.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SCENARIOS } from '../../bench/scenarios/index.ts';
import { DASHBOARD_SCENARIOS, DURABLE_SCENARIOS, PUBSUB_SCENARIOS, RELAY_SCENARIOS, assertFigure, runBench, runQuick } from './quick-run.ts';

describe('npm run bench', () => {
  it('the quick tests between them run every scenario', () => {
    assert.deepEqual([...RELAY_SCENARIOS, ...PUBSUB_SCENARIOS, ...DURABLE_SCENARIOS, ...DASHBOARD_SCENARIOS].sort(), Object.keys(SCENARIOS).sort());
  });

  it('quick mode runs the relay scenarios with figures for ours and each peer, from our generator, wrk and iperf3', async (t) => {
    const report = await runQuick(t, RELAY_SCENARIOS, 110000);
    // Quick mode runs 32 connections only (128 is the same path, in the full bench).
    for (const generator of ['', ', wrk -t1']) {
      const scenario = new RegExp(`^HTTP GET, 32 connections${generator}$`);
      assertFigure(report, scenario, /^edge-relay -> listener$/, true);
      assertFigure(report, scenario, /^nginx, 1 worker/, false);
      assertFigure(report, scenario, /^nginx, auto/, false);
      assertFigure(report, scenario, /^lean http server, direct$/, false);
      assertFigure(report, scenario, /^Node floor: bare net front -> listener$/, false);
      assertFigure(report, scenario, /^Node floor: node:http front -> listener$/, false);
    }
    assertFigure(report, /^tunnel /, /^edge-relay \(relayed websocket\)$/, true);
    assertFigure(report, /^tunnel /, /^haproxy/, false);
    for (const scenario of [/^bridge \d+ MiB$/, /^bridge, iperf3 /]) {
      assertFigure(report, scenario, /^edge-relay bridge -L -> relay -> bridge -R$/, true);
      assertFigure(report, scenario, /^socat$/, false);
      assertFigure(report, scenario, /^haproxy/, false);
      assertFigure(report, scenario, /^plain TCP/, false);
    }
  });

  it('refuses an unknown scenario with usage', async (t) => {
    const run = await runBench(t, ['no-such-scenario'], 20000);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown scenario: no-such-scenario/);
    assert.match(run.stderr, /Scenarios: fanout, tunnel, bridge, http, rendezvous, memory/);
  });
});
