// The memory scenario's growth per connection: a resident set that did not
// grow (or shrank) between its two readings gives no figure, and the row
// says so in the table and the JSON, with the ratios that would divide by
// it, instead of a size of zero or below, a division by zero, or an error
// that ends the whole bench run with no table at all.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import type { LeanWs } from '../../bench/lib/lean-ws.ts';
import { formatTable, withVerdict } from '../../bench/lib/report.ts';
import { growthPer, memoryRatios, memoryRow, perConnection } from '../../bench/scenarios/memory.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { withTimeout } from '../helpers/wait.ts';

const SCENARIO = 'idle pub/sub connections x400';
const OURS_MEMORY = 'edge-relay, memory bus, reliable, 1 group';
const OURS_NATS = 'edge-relay, NATS bus, reliable, 1 group';
const PEER = 'nats-server websocket, 1 subscription';

describe('bench memory: growth per connection', () => {
  it('is a figure only when the resident set grew', () => {
    assert.deepEqual(perConnection(1_000_000, 1_409_600, 400), { bytesPerConnection: 1024, rssBefore: 1_000_000, rssAfter: 1_409_600 });
    for (const [before, after] of [
      [1_000_000, 1_000_000],
      [1_000_000, 900_000],
    ]) {
      const growth = perConnection(before, after, 400);
      assert.ok(!('bytesPerConnection' in growth), `${before} -> ${after}: ${JSON.stringify(growth)}`);
      assert.match(growth.notMeasured, /did not grow with 400 connections/);
    }
  });

  it('measures a process that does not grow as not measured, not as an error, and closes its connections', async (t) => {
    // A process whose resident set stays put while the connections are opened elsewhere.
    const idle = spawn('sleep', ['60'], { stdio: 'ignore' });
    cleanupFor(t).after(() => idle.kill('SIGKILL'));
    await withTimeout(new Promise((r) => idle.once('spawn', r)), 5000, 'sleep started');
    let opened = 0;
    let destroyed = 0;
    const open = async () => {
      opened++;
      return { destroy: () => destroyed++ } as unknown as LeanWs;
    };
    const growth = await withTimeout(growthPer(idle.pid!, 50, open, 0.01), 10000, 'growthPer');
    assert.ok('notMeasured' in growth, JSON.stringify(growth));
    assert.match(growth.notMeasured, new RegExp(`did not grow with 50 connections \\(${growth.rssBefore} -> ${growth.rssAfter} bytes\\)`));
    assert.equal(opened, 100, 'the warm set and the counted set');
    assert.equal(destroyed, opened, 'every connection closed');
  });

  it('prints a row not measured with its reason, keeps it in the JSON, and leaves the ratios over it unmeasured', () => {
    const flat = { notMeasured: 'the resident set did not grow with 400 connections (5 -> 5 bytes)', rssBefore: 5, rssAfter: 5 };
    const results = [
      memoryRow(SCENARIO, OURS_MEMORY, true, flat, 400),
      memoryRow(SCENARIO, OURS_NATS, true, { bytesPerConnection: 12 * 1024, rssBefore: 1, rssAfter: 1 + 400 * 12 * 1024 }, 400),
      memoryRow(SCENARIO, PEER, false, { bytesPerConnection: 24 * 1024, rssBefore: 1, rssAfter: 1 + 400 * 24 * 1024 }, 400),
    ];
    assert.equal(results[0].value, null);
    assert.equal(results[0].notMeasured, flat.notMeasured);
    assert.equal(results[0].figures.bytesPerConnection, undefined, 'no size per connection for a row not measured');
    assert.equal(results[1].value, 12);
    const ratios = memoryRatios(SCENARIO, results).map(withVerdict);
    assert.equal(ratios.length, 2, 'both ratios are there, measured or not');
    const [overMemory, overNats] = ratios;
    assert.equal(overMemory.ours, OURS_MEMORY);
    assert.equal(overMemory.ratio, null);
    assert.match(overMemory.notMeasured!, /edge-relay, memory bus, reliable, 1 group not measured \(the resident set did not grow/);
    assert.equal(overMemory.met, undefined);
    assert.equal(overNats.ours, OURS_NATS);
    assert.equal(overNats.ratio, 2);
    const json = JSON.parse(JSON.stringify({ results, ratios }));
    assert.equal(json.results.length, 3);
    assert.equal(json.results[0].value, null);
    assert.equal(json.results[0].notMeasured, flat.notMeasured);
    assert.equal(json.ratios[0].ratio, null);
    assert.match(json.ratios[0].notMeasured, /not measured/);
    const table = formatTable(
      results.map((r) => ({ ...r, group: 'memory' })),
      ratios,
    );
    assert.match(table, new RegExp(`\\| ${OURS_MEMORY} +\\| not measured: the resident set did not grow with 400 connections \\(5 -> 5 bytes\\) +\\|`));
    assert.match(table, new RegExp(`\\| ${SCENARIO} \\| ${OURS_MEMORY} \\| ${PEER} \\| figure \\| not measured: `));
    assert.match(table, new RegExp(`\\| ${SCENARIO} \\| ${OURS_NATS} \\| ${PEER} \\| figure \\| 2\\.00 \\|`));
  });

  it('leaves a ratio unmeasured when a row it divides by is missing', () => {
    const ratios = memoryRatios(SCENARIO, [memoryRow(SCENARIO, PEER, false, { bytesPerConnection: 1024, rssBefore: 0, rssAfter: 409600 }, 400)]);
    assert.equal(ratios.length, 2);
    for (const r of ratios) {
      assert.equal(r.ratio, null);
      assert.match(r.notMeasured!, /not measured \(no row\)/);
    }
  });
});
