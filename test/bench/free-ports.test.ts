// The bench's servers bind ports freePort gave (nats-server, mosquitto, nginx,
// haproxy, socat, iperf3 cannot take port 0): another process may take one
// between the asking and the binding, and the start is then tried again.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onFreePorts } from '../../bench/lib/processes.ts';

describe('bench servers on ports freePort gave', () => {
  it('start again when a port was taken before the server bound it, at most three times, and not for other failures', async () => {
    let tries = 0;
    const clashOnce = await onFreePorts(async () => {
      tries++;
      if (tries === 1) throw new Error('nats-server exited with 1:\n[FTL] Unable to listen for websocket connections: listen tcp 127.0.0.1:35013: bind: address already in use');
      return 'started';
    });
    assert.deepEqual([clashOnce, tries], ['started', 2]);

    tries = 0;
    await assert.rejects(
      onFreePorts(async () => {
        tries++;
        throw new Error('nginx: [emerg] bind() to 127.0.0.1:40000 failed (98: Address already in use)');
      }),
      /Address already in use/,
    );
    assert.equal(tries, 3);

    tries = 0;
    await assert.rejects(
      onFreePorts(async () => {
        tries++;
        throw new Error('mosquitto did not start in time');
      }),
      /did not start in time/,
    );
    assert.equal(tries, 1);
  });
});
