// The bench's durable-hub scenario in quick mode (see quick.test.ts): fan-out
// through a JetStream hub (file and memory storage), the core NATS path and nats-server; publish-to-ack
// times; history read over REST; nats-server's JetStream alone, file and memory storage.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DURABLE_SCENARIOS, assertFigure, runQuick } from './quick-run.ts';

describe('npm run bench (durable hubs)', () => {
  it('quick mode runs the durable scenario with figures for the JetStream hub, the core path and nats-server', async (t) => {
    const report = await runQuick(t, DURABLE_SCENARIOS, 110000);
    assertFigure(report, /^durable fan-out /, /JetStream hub$/, true);
    assertFigure(report, /^durable fan-out /, /JetStream hub, memory storage$/, true);
    assertFigure(report, /^durable fan-out /, /core NATS$/, true);
    assertFigure(report, /^durable fan-out /, /^nats-server websocket$/, false);
    assertFigure(report, /^publish to ack/, /JetStream hub$/, true);
    assertFigure(report, /^history read/, /JetStream hub$/, true);
    assertFigure(report, /^JetStream store alone/, /alone \(nats\.js\), file storage$/, false);
    assertFigure(report, /^JetStream store alone/, /alone \(nats\.js\), memory storage$/, false);
    assert.ok(report.ratios.some((r) => r.scenario.startsWith('JetStream store alone') && r.figure?.startsWith('p99') && Number.isFinite(r.ratio)));
    assert.ok(report.ratios.some((r) => r.figure?.startsWith('p99') && r.target === 2));
    // Every comparison of the full run, in quick mode too: each JetStream path against the core path by rate and
    // by p99 at 50% and at 10% load (the 10% one was left out of quick runs, with no word of it).
    for (const ours of [/JetStream hub$/, /JetStream hub, memory storage$/]) {
      for (const figure of [/^deliveries\/s/, /^p99 ms at 50% load, difference/, /^p99 ms at 10% load, difference/]) {
        const found = report.ratios.filter((r) => r.scenario.startsWith('durable fan-out ') && ours.test(r.ours) && /core NATS$/.test(r.peer) && figure.test(r.figure ?? ''));
        assert.equal(found.length, 1, `${ours} against the core path, ${figure}: ${JSON.stringify(found)}`);
        assert.ok(Number.isFinite(found[0].ratio), `${ours}, ${figure} measured in quick mode: ${JSON.stringify(found[0])}`);
      }
    }
  });
});
