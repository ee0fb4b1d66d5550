import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram } from '../../bench/lib/histogram.ts';

describe('bench histogram', () => {
  it('is exact below 2048 µs', () => {
    const h = new Histogram();
    for (let v = 1; v <= 1000; v++) h.record(v);
    assert.equal(h.quantile(0.5), 500);
    assert.equal(h.quantile(0.99), 990);
    assert.equal(h.quantile(1), 1000);
  });

  it('stays within 0.1% of the true quantile over a wide range', () => {
    const h = new Histogram();
    const values: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const v = Math.round(Math.exp((i / 20000) * Math.log(60e6))); // 1 µs to 60 s
      values.push(v);
      h.record(v);
    }
    values.sort((a, b) => a - b);
    for (const q of [0.5, 0.9, 0.99, 0.999]) {
      const truth = values[Math.ceil(q * values.length) - 1];
      const got = h.quantile(q);
      assert.ok(Math.abs(got - truth) / truth < 0.001, `q ${q}: ${got} vs ${truth}`);
    }
  });

  it('has no quantile when empty', () => {
    assert.ok(Number.isNaN(new Histogram().quantile(0.5)));
  });
});
