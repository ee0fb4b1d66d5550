// A client token opens the hub it names, and only it, also where hubs share an
// access key (as every hub of an Azure resource does, and configs copied from
// one). The query form of the client endpoint (/client/?hub=chat) names its
// hub in the query alone: a token whose aud is that URL named the path
// `/client` and nothing else, and opened every hub with the same key
// (/client/?hub=other; found by a review, 2026-12-06).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { startTestRelay, upgradeStatus } from '../helpers/relay.ts';

const SHARED = 'shared-access-key-0123456789abcdefgh';

describe('client tokens of hubs that share an access key', () => {
  it('open the hub their aud names, in either endpoint form, and no other', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: 'chat', accessKey: SHARED }, { name: 'other', accessKey: SHARED }] } });
    const ws = relay.url.replace(/^http/, 'ws');
    const token = (aud: string) => signJwt({ aud, sub: 'alice' }, SHARED, 600);
    const open = (endpoint: string, aud: string) => upgradeStatus(t, `${ws}${endpoint}${endpoint.includes('?') ? '&' : '?'}access_token=${token(aud)}`, 'json.webpubsub.azure.v1');
    const cases: [endpoint: string, aud: string, status: number][] = [
      // The query form's aud names its hub in its query.
      ['/client/?hub=chat', `${relay.url}/client/?hub=chat`, 101],
      ['/client/?hub=CHAT', `${relay.url}/client/?hub=chat`, 101],
      ['/client/?hub=other', `${relay.url}/client/?hub=chat`, 401],
      ['/client?hub=other', `${relay.url}/client?hub=chat`, 401],
      ['/client/?hub=chat', `${relay.url}/client`, 401],
      ['/client/?hub=chat', `${relay.url}/client/?hub=chat&hub=other`, 101],
      ['/client/?hub=other', `${relay.url}/client/?hub=chat&hub=other`, 401],
      // The canonical aud, in both forms.
      ['/client/?hub=chat', `${relay.url}/client/hubs/chat`, 101],
      ['/client/?hub=other', `${relay.url}/client/hubs/chat`, 401],
      ['/client/hubs/chat', `${relay.url}/client/hubs/chat`, 101],
      ['/client/hubs/other', `${relay.url}/client/hubs/chat`, 401],
      ['/client/hubs/other', `${relay.url}/client/?hub=chat`, 401],
    ];
    for (const [endpoint, aud, status] of cases) assert.equal(await open(endpoint, aud), status, `${endpoint} with aud ${aud}`);
  });
});
