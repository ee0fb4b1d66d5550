import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../../src/bridge/backoff.ts';
import { parseLocalForward } from '../../src/bridge/local-forwarder.ts';
import { parseRemoteForward } from '../../src/bridge/remote-forwarder.ts';

describe('bridge forward specs', () => {
  it('reads -L [bind:]port:entity', () => {
    assert.deepEqual(parseLocalForward('8080:web'), { bindHost: '127.0.0.1', port: 8080, entity: 'web' });
    assert.deepEqual(parseLocalForward('0.0.0.0:0:db'), { bindHost: '0.0.0.0', port: 0, entity: 'db' });
    assert.deepEqual(parseLocalForward('[::1]:0:db'), { bindHost: '::1', port: 0, entity: 'db' });
    // Only digits make a port (before, ':e' listened on a random port, '1e3' on 1000, '0x1f90' on 8080).
    for (const bad of ['web', '70000:web', 'x:web', '1:2:3:4', '80:', ':web', '1e3:web', '0x1f90:web', ' 80:web', '[::1]:web']) assert.throws(() => parseLocalForward(bad), /-L/, bad);
  });

  it('reads -R entity:host:port', () => {
    assert.deepEqual(parseRemoteForward('web:127.0.0.1:8080'), { entity: 'web', host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseRemoteForward('db:[::1]:5432'), { entity: 'db', host: '::1', port: 5432 });
    for (const bad of ['web:8080', 'web:host:0', 'web:host:x']) assert.throws(() => parseRemoteForward(bad), /-R/);
  });
});

describe('reconnect backoff', () => {
  it('grows a jittered cap up to the maximum, and starts over after a healthy connection', () => {
    const options = { initialMs: 100, maxMs: 1000, healthyAfterMs: 5000 };
    const top = new Backoff(options, () => 1);
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => top.next(0)), [100, 200, 400, 800, 1000, 1000]);
    const bottom = new Backoff(options, () => 0);
    assert.equal(bottom.next(0), 0);
    // A short-lived connection keeps the growth; a healthy one resets it.
    top.connected(10000);
    assert.equal(top.next(11000), 1000);
    top.connected(20000);
    assert.equal(top.next(26000), 100);
  });
});
