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
  });
});
