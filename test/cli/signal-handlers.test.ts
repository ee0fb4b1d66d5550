import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { replaceSignalHandler } from '../../src/cli/signal-handlers.ts';
import { withTimeout } from '../helpers/wait.ts';

describe('replacing a signal handler', () => {
  it('keeps the signal caught throughout, so a second signal at once never takes the default action (ending the process)', async (t) => {
    // SIGUSR2's default action ends the process, as SIGINT's does; nothing else here listens for it.
    const signal = 'SIGUSR2';
    const calls: string[] = [];
    const previous = () => calls.push('previous');
    const next = () => calls.push('next');
    process.on(signal, previous);
    t.after(() => {
      process.off(signal, previous);
      process.off(signal, next);
    });
    // Node gives a signal its default action back the moment its last listener goes.
    const countsAtRemoval: number[] = [];
    const watch = (name: string | symbol) => {
      if (name === signal) countsAtRemoval.push(process.listenerCount(signal));
    };
    process.on('removeListener', watch);
    t.after(() => process.off('removeListener', watch));

    replaceSignalHandler(signal, previous, next);

    assert.deepEqual(countsAtRemoval, [1], 'the new handler was in place when the old one went');
    assert.deepEqual(process.listeners(signal), [next]);
    const handled = new Promise<void>((resolve) => process.once(signal, () => resolve()));
    process.kill(process.pid, signal);
    await withTimeout(handled, 5000, 'the signal to be handled');
    assert.deepEqual(calls, ['next']);
  });
});
