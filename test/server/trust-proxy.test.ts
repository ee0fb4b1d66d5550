// Behind a load balancer (docs/security.md, "Behind a load balancer"):
// listen.trustProxy makes the relay take the client address from
// X-Forwarded-For (per-address connection rate, logs, the remote endpoint a
// listener is told) and the host from X-Forwarded-Host (token scope and
// audience), only when the TCP peer is one of those proxies. Without it, or
// from another peer, the headers are ignored: anyone can write them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { createSasToken } from '../../src/auth/sas-token.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { HUB, HUB_KEY, PLAIN, pubsubOverrides } from '../helpers/pubsub.ts';
import { ROOT_KEY, ROOT_KEY_NAME, captureLogger, startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

/** Two new connections per address, then 429 (no refill to speak of during the test). */
const TIGHT_RATE = { limits: { connectRatePerAddress: 0.001, connectBurstPerAddress: 2 } };

const connectUrl = (base: string) => wsUrl(base, '/$hc/echo?sb-hc-action=connect');

/** A sender's upgrade with these headers (no token: admission answers first, then 401). */
const dial = (base: string, headers: Record<string, string>) => upgradeRefusal(connectUrl(base), { headers });

const sasFor = (resource: string) => createSasToken(resource, ROOT_KEY_NAME, ROOT_KEY, Math.floor(Date.now() / 1000) + 600);

describe('listen.trustProxy', () => {
  it('takes the client address from X-Forwarded-For of a trusted proxy, for the connection rate and the log', async (t) => {
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, { ...TIGHT_RATE, listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'] } }, { log });
    const from = (address: string) => ({ 'x-forwarded-for': address });
    assert.equal((await dial(relay.url, from('203.0.113.7'))).status, 401);
    assert.equal((await dial(relay.url, from('203.0.113.7'))).status, 401);
    assert.deepEqual(await dial(relay.url, from('203.0.113.7')), { status: 429, code: 'TooManyConnectionAttempts' });
    // Another client behind the same proxy has its own allowance.
    assert.equal((await dial(relay.url, from('203.0.113.8'))).status, 401);
    // The proxy's own address, appended by a second trusted hop, is skipped.
    assert.equal((await dial(relay.url, from('203.0.113.9, 127.0.0.1'))).status, 401);
    // What a client wrote itself, left of what the proxy appended, is not believed.
    assert.deepEqual(await dial(relay.url, from('198.51.100.1, 203.0.113.7')), { status: 429, code: 'TooManyConnectionAttempts' });
    // Balancers that add the client's port (Azure Application Gateway: `ip:port`, `[v6]:port`): the address
    // is still the client's (before, the relay fell back to the proxy's and every client shared its allowance).
    assert.equal((await dial(relay.url, from('192.0.2.1:5555'))).status, 401);
    assert.equal((await dial(relay.url, from('192.0.2.1:6666'))).status, 401);
    assert.deepEqual(await dial(relay.url, from('192.0.2.1:7777')), { status: 429, code: 'TooManyConnectionAttempts' });
    assert.equal((await dial(relay.url, from('192.0.2.2:5555'))).status, 401);
    assert.equal((await dial(relay.url, from('[2001:db8::9]:5555'))).status, 401);
    assert.equal((await dial(relay.url, from('[2001:db8::9]:5556'))).status, 401);
    assert.deepEqual(await dial(relay.url, from('[2001:db8::9]')), { status: 429, code: 'TooManyConnectionAttempts' });
    // Another address in the same /64 is the same client (its host picks any of them); another /64 is not.
    assert.deepEqual(await dial(relay.url, from('2001:db8::1:2:3:4')), { status: 429, code: 'TooManyConnectionAttempts' });
    assert.equal((await dial(relay.url, from('2001:db8:0:1::9'))).status, 401);
    const refusals = lines().filter((l) => l.event === 'limit.reached').map((l) => l.address);
    assert.deepEqual(refusals, ['203.0.113.7', '203.0.113.7', '192.0.2.1', '2001:db8::9', '2001:db8::1:2:3:4']);
  });

  it('tells a listener the forwarded client as the sender\'s remote endpoint', async (t) => {
    const relay = await startTestRelay(t, { listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.0/8'] } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const sender = openWebSocket(connectUrl(relay.url), { headers: { ServiceBusAuthorization: tokenFor(connectUrl(relay.url)), 'X-Forwarded-For': '2001:db8::7' } });
    sender.catch(() => undefined);
    const { accept } = await listener.next<{ accept: { address: string; remoteEndpoint: { address: string; port: number } } }>();
    assert.deepEqual(accept.remoteEndpoint, { address: '2001:db8::7', port: 0 });
    (await openWebSocket(accept.address)).terminate();
    (await sender).terminate();
  });

  it('takes the host from X-Forwarded-Host of a trusted proxy for SAS scope and pub/sub audiences', async (t) => {
    const relay = await startTestRelay(t, pubsubOverrides({ listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'] } }));
    const forwarded = { 'X-Forwarded-Host': 'relay.example.com', 'X-Forwarded-Proto': 'https' };
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const sas = sasFor('http://relay.example.com/echo');
    assert.equal((await upgradeRefusal(listenUrl, { headers: { ...forwarded, ServiceBusAuthorization: sas } })).status, 101);
    const clientUrl = `${wsUrl(relay.url, `/client/hubs/${HUB}`)}?access_token=${signJwt({ aud: `https://relay.example.com/client/hubs/${HUB}` }, HUB_KEY, 600)}`;
    const client = await openWebSocket(clientUrl, { protocols: [PLAIN], headers: forwarded });
    client.terminate();
    assert.deepEqual(await postRest(relay.url, forwarded), { status: 202 });
    // The proxy in front appends the host it was asked for: what a client wrote to its left is not believed.
    const appended = { 'X-Forwarded-Host': 'relay.example.com, 127.0.0.1' };
    assert.deepEqual(await upgradeRefusal(listenUrl, { headers: { ...appended, ServiceBusAuthorization: sas } }), { status: 403, code: 'TokenScopeInvalid' });
    assert.deepEqual(await postRest(relay.url, appended), { status: 401, code: 'AudienceInvalid' });
    const ours = { 'X-Forwarded-Host': 'evil.example.com, relay.example.com' };
    assert.equal((await upgradeRefusal(listenUrl, { headers: { ...ours, ServiceBusAuthorization: sas } })).status, 101);
  });

  it('ignores forwarded headers without trustProxy, and from a peer that is not a listed proxy', async (t) => {
    for (const trustProxy of [[], ['10.0.0.0/8', '::1']]) {
      const relay = await startTestRelay(t, pubsubOverrides({ ...TIGHT_RATE, listen: { host: '127.0.0.1', port: 0, trustProxy } }));
      const forwarded = { 'X-Forwarded-Host': 'relay.example.com', 'X-Forwarded-For': '203.0.113.1' };
      const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
      const scope = await upgradeRefusal(listenUrl, { headers: { ...forwarded, ServiceBusAuthorization: sasFor('http://relay.example.com/echo') } });
      assert.deepEqual(scope, { status: 403, code: 'TokenScopeInvalid' }, `trustProxy ${trustProxy}`);
      const rest = await postRest(relay.url, forwarded);
      assert.deepEqual(rest, { status: 401, code: 'AudienceInvalid' });
      // Both upgrades above and below count against 127.0.0.1, whatever X-Forwarded-For says.
      assert.equal((await dial(relay.url, { 'x-forwarded-for': '203.0.113.2' })).status, 401);
      assert.deepEqual(await dial(relay.url, { 'x-forwarded-for': '203.0.113.3' }), { status: 429, code: 'TooManyConnectionAttempts' });
    }
  });
});

/** A REST send whose token names relay.example.com; its status and code. */
async function postRest(base: string, headers: Record<string, string>): Promise<{ status: number; code?: string }> {
  const restPath = `/api/hubs/${HUB}/:send`;
  const res = await fetch(`${base}${restPath}`, {
    method: 'POST',
    headers: { ...headers, authorization: `Bearer ${signJwt({ aud: `https://relay.example.com${restPath}` }, HUB_KEY, 600)}`, 'content-type': 'text/plain' },
    body: 'x',
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  return res.status === 202 ? { status: 202 } : { status: res.status, code: (JSON.parse(text) as { code: string }).code };
}
