// The dashboard in a real browser (headless Chromium, as dashboard.test.ts)
// while its edge cannot reach the bus: /$relay/stats then lists this edge only
// (`complete: false` with the problem), and the page says so in its banner
// until the bus is back. Before, each poll drew the banner and hid it again in
// the same turn, after drawing the snapshot, so it never showed: the page
// looked like a whole cluster of one. Every wait is bounded.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openBrowser } from '../helpers/browser.ts';
import { edgeInProcess } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { ROOT_KEY, ROOT_KEY_NAME, tokenFor } from '../helpers/relay.ts';
import { untilAnswered } from '../helpers/wait.ts';

const WAIT = 20000;

describe('the dashboard while its edge cannot reach the bus', () => {
  it('says that only this edge is listed, and stops saying it once the bus is back', async (t) => {
    const nats = await startNatsServer(t);
    const edge = await edgeInProcess(t, 'edge-a', nats.url);
    const { page, problems } = await openBrowser(t);
    await page.goto(`${edge.url}/$relay/dashboard`);
    await page.fill('#key-name', ROOT_KEY_NAME);
    await page.fill('#key', ROOT_KEY);
    await page.click('#sign-in');
    await page.waitForSelector('#edges tr[data-node="edge-a"]', { timeout: WAIT });
    assert.equal(await page.isVisible('#banner'), false);

    await nats.kill();
    const stats = async () => JSON.parse((await httpRequest(`${edge.url}/$relay/stats`, { headers: { authorization: tokenFor(edge.url) } })).body.toString());
    await untilAnswered(async () => (await stats()).complete === false, WAIT, 'stats without the bus');
    await page.waitForSelector('#banner:not([hidden])', { state: 'visible', timeout: WAIT });
    assert.match((await page.textContent('#banner')) ?? '', /Only this edge is listed: the nats bus is unreachable/);

    await nats.restart();
    await untilAnswered(async () => (await stats()).complete === true, WAIT, 'stats with the bus back');
    await page.waitForSelector('#banner', { state: 'hidden', timeout: WAIT });
    assert.deepEqual(problems, []);
  });
});
