// hybridConnections[].accepts: what an entity's listeners take from senders,
// relayed WebSockets, HTTP requests, or both (unset). A sender of the other
// kind is refused 404 before any listener hears of it: Microsoft's hyco-https
// 1.4.5 ends its process on a WebSocket `accept` (its Extensions is not
// defined), and hyco-ws ignores a `request` (the sender waited
// timeouts.httpResponseMs for a 504).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildConfig } from '../../src/config/load.ts';
import { EntityCatalog } from '../../src/hybrid/entity-catalog.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, upgradeRefusal } from '../helpers/raw-listener.ts';
import { startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';

const ENTITIES = [
  { name: 'web', requiresClientAuthorization: true, accepts: ['http'] },
  { name: 'sockets', requiresClientAuthorization: true, accepts: ['websocket'] },
  { name: 'both', requiresClientAuthorization: true },
];

async function listenerOn(t: Parameters<typeof cleanupFor>[0], relayUrl: string, entity: string): Promise<RawListener> {
  const url = wsUrl(relayUrl, `/$hc/${entity}?sb-hc-action=listen`);
  const listener = await RawListener.connect(url, tokenFor(wsUrl(relayUrl, `/$hc/${entity}`)));
  cleanupFor(t).after(() => listener.close());
  return listener;
}

/** Whether the listener hears anything within `ms` (what it hears stays queued for next()). */
async function hearsWithin(listener: RawListener, ms: number): Promise<boolean> {
  let heard = false;
  const hear = () => (heard = true);
  listener.ws.on('message', hear);
  await new Promise((resolve) => setTimeout(resolve, ms));
  listener.ws.off('message', hear);
  return heard;
}

describe('hybridConnections[].accepts', () => {
  it('refuses a WebSocket sender of an HTTP-only entity 404 WebSocketNotAccepted, its listener told nothing, and relays HTTP to it', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: ENTITIES });
    const listener = await listenerOn(t, relay.url, 'web');
    const connect = wsUrl(relay.url, '/$hc/web?sb-hc-action=connect');
    assert.deepEqual(await upgradeRefusal(connect, { headers: { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, '/$hc/web')) } }), { status: 404, code: 'WebSocketNotAccepted' });
    assert.equal(await hearsWithin(listener, 300), false, 'no accept reached the listener');
    // Unauthorized senders learn nothing of the entity's settings: the token comes first.
    assert.equal((await upgradeRefusal(connect)).status, 401);

    const url = `${relay.url}/web/page`;
    const answer = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    const request = await listener.next<{ request: { id: string; address: string } }>(5000);
    assert.ok(request.request, 'an HTTP request still reaches the listener');
    listener.ws.send(JSON.stringify({ response: { requestId: request.request.id, statusCode: 200, responseHeaders: {}, body: false } }));
    assert.equal((await answer).status, 200);
  });

  it('refuses an HTTP sender of a WebSocket-only entity 404 HttpNotAccepted at once, and relays WebSockets to it', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: ENTITIES });
    const listener = await listenerOn(t, relay.url, 'sockets');
    const url = `${relay.url}/sockets/page`;
    const refused = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 5000 });
    assert.equal(refused.status, 404);
    assert.equal(JSON.parse(String(refused.body)).code, 'HttpNotAccepted');
    assert.equal(await hearsWithin(listener, 300), false, 'no request reached the listener');

    const connect = wsUrl(relay.url, '/$hc/sockets?sb-hc-action=connect');
    const sender = upgradeRefusal(connect, { headers: { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, '/$hc/sockets')) } });
    const accept = await listener.next<{ accept: { address: string } }>(5000);
    assert.ok(accept.accept, 'a WebSocket sender still reaches the listener');
    const leg = await RawListener.connect(accept.accept.address, undefined);
    cleanupFor(t).after(() => leg.close());
    assert.equal((await sender).status, 101);
  });

  it('takes both when unset, and a reload changes what a listed entity takes for the next sender', async (t) => {
    let entities: Record<string, unknown>[] = ENTITIES;
    const relay = await startTestRelay(t, { hybridConnections: entities }, { loadConfig: () => buildConfig(testConfig({ hybridConnections: entities })) });
    const listener = await listenerOn(t, relay.url, 'both');
    const url = `${relay.url}/both/page`;
    const answer = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    const request = await listener.next<{ request: { id: string } }>(5000);
    listener.ws.send(JSON.stringify({ response: { requestId: request.request.id, statusCode: 204, responseHeaders: {}, body: false } }));
    assert.equal((await answer).status, 204);

    entities = ENTITIES.map((e) => (e.name === 'both' ? { ...e, accepts: ['websocket'] } : e));
    assert.ok(relay.reload('api').ok);
    const refused = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 5000 });
    assert.deepEqual([refused.status, JSON.parse(String(refused.body)).code], [404, 'HttpNotAccepted']);
  });

  it('is checked by the config schema: at least one of websocket and http, each once', () => {
    for (const accepts of [[], ['ftp'], ['http', 'http']]) {
      assert.throws(() => buildConfig(testConfig({ hybridConnections: [{ name: 'web', accepts }] })), /accepts/, JSON.stringify(accepts));
    }
    const catalog = new EntityCatalog(buildConfig(testConfig({ hybridConnections: [{ name: 'web', accepts: ['http'] }] })).hybridConnections, true);
    assert.deepEqual([...catalog.get('WEB')!.accepts], ['http']);
    assert.deepEqual([...catalog.getForListener('made')!.accepts].sort(), ['http', 'websocket'], 'an entity a listener created takes both');
  });
});
