// The bench's pub/sub scenarios in quick mode (see quick.test.ts): fan-out
// with plain and reliable subscribers on both buses against nats-server and
// Mosquitto, one serve command with 1 and 2 workers, p99 as a ratio to
// nats-server's (at each system's half load and at nats-server's), deliveries
// per socket write, and idle memory.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PUBSUB_SCENARIOS, assertFigure, runQuick } from './quick-run.ts';

describe('npm run bench, pub/sub', () => {
  it('quick mode runs the pub/sub scenarios with figures for ours and each peer', async (t) => {
    const report = await runQuick(t, PUBSUB_SCENARIOS, 110000);
    assertFigure(report, /^fan-out /, /^edge-relay, memory bus$/, true);
    assertFigure(report, /^fan-out /, /^edge-relay, NATS bus \(2 edges\)$/, true);
    assertFigure(report, /^fan-out /, /memory bus, reliable/, true);
    assertFigure(report, /^fan-out /, /NATS bus \(2 edges\), reliable/, true);
    assertFigure(report, /^fan-out /, /^edge-relay, NATS bus, serve \(1 worker\)$/, true);
    assertFigure(report, /^fan-out /, /^edge-relay, NATS bus, serve --workers 2$/, true);
    assert.ok(report.ratios.some((r) => r.ours.endsWith('--workers 2') && r.peer.endsWith('(1 worker)')), 'two workers compared with one');
    assertFigure(report, /^fan-out /, /^nats-server websocket$/, false);
    assertFigure(report, /^fan-out /, /^mosquitto websocket$/, false);
    // How many deliveries a server puts into one socket write (its write/writev calls, /proc/PID/io):
    // read for our rows and nats-server's; every write of a relay on the memory bus carries one at least.
    const perWrite = (system: string) => report.results.find((r) => /^fan-out /.test(r.scenario) && r.system === system)?.figures.deliveriesPerWrite;
    assert.ok(perWrite('edge-relay, memory bus')! >= 1, `deliveries per write: ${perWrite('edge-relay, memory bus')}`);
    for (const system of ['edge-relay, NATS bus (2 edges)', 'edge-relay, NATS bus, serve --workers 2', 'nats-server websocket']) {
      assert.ok(Number.isFinite(perWrite(system)) && perWrite(system)! > 0, `${system}: deliveries per write ${perWrite(system)}`);
    }
    // Latency is a ratio to nats-server's p99, lower is better.
    assert.ok(report.ratios.some((r) => /^fan-out /.test(r.scenario) && r.peer === 'nats-server websocket' && r.figure?.startsWith('p99')));
    // And at nats-server's half load, measured in each of ours' one run in quick mode (nats-server's row first).
    const atPeerHalf = report.ratios.filter((r) => /^fan-out /.test(r.scenario) && r.figure === "p99 ms at nats-server's 50% load");
    assert.equal(atPeerHalf.length, 4, JSON.stringify(atPeerHalf));
    for (const r of atPeerHalf) assert.ok(Number.isFinite(r.ratio), `${r.ours}: ${r.notMeasured}`);
  });
});
