// The bench's dashboard scenario in quick mode (see quick.test.ts): fan-out
// on two edges over NATS, unwatched and with the dashboard and a live trace
// viewer open, both measured, with their ratio. The ratio itself is not
// asserted here: on a shared machine one quick pair says little
// (docs/performance.md, "What watching costs").
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DASHBOARD_SCENARIOS, assertFigure, runQuick } from './quick-run.ts';

describe('npm run bench, dashboard', () => {
  it('quick mode measures fan-out unwatched and watched, and what the watcher saw', async (t) => {
    const report = await runQuick(t, DASHBOARD_SCENARIOS, 90000);
    assertFigure(report, /watched$/, /nobody watching$/, false);
    assertFigure(report, /watched$/, /dashboard \+ live trace open$/, true);
    const watched = report.results.find((r) => /live trace open$/.test(r.system))!;
    assert.ok(watched.figures.traceEvents > 0, 'the viewer read trace events');
    assert.ok(watched.figures.statsPolls > 0, 'the dashboard read /$relay/stats');
    assert.ok(report.ratios.some((r) => r.figure?.startsWith('median') && r.target === 0.95));
  });
});
