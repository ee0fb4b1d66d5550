// What a listener's HTTP answer may tell a browser on the relay's origin
// (src/hybrid/shared-origin.ts): a service worker is confined to the entity's
// path, and a `same-origin` opener policy becomes `same-origin-allow-popups`.
// The browser-level proof is test/browser/shared-origin.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { confinedToEntity } from '../../src/hybrid/shared-origin.ts';

const request = (url: string, headers: Record<string, string> = {}) => ({ url, headers });

describe("a listener's answer on the relay's origin", () => {
  it('confines a service worker script to the entity it came from, whatever the listener allowed', () => {
    const script = { 'Content-Type': 'text/javascript', 'Service-Worker-Allowed': '/' };
    assert.deepEqual(confinedToEntity(script, request('/Evil/app/sw.js?v=2', { 'service-worker': 'script' })), {
      'Content-Type': 'text/javascript',
      'service-worker-allowed': '/Evil/',
    });
    // A script at the entity's root would otherwise have the whole origin ("/") as its widest scope.
    assert.equal(confinedToEntity({}, request('/sw.js', { 'service-worker': 'script' }))['service-worker-allowed'], '/sw.js/');
    // Not a service worker's script: the listener's grant goes, and nothing is added.
    assert.deepEqual(confinedToEntity(script, request('/evil/sw.js')), { 'Content-Type': 'text/javascript' });
  });

  it('drops Clear-Site-Data: one entity\'s page may not wipe or reload the whole origin, the dashboard with it', () => {
    assert.deepEqual(confinedToEntity({ 'Clear-Site-Data': '"*"', 'X-Kept': 'k' }, request('/evil/logout')), { 'X-Kept': 'k' });
  });

  it("passes a same-origin opener policy on as same-origin-allow-popups, and any other as it is", () => {
    const policy = (value: string | string[]) => confinedToEntity({ 'cross-origin-opener-policy': value }, request('/evil/'))['cross-origin-opener-policy'];
    assert.equal(policy('same-origin'), 'same-origin-allow-popups');
    assert.equal(policy(' Same-Origin ; report-to="x"'), 'same-origin-allow-popups');
    assert.deepEqual(policy(['same-origin', 'unsafe-none']), ['same-origin-allow-popups', 'unsafe-none']);
    for (const kept of ['same-origin-allow-popups', 'unsafe-none', 'noopener-allow-popups']) assert.equal(policy(kept), kept);
  });
});
