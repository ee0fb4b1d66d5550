// The durable scenario's comparisons of each JetStream path with the core
// path: every one is there whatever the rounds measured, and one whose
// figure a round lacks says it was not measured instead of dropping out.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatTable, withVerdict } from '../../bench/lib/report.ts';
import { pathRatios } from '../../bench/scenarios/durable.ts';
import type { FanoutFigures } from '../../bench/scenarios/fanout.ts';

const JETSTREAM = 'edge-relay, NATS bus (2 edges), JetStream hub';
const JETSTREAM_MEMORY = 'edge-relay, NATS bus (2 edges), JetStream hub, memory storage';
const CORE = 'edge-relay, NATS bus (2 edges), core NATS';

function figures(deliveriesPerSec: number, p99Ms: number, p99At10PctMs?: number): FanoutFigures {
  const f = { subscribers: 100, deliveriesPerSec, eventsPerSec: deliveriesPerSec / 100, p50Ms: 1, p99Ms, p999Ms: p99Ms } as FanoutFigures;
  if (p99At10PctMs !== undefined) f.p99At10PctMs = p99At10PctMs;
  return f;
}

test('every path comparison is there, the 10% one paired by round when each round has it', () => {
  const measured = new Map([
    [JETSTREAM, [figures(800, 5, 3), figures(900, 6, 4), figures(700, 9, 2)]],
    [JETSTREAM_MEMORY, [figures(950, 4, 2), figures(990, 5, 2), figures(940, 4, 2)]],
    [CORE, [figures(1000, 3, 1), figures(1000, 3, 1), figures(1000, 3, 1)]],
  ]);
  const ratios = pathRatios('durable fan-out 100', measured).map(withVerdict);
  assert.deepEqual(
    ratios.map((r) => [r.ours, r.figure, r.ratio]),
    [
      [JETSTREAM, 'deliveries/s, median of 3 rounds', 0.8],
      [JETSTREAM, 'p99 ms at 50% load, difference (ms), median of 3 rounds', 3],
      [JETSTREAM, 'p99 ms at 10% load, difference (ms), median of 3 rounds', 2],
      [JETSTREAM_MEMORY, 'deliveries/s, median of 3 rounds', 0.95],
      [JETSTREAM_MEMORY, 'p99 ms at 50% load, difference (ms), median of 3 rounds', 1],
      [JETSTREAM_MEMORY, 'p99 ms at 10% load, difference (ms), median of 3 rounds', 1],
    ],
  );
  assert.deepEqual(ratios.map((r) => r.met), [true, false, undefined, true, true, undefined]);
});

test('a comparison whose figure a round lacks is not measured, with which round, and still printed', () => {
  const measured = new Map([
    [JETSTREAM, [figures(800, 5, 3), figures(900, 6)]],
    [JETSTREAM_MEMORY, [figures(950, 4, 2), figures(990, 5, 2)]],
    [CORE, [figures(1000, 3, 1), figures(1000, 3)]],
  ]);
  const ratios = pathRatios('durable fan-out 100', measured).map(withVerdict);
  assert.equal(ratios.length, 6, 'no comparison left out');
  const at10 = ratios.filter((r) => r.figure?.startsWith('p99 ms at 10% load'));
  assert.deepEqual(
    at10.map((r) => [r.ours, r.ratio, r.notMeasured]),
    [
      [JETSTREAM, null, 'no p99 at 10% load in round 2 of 2'],
      [JETSTREAM_MEMORY, null, 'no p99 at 10% load in round 2 of 2'],
    ],
  );
  const table = formatTable([], ratios);
  assert.equal(table.split('\n').filter((l) => l.includes('| not measured: no p99 at 10% load in round 2 of 2 |')).length, 2, table);
  assert.ok(ratios.filter((r) => !r.figure?.startsWith('p99 ms at 10%')).every((r) => Number.isFinite(r.ratio)));
});
