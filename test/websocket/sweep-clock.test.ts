// The clock keep-alive sweeps and the hub roster judge silence by
// (src/websocket/sweep-clock.ts), on a clock the test moves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SweepClock } from '../../src/websocket/sweep-clock.ts';

test('a sweep that runs late does not judge, and nothing judges between sweeps until one runs on time again', () => {
  const clock = { ms: 0 };
  const sweeps = new SweepClock(100, () => clock.ms);
  clock.ms = 100;
  assert.equal(sweeps.onTime(), true);
  clock.ms = 150;
  assert.equal(sweeps.judging(), true, 'between sweeps on time');
  clock.ms = 900;
  assert.equal(sweeps.judging(), false, 'a sweep is overdue: the process was paused');
  assert.equal(sweeps.onTime(), false, 'the late sweep');
  assert.equal(sweeps.judging(), false, 'right after the late sweep: what came meanwhile is not read yet');
  clock.ms = 1000;
  assert.equal(sweeps.onTime(), true, 'an interval after the late one');
  assert.equal(sweeps.judging(), true);
  assert.equal(sweeps.onTime(1150), true, 'a now passed in');
  assert.equal(sweeps.judging(1350), true, 'two intervals after the last on time');
  assert.equal(sweeps.judging(1351), false);
});
