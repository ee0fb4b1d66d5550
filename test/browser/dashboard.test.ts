// The dashboard in a real browser (headless Chromium from Debian, driven by
// playwright-core) against a cluster of two edges on three nats-server
// processes: a wrong key is refused with a clear error, the right one signs
// in, both edges are listed, a listener on edge-b appears under its hybrid
// connection and goes when it closes, a hub's connection count follows a
// client, and the live trace (read on edge-a) shows a request relayed and a
// publish made on edge-b; pausing holds lines back. Then it reads at a
// phone's width, and signs in from a link with a short-lived token (one valid
// longer is refused). Every wait is bounded.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { openBrowser } from '../helpers/browser.ts';
import { startCluster } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener, startHycoWsListener } from '../helpers/hyco.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { ROOT_KEY, ROOT_KEY_NAME, tokenFor } from '../helpers/relay.ts';

const WAIT = 20000;

/** Waits until the text of the first element matching `selector` satisfies `match` (absent counts as ''). */
async function waitText(page: Page, selector: string, match: RegExp, ms = WAIT): Promise<string> {
  const handle = await page.waitForFunction(
    ([sel, source, flags]) => {
      const el = document.querySelector(sel);
      const text = el?.textContent ?? '';
      return new RegExp(source, flags).test(text) ? text : false;
    },
    [selector, match.source, match.flags] as const,
    { timeout: ms, polling: 100 },
  );
  return (await handle.jsonValue()) as string;
}

/** Repeats `act` every second until `selector` shows up in the page. */
async function untilShown(page: Page, selector: string, act: () => Promise<unknown>, what: string, ms = WAIT): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    await act();
    if (await page.waitForSelector(selector, { timeout: 1000 }).catch(() => null)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

describe('the dashboard in a browser', () => {
  it('signs in, shows a two-edge cluster live, and traces what happens on the other edge', async (t) => {
    const { edges } = await startCluster(t, 2, {
      hybridConnections: [
        { name: 'echo', requiresClientAuthorization: true },
        { name: 'web', requiresClientAuthorization: false },
      ],
    });
    const [a, b] = edges;
    const { page, problems } = await openBrowser(t);
    await page.goto(`${a.url}/$relay/dashboard`);

    // A wrong key is refused, and the page says why.
    await page.fill('#key-name', ROOT_KEY_NAME);
    await page.fill('#key', 'not-the-key');
    await page.click('#sign-in');
    const refusal = await waitText(page, '#login-error', /SignatureInvalid/);
    assert.match(refusal, /refused the key: no rule with that key name signs it so/);
    assert.equal(await page.isVisible('#tabs'), false);
    // And the refused key is not left in its field (found by review).
    assert.equal(await page.inputValue('#key'), '');

    await page.fill('#key', ROOT_KEY);
    await page.click('#sign-in');
    await page.waitForSelector('#tabs:not([hidden])', { timeout: WAIT });
    await page.waitForSelector('#edges tr[data-node="edge-a"]', { timeout: WAIT });
    await page.waitForSelector('#edges tr[data-node="edge-b"]', { timeout: WAIT });
    await waitText(page, '#tiles [data-tile="Edges"] .tile-value', /^2$/);

    // A listener on edge-b appears under its hybrid connection, then goes.
    await page.click('#tab-hybrid');
    const listener = await startHycoWsListener(t, b.url, () => {});
    await waitText(page, '#entities tr[data-entity="echo"] td.listeners', /^1$/);
    assert.match(await page.textContent('#entities tr[data-entity="echo"]') ?? '', /edge-b × 1/);
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    await page.waitForFunction(
      () => {
        const cell = document.querySelector('#entities tr[data-entity="echo"] td.listeners');
        return !cell || cell.textContent === '0';
      },
      undefined,
      { timeout: WAIT, polling: 100 },
    );

    // A hub's connection count follows a client on edge-b.
    await page.click('#tab-hubs');
    await waitText(page, '#hubs tr[data-hub="chat"] td.connections', /^0$/);
    const client = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'alice' }), undefined, t);
    await waitText(page, '#hubs tr[data-hub="chat"] td.connections', /^1$/);
    client.ws.close();
    await waitText(page, '#hubs tr[data-hub="chat"] td.connections', /^0$/);

    // The live trace, read through edge-a, shows what happens on edge-b.
    await page.click('#tab-trace');
    await waitText(page, '#trace-status', /Streaming from every edge/);
    await startHycoHttpsListener(t, a.url, (_req, res) => res.end('ok'), 'web');
    // Until edge-b hears of the listener on edge-a, its requests are traced as 404 NoListener: wait for the relayed one.
    const relayedLine = '#trace tr[data-kind="http.request"]:has-text("/web/traced"):has-text("· 200 ·")';
    await untilShown(page, relayedLine, () => httpRequest(`${b.url}/web/traced?q=1`), 'a relayed request in the trace');
    const requestLine = (await page.textContent(relayedLine)) ?? '';
    assert.match(requestLine, /edge-b/);
    assert.match(requestLine, /GET \/web\/traced/);
    assert.match(requestLine, /200/);
    assert.doesNotMatch(requestLine, /q=1/);

    const publisher = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'bob' }), undefined, t);
    await publisher.request({ type: 'joinGroup', group: 'room' });
    await untilShown(
      page,
      '#trace tr[data-kind="pubsub.publish"]:has-text("room")',
      () => publisher.request({ type: 'sendToGroup', group: 'room', data: 'hello' }),
      'a publish in the trace',
    );
    const publishLine = (await page.textContent('#trace tr[data-kind="pubsub.publish"]:has-text("room")')) ?? '';
    assert.match(publishLine, /edge-b/);
    assert.match(publishLine, /ack ok/);
    assert.match(publishLine, /user bob/);
    assert.doesNotMatch(publishLine, /hello/);

    // Characters that draw nothing or turn text around are written out: a user id ending in a right-to-left
    // override drew the rest of its cell backwards, and `room\u200B` looked like `room` (found by review).
    const trickster = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'eve\u202E' }), undefined, t);
    await trickster.request({ type: 'joinGroup', group: 'room\u200B' });
    const trickLine = '#trace tr[data-kind="pubsub.publish"]:has-text("room⟨U+200B⟩")';
    await untilShown(page, trickLine, () => trickster.request({ type: 'sendToGroup', group: 'room\u200B', data: 'x' }), 'the publish with unseen characters');
    const trickText = (await page.textContent(trickLine)) ?? '';
    assert.match(trickText, /user eve⟨U\+202E⟩/);
    assert.doesNotMatch(trickText, /[\u200B\u202E]/);

    // Paused, new lines are held (and counted) until resumed.
    await page.click('#trace-pause');
    const before = await page.locator('#trace tbody tr').count();
    await publisher.request({ type: 'sendToGroup', group: 'room', data: 'held' });
    await waitText(page, '#trace-status', /Paused: [1-9]\d* new events? held/);
    assert.equal(await page.locator('#trace tbody tr').count(), before);
    await page.click('#trace-pause');
    await page.waitForFunction((n) => document.querySelectorAll('#trace tbody tr').length > n, before, { timeout: WAIT });

    // Readable on a phone: nothing wider than the screen but the tables' own scrolling.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.click('#tab-overview');
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 1, `the page is ${overflow}px wider than a phone's screen`);

    // A link's token: the browser's history keeps the link as opened, so one valid for an hour is refused
    // with the reason (before: taken, and kept on disk until it expired); one for ten minutes signs in.
    // The address bar keeps neither.
    const link = (ttl: number) => `${a.url}/$relay/dashboard#token=${encodeURIComponent(tokenFor(`${a.url}/`, { ttl }))}`;
    await page.goto('about:blank');
    await page.goto(link(3600));
    assert.match(await waitText(page, '#login-error', /history/), /must expire within 15 minutes .*--ttl 900 or less/);
    assert.equal(await page.isVisible('#tabs'), false);
    assert.equal(await page.inputValue('#token'), '');
    assert.equal(new URL(page.url()).hash, '');
    await page.goto('about:blank');
    await page.goto(link(600));
    await page.waitForSelector('#tabs:not([hidden])', { timeout: WAIT });
    assert.equal(new URL(page.url()).hash, '');

    assert.deepEqual(problems.filter((p) => p.startsWith('pageerror')), []);
  });
});
