// A page a listener serves through the relay shares the relay's origin with
// the operator's dashboard (src/hybrid/shared-origin.ts), in a real browser
// (Debian's headless Chromium): the page cannot register a service worker
// beyond its entity's path (it still can within it), and cannot reach into a
// dashboard it opens, even when it asks for the dashboard's own opener policy.
// Before: the worker saw the dashboard's Manage token, and the page read the
// key typed into the dashboard it opened (found by review). Where a browser
// applies none of this (plain http to a host that is not localhost), the
// dashboard takes no key or token at all, and the tokens it signs name
// /$relay, not the root that also gives every entity.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openBrowser } from '../helpers/browser.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay } from '../helpers/relay.ts';

const WAIT = 15000;

const PAGE = `<!doctype html><button id="open">Open the relay dashboard</button><script src="/evil/page.js"></script>`;
const PAGE_SCRIPT = `
window.results = {};
const outcome = (p) => p.then((r) => 'registered ' + r.scope, (e) => 'refused ' + e.name);
outcome(navigator.serviceWorker.register('/evil/sw.js', { scope: '/' })).then((r) => (window.results.wide = r));
outcome(navigator.serviceWorker.register('/evil/sw.js', { scope: '/evil/' })).then((r) => (window.results.own = r));
document.getElementById('open').onclick = () => (window.dashboard = window.open('/$relay/dashboard'));
window.reach = () => {
  try {
    return window.dashboard.document.getElementById('key') ? 'reached' : 'no form';
  } catch (e) {
    return 'blocked: ' + e.name;
  }
};`;

describe("a listener's page on the relay's origin", () => {
  it('cannot take a service worker beyond its entity, nor reach into a dashboard it opens', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'evil', requiresClientAuthorization: false }] });
    await startHycoHttpsListener(
      t,
      relay.url,
      (req, res) => {
        if (req.url?.startsWith('/evil/sw.js')) {
          res.setHeader('content-type', 'text/javascript');
          res.setHeader('service-worker-allowed', '/');
          res.end(`self.addEventListener('fetch', () => {});`);
        } else if (req.url?.startsWith('/evil/page.js')) {
          res.setHeader('content-type', 'text/javascript');
          res.end(PAGE_SCRIPT);
        } else {
          res.setHeader('content-type', 'text/html');
          // The dashboard's own policy: same origin and same policy would share a browsing context group.
          res.setHeader('cross-origin-opener-policy', 'same-origin');
          res.end(PAGE);
        }
      },
      'evil',
    );
    const { context, page } = await openBrowser(t);
    await page.goto(`${relay.url}/evil/`);
    await page.waitForFunction(() => (window as any).results?.wide && (window as any).results?.own, null, { timeout: WAIT });
    const results = await page.evaluate(() => (window as any).results as { wide: string; own: string });
    assert.match(results.wide, /^refused SecurityError/, 'a worker over the whole origin');
    assert.equal(results.own, `registered ${relay.url}/evil/`, 'a worker within its entity');

    const [dashboard] = await Promise.all([context.waitForEvent('page', { timeout: WAIT }), page.click('#open')]);
    await dashboard.waitForSelector('#key', { timeout: WAIT });
    const reach = await page.evaluate(() => (window as any).reach() as string);
    assert.notEqual(reach, 'reached', 'the page reached the dashboard it opened');
  });

  it('the dashboard takes no key where a browser lets such a page in (plain http, not localhost), and signs for /$relay only', async (t) => {
    const relay = await startTestRelay(t);
    // relay.test resolves to 127.0.0.1 in this browser only: plain http to a name that is not localhost, not a secure context.
    const { page } = await openBrowser(t, undefined, ['--host-resolver-rules=MAP relay.test 127.0.0.1']);
    const statsAsked: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/$relay/stats')) statsAsked.push(r.headers().authorization ?? '');
    });
    await page.goto(`http://relay.test:${relay.port}/$relay/dashboard`);
    const warned = await page.waitForFunction(() => document.querySelector('#login-error:not([hidden])')?.textContent, null, { timeout: WAIT });
    assert.match(String(await warned.jsonValue()), /not served over https/);
    await page.fill('#key-name', ROOT_KEY_NAME);
    await page.fill('#key', ROOT_KEY);
    await page.click('#sign-in');
    await page.waitForTimeout(500);
    assert.match((await page.textContent('#login-error')) ?? '', /not served over https/);
    assert.equal(statsAsked.length, 0, 'no token left the page');

    // On localhost it signs in, with tokens for the relay's own endpoints (a root token gives every entity too).
    await page.goto(`${relay.url}/$relay/dashboard`);
    await page.fill('#key-name', ROOT_KEY_NAME);
    await page.fill('#key', ROOT_KEY);
    await page.click('#sign-in');
    await page.waitForSelector('#tabs:not([hidden])', { timeout: WAIT });
    assert.ok(statsAsked.length > 0);
    assert.ok(statsAsked[0].includes(`sr=${encodeURIComponent(`${relay.url}/$relay`)}&`), statsAsked[0]);
  });
});
