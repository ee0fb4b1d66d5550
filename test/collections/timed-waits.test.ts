// TimedWaits: a wait ends when woken or when its time is up, and leaves the set either way.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TimedWaits } from '../../src/collections/timed-waits.ts';
import { withTimeout } from '../helpers/wait.ts';

describe('timed waits', () => {
  it('end at their time and leave nothing behind', async () => {
    const waits = new TimedWaits();
    const ended = Promise.all([waits.wait(10), waits.wait(20)]);
    assert.equal(waits.size, 2);
    await withTimeout(ended, 5000, 'the waits to time out');
    assert.equal(waits.size, 0);
  });

  it('end at once when woken, long before their time', async () => {
    const waits = new TimedWaits();
    const ended = Promise.all([waits.wait(60_000), waits.wait(60_000)]);
    waits.wakeAll();
    await withTimeout(ended, 1000, 'the waits to be woken');
    assert.equal(waits.size, 0);
  });
});
