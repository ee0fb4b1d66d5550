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
    // An empty bind is the default one, as with ssh -L (before: '' bound every interface); every interface only when written out.
    assert.deepEqual(parseLocalForward(':8080:web'), { bindHost: '127.0.0.1', port: 8080, entity: 'web' });
    assert.deepEqual(parseLocalForward('[::]:0:db'), { bindHost: '::', port: 0, entity: 'db' });
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
  const options = { initialMs: 250, maxMs: 30000, outageFraction: 0.5, healthyAfterMs: 10000 };
  const draws: [string, () => number][] = [
    ['smallest draw', () => 0],
    ['middle draw', () => 0.5],
    ['largest draw', () => 1],
    ['seeded draws', seeded(7)],
  ];

  /** Tries against a relay gone from 0 to `downMs` (each try takes `tryMs`); the delays and the time the first try after it came. */
  function outage(backoff: Backoff, downMs: number, tryMs = 5): { delays: number[]; backAt: number } {
    const delays: number[] = [];
    let now = 0;
    while (now < downMs) {
      const delay = backoff.next(now);
      delays.push(delay);
      now += delay + tryMs;
      assert.ok(delays.length < 10000, 'a storm of tries');
    }
    return { delays, backAt: now };
  }

  it('after a relay restart (drain ~5 s, down 3 s) the listener is back within a few seconds (before: 25 s, the cap reached by counting tries)', () => {
    for (const [name, random] of draws) {
      const { delays, backAt } = outage(new Backoff(options, random), 8000);
      assert.ok(backAt - 8000 <= 4500, `${name}: back ${backAt - 8000} ms after the relay`);
      // Not a storm either (before, the smallest draw retried at once, every time).
      assert.ok(delays.length <= 20, `${name}: ${delays.length} tries in 8 s`);
      assert.ok(delays.every((d) => d >= options.initialMs / 2), `${name}: ${delays.join(', ')}`);
    }
  });

  it('a long outage backs off to the cap, jittered between half of it and all of it', () => {
    for (const [name, random] of draws) {
      const { delays } = outage(new Backoff(options, random), 600_000);
      assert.ok(delays.every((d) => d <= options.maxMs), `${name}: above the cap`);
      // Ten minutes: ~20 tries in the first minute, then one every 15 to 30 s (at most 36 more).
      assert.ok(delays.length <= 70, `${name}: ${delays.length} tries`);
      const late = outage(new Backoff(options, random), 600_000).delays.slice(-10);
      assert.ok(late.every((d) => d >= options.maxMs / 2), `${name}: ${late.join(', ')}`);
    }
    const top = outage(new Backoff(options, () => 1), 600_000).delays;
    assert.equal(top.at(-1), options.maxMs);
    const bottom = outage(new Backoff(options, () => 0), 600_000).delays;
    assert.equal(bottom.at(-1), options.maxMs / 2);
  });

  it('tries close together do not grow the wait: it grows with the time the relay has been gone', () => {
    const backoff = new Backoff(options, () => 1);
    for (let i = 0; i < 20; i++) assert.equal(backoff.next(100), options.initialMs, `try ${i}`);
    assert.equal(backoff.next(8100), 4000);
  });

  it('a healthy connection ends the outage; a short-lived one does not', () => {
    const backoff = new Backoff(options, () => 1);
    backoff.next(0);
    backoff.connected(20000);
    assert.equal(backoff.next(21000), 10500, 'connected 1 s: the outage goes on (21 s so far)');
    backoff.connected(30000);
    assert.equal(backoff.next(40000), options.initialMs, 'connected 10 s: a new outage');
  });
});

/** A deterministic stand-in for Math.random (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
