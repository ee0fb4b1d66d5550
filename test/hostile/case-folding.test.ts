// Names compared without regard to case fold A-Z only, as on Azure. JavaScript's
// toLowerCase folds the Kelvin sign (U+212A) to an ASCII "k": a SAS token scoped
// to "\u212Aey" opened the hybrid connection "key" (listener and sender), and
// /client/hubs/%E2%84%AAey reached the hub "key" (found by a review, 2026-12-03).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientAccessUrl } from '../../src/pubsub/client-access-url.ts';
import { httpRequest } from '../helpers/http.ts';
import { startTestRelay, tokenFor, upgradeStatus, wsUrl } from '../helpers/relay.ts';

const KELVIN = '\u212A';

describe('case-insensitive names fold A-Z only', () => {
  it('a SAS token scoped to a name with the Kelvin sign opens neither listener nor sender of the ASCII name; one in other ASCII case does', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'key' }] });
    const listen = (scope: string) =>
      wsUrl(relay.url, `/$hc/key?sb-hc-action=listen&sb-hc-token=${encodeURIComponent(tokenFor(`${relay.url}/${scope}`))}`);
    // Refused as a token for another entity is.
    const outOfScope = await upgradeStatus(t, listen('other'));
    assert.ok(outOfScope >= 400);
    assert.equal(await upgradeStatus(t, listen(`${KELVIN}ey`)), outOfScope, 'listener with a token for \\u212Aey');
    assert.equal(await upgradeStatus(t, listen('KEY')), 101, 'listener with a token for KEY');
    const send = (scope: string, path = 'key/k') => httpRequest(`${relay.url}/${path}`, { headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/${scope}`) } });
    const sendOutOfScope = (await send('other')).status;
    assert.ok(sendOutOfScope >= 400);
    assert.equal((await send(`${KELVIN}ey`)).status, sendOutOfScope, 'sender with a token for \\u212Aey');
    assert.equal((await send(`key/${KELVIN}`)).status, sendOutOfScope, 'sender to key/k with a token for key/\\u212A');
    // Past the token: no listener holds key now (the one above closed), which is another answer. The entity's name
    // compares in any ASCII case; the path below it as sent (a token for key/K does not cover key/k).
    assert.notEqual((await send('KEY/k')).status, sendOutOfScope, 'sender to key/k with a token for KEY/k');
    assert.equal((await send('key/K')).status, sendOutOfScope, 'sender to key/k with a token for key/K');
  });

  it('a hub is not reached by a name with the Kelvin sign, nor by a token for one', async (t) => {
    const key = 'key-access-key-0123456789';
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: 'key', accessKey: key }] } });
    const kelvinUrl = new URL(clientAccessUrl(relay.url, `${KELVIN}ey`, key));
    assert.equal(await upgradeStatus(t, kelvinUrl.href), 404, 'the hub \\u212Aey does not exist');
    // A token whose audience names the \u212Aey hub, signed with key's own key, presented at hub key.
    const forKelvin = kelvinUrl.searchParams.get('access_token')!;
    assert.equal(await upgradeStatus(t, wsUrl(relay.url, `/client/hubs/key?access_token=${forKelvin}`)), 401);
    const forKey = new URL(clientAccessUrl(relay.url, 'KEY', key)).searchParams.get('access_token')!;
    assert.equal(await upgradeStatus(t, wsUrl(relay.url, `/client/hubs/key?access_token=${forKey}`)), 101, 'a token for KEY is one for key');
  });
});
