// GetRuntimeInformationAsync() of Microsoft's .NET SDK, byte for byte as its
// ManagementOperations sends it (GET {entity}?api-version=2016-07,
// X-PROCESS-AT: ServiceBus, the SAS token in Authorization for the entity's
// address as its TokenProvider normalizes it): the relay answers the Atom
// entry with ListenerCount itself; before, the request went to a listener as
// one of its own (or 404 NoListener when none was there).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';

/** The token .NET's TokenProvider makes for `entity`: http scheme, no port, a trailing slash. */
function dotnetToken(entity: string, opts: { keyName?: string; key?: string } = {}): string {
  return tokenFor(`http://127.0.0.1/${entity}/`, opts);
}

async function runtimeInformation(relayUrl: string, entity: string, token: string | undefined) {
  const got = await httpRequest(`${relayUrl}/${entity}?api-version=2016-07`, { headers: { 'X-PROCESS-AT': 'ServiceBus', ...(token ? { Authorization: token } : {}) } });
  return { ...got, body: got.body.toString('utf8') };
}

/** What .NET's DataContractSerializer would read from the entry: the description's elements, in order. */
function description(body: string): Record<string, string> {
  const content = /<content type="application\/xml"><HybridConnectionDescription xmlns="http:\/\/schemas\.microsoft\.com\/netservices\/2010\/10\/servicebus\/connect"[^>]*>(.*)<\/HybridConnectionDescription><\/content>/.exec(body);
  assert.ok(content, body);
  return Object.fromEntries([...content[1].matchAll(/<(\w+)>([^<]*)<\/\1>/g)].map((m) => [m[1], m[2]]));
}

describe('runtime information (.NET GetRuntimeInformationAsync)', () => {
  it('answers the listener count itself, with no listener and with two, and hands nothing to a listener', async (t) => {
    const relay = await startTestRelay(t, {
      sas: [
        { keyName: 'root', key: 'root-key-0123456789abcdef', rights: ['Manage'] },
        { keyName: 'listen-only', key: 'listen-key-0123456789abcdef', entity: 'echo', rights: ['Listen'] },
        { keyName: 'send-only', key: 'send-key-0123456789abcdef', entity: 'echo', rights: ['Send'] },
      ],
    });
    const none = await runtimeInformation(relay.url, 'echo', dotnetToken('echo'));
    // Before: 404 NoListener, which the SDK throws as EndpointNotFoundException.
    assert.equal(none.status, 200, none.body);
    assert.match(String(none.headers['content-type']), /^application\/atom\+xml;type=entry/);
    assert.deepEqual(description(none.body), { RequiresClientAuthorization: 'true', ListenerCount: '0' });

    const seen: string[] = [];
    for (let i = 0; i < 2; i++) await startHycoHttpsListener(t, relay.url, (req, res) => void (seen.push(String(req.url)), res.end('from the listener')));
    for (const key of [{}, { keyName: 'listen-only', key: 'listen-key-0123456789abcdef' }, { keyName: 'send-only', key: 'send-key-0123456789abcdef' }]) {
      const two = await runtimeInformation(relay.url, 'echo', dotnetToken('echo', key));
      assert.equal(two.status, 200, two.body);
      assert.equal(description(two.body).ListenerCount, '2');
    }
    assert.deepEqual(seen, [], 'no listener was asked');

    // A token sent in the query is not echoed in the entry's links (before: the whole request URL was).
    const queryToken = encodeURIComponent(dotnetToken('echo'));
    const viaQuery = await httpRequest(`${relay.url}/echo?api-version=2016-07&sb-hc-token=${queryToken}`, { headers: { 'X-PROCESS-AT': 'ServiceBus' } });
    assert.equal(viaQuery.status, 200, viaQuery.body.toString('utf8'));
    assert.doesNotMatch(viaQuery.body.toString('utf8'), /sb-hc-token|SharedAccessSignature|sig=/);
    assert.match(viaQuery.body.toString('utf8'), /\/echo\?api-version=2016-07/);

    // Without X-PROCESS-AT it is any sender's request, relayed as before.
    const relayed = await httpRequest(`${relay.url}/echo?api-version=2016-07`, { headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/echo`) } });
    assert.equal(relayed.body.toString('utf8'), 'from the listener');
    assert.deepEqual(seen, ['/echo?api-version=2016-07']);
  });

  it('with autoCreate, an entity no listener holds does not exist (404), one a listener created does', async (t) => {
    const relay = await startTestRelay(t, { autoCreate: true, hybridConnections: [] });
    // Before: 200 with ListenerCount 0 for any name.
    assert.equal((await runtimeInformation(relay.url, 'dyn', dotnetToken('dyn'))).status, 404);
    await startHycoHttpsListener(t, relay.url, (_req, res) => res.end(), 'dyn');
    const created = await runtimeInformation(relay.url, 'dyn', dotnetToken('dyn'));
    assert.equal(created.status, 200, created.body);
    assert.equal(description(created.body).ListenerCount, '1');
  });

  it('refuses in the management plane\'s XML: no token 401, a token of another entity 403, an unknown entity 404', async (t) => {
    const relay = await startTestRelay(t, {
      sas: [
        { keyName: 'root', key: 'root-key-0123456789abcdef', rights: ['Manage'] },
        { keyName: 'other', key: 'other-key-0123456789abcdef', entity: 'other', rights: ['Listen', 'Send'] },
      ],
      hybridConnections: [{ name: 'echo', requiresClientAuthorization: false }, { name: 'other', requiresClientAuthorization: true }],
    });
    // Even for an entity that needs no sender token: management needs one, as on Azure.
    const anonymous = await runtimeInformation(relay.url, 'echo', undefined);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.body, /^<Error><Code>401<\/Code><Detail>TokenMissing: .+<\/Detail><\/Error>$/);
    const elsewhere = await runtimeInformation(relay.url, 'echo', dotnetToken('echo', { keyName: 'other', key: 'other-key-0123456789abcdef' }));
    assert.equal(elsewhere.status, 403, elsewhere.body);
    const unknown = await runtimeInformation(relay.url, 'nowhere', dotnetToken('nowhere'));
    assert.equal(unknown.status, 404);
    assert.match(unknown.body, /<Detail>EntityNotFound: /);
    const open = await runtimeInformation(relay.url, 'echo', dotnetToken('echo'));
    assert.equal(description(open.body).RequiresClientAuthorization, 'false');
  });
});
