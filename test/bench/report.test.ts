// The bench report's handling of figures that are no number: a ratio over a
// figure that is zero, missing or not measured is not measured (with why),
// and a figure or ratio that came out as NaN or Infinity is kept as not
// measured rather than written as a bare null (JSON has neither) or printed
// as '-', 'NaN' or 'Infinity'.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accounted, formatTable, quotient, withVerdict, type Ratio, type Result } from '../../bench/lib/report.ts';

test('quotient divides positive figures only, and says why it did not', () => {
  assert.deepEqual(quotient({ system: 'a', value: 3 }, { system: 'b', value: 2 }), { ratio: 1.5 });
  // A p99 of NaN (an empty histogram) that crossed JSON from a fan-out row's generator arrives as null: null / 5 was 0.
  const fromJson = JSON.parse(JSON.stringify({ p99Ms: NaN })).p99Ms as null;
  for (const [a, b, reason] of [
    [fromJson, 5, /^a: figure null, not a positive number$/],
    [undefined, 5, /^a: figure missing, not a positive number$/],
    [5, 0, /^b: figure 0, not a positive number$/],
    [5, -1, /^b: figure -1, not a positive number$/],
    [5, Infinity, /^b: figure Infinity, not a positive number$/],
  ] as const) {
    const q = quotient({ system: 'a', value: a }, { system: 'b', value: b });
    assert.equal(q.ratio, null, `${a} / ${b}`);
    assert.match(q.notMeasured!, reason);
  }
  assert.deepEqual(quotient({ system: 'a', value: null, notMeasured: 'flat' }, { system: 'b', value: 2 }), { ratio: null, notMeasured: 'a not measured (flat)' });
});

test('a figure or a ratio that came out as no number is kept as not measured, in the table and the JSON', () => {
  const row = (system: string, value: number | null, notMeasured?: string): Result => ({
    group: 'g',
    scenario: 's',
    system,
    ours: true,
    value,
    unit: 'x/s',
    figures: {},
    ...(notMeasured ? { notMeasured } : {}),
  });
  const ratio = (peer: string, value: number, target?: number): Ratio => ({ scenario: 's', ours: 'a', peer, ratio: value, target });
  const out = accounted([row('a', 10), row('b', NaN), row('c', null, 'flat')], [ratio('b', Infinity, 1), ratio('c', NaN), ratio('d', 0.5, 1)]);
  const ratios = out.ratios.map(withVerdict);
  assert.deepEqual(
    out.results.map((r) => [r.system, r.value, r.notMeasured]),
    [
      ['a', 10, undefined],
      ['b', null, 'the figure came out as NaN (a figure in it was zero, missing or not a number)'],
      ['c', null, 'flat'],
    ],
  );
  assert.deepEqual(
    ratios.map((r) => [r.peer, r.ratio, r.notMeasured, r.met]),
    [
      ['b', null, 'the ratio came out as Infinity (a figure in it was zero, missing or not a number)', undefined],
      ['c', null, 'the ratio came out as NaN (a figure in it was zero, missing or not a number)', undefined],
      ['d', 0.5, undefined, false],
    ],
  );
  const json = JSON.parse(JSON.stringify({ results: out.results, ratios }));
  assert.ok(json.results.every((r: Result) => r.value !== null || typeof r.notMeasured === 'string'));
  assert.ok(json.ratios.every((r: Ratio) => r.ratio !== null || typeof r.notMeasured === 'string'));
  const table = formatTable(out.results, ratios);
  assert.doesNotMatch(table, /\| (?:NaN|Infinity|-) +\| x\/s/, 'a headline figure printed as no number');
  assert.doesNotMatch(table, /\| figure \| (?:NaN|Infinity) \|/, 'a ratio printed as no number');
  assert.match(table, /\| b +\| not measured: the figure came out as NaN/);
  assert.match(table, /\| s \| a \| b \| figure \| not measured: the ratio came out as Infinity .* \| higher \| ≥ 1 \| - \|/);
});
