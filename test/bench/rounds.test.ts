import { test } from 'node:test';
import assert from 'node:assert/strict';
import { median, pairedMedian, runRounds, runsOf } from '../../bench/lib/rounds.ts';

test('runRounds runs every system once per round, in order, one run at a time', async () => {
  const calls: string[] = [];
  let running = 0;
  const rounds = await runRounds(3, [{ system: 'a' }, { system: 'b' }], async ({ system }, round) => {
    assert.equal(running++, 0, 'a run started before the one before it ended');
    calls.push(`${system}${round}`);
    await new Promise((r) => setTimeout(r, 1));
    running--;
    return `${system}:${round}`;
  });
  assert.deepEqual(calls, ['a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
  assert.deepEqual(runsOf(rounds, 'b'), ['b:1', 'b:2', 'b:3']);
});

test('pairedMedian is the median of the ratios within each round, not the ratio of the medians', () => {
  const rounds = [
    new Map([['ours', 10], ['peer', 100]]),
    new Map([['ours', 50], ['peer', 20]]),
    new Map([['ours', 60], ['peer', 30]]),
  ];
  // Within the rounds: 0.1, 2.5, 2; the medians' ratio would be 50 / 30.
  assert.equal(pairedMedian(rounds, 'ours', 'peer', (o, p) => o / p), 2);
  assert.equal(median([0.1, 2.5, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 3, 'the upper middle value of an even count');
});
