// What Azure Relay passes between sender and listener, and what it adds
// (Microsoft's protocol guide, "relay-hybrid-connections-protocol"; found
// missing by review): a sender's path suffix and query on a WebSocket connect
// reach the listener in the accept's address; a token in the Authorization
// header is read when no other is there; the relay appends itself to `Via`
// both ways; a bare `sb-hc-x` query word is not a protocol parameter.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

const ENTITIES = {
  hybridConnections: [
    { name: 'echo', requiresClientAuthorization: true },
    { name: 'open', requiresClientAuthorization: false },
  ],
};

describe('what passes through the relay as on Azure', () => {
  it("a sender's path suffix and query reach the listener in the accept's address; its token may be scoped to the suffix", async (t) => {
    const r = await startTestRelay(t, ENTITIES);
    const listenUrl = wsUrl(r.url, '/$hc/echo?sb-hc-action=listen');
    const l = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => l.close());
    // Spellings of the leg's reject parameters a sender might try (before: the listener's accept became a reject).
    const senderUrl = wsUrl(r.url, '/$hc/echo/room/7?tenant=42&statusCode=500&status%43ode=503&STATUSDESCRIPTION=x&sb-hc-statusCode&sb-hc-action=connect&sb-hc-id=trace-1');
    // Scoped to the suffix: covers /echo/room/...; before, the relay answered 404 to any suffix.
    const opening = openWebSocket(senderUrl, { headers: { ServiceBusAuthorization: tokenFor(wsUrl(r.url, '/$hc/echo/room')) } });
    const { accept } = await l.next<{ accept: { address: string; id: string } }>();
    const address = new URL(accept.address);
    assert.equal(address.pathname, '/$hc/echo/room/7');
    assert.equal(address.searchParams.get('tenant'), '42');
    assert.equal(address.searchParams.get('sb-hc-action'), 'accept');
    // The listener is told the sender's tracking id, as Azure tells it; the address keeps the relay's own.
    assert.equal(accept.id, 'trace-1');
    assert.notEqual(address.searchParams.get('sb-hc-id'), 'trace-1');
    // The relay reads statusCode on the listener's leg as a reject: a sender's never rides along.
    assert.equal(address.searchParams.get('statusCode'), null);
    assert.equal(address.searchParams.get('statusDescription'), null);
    assert.equal(address.searchParams.get('sb-hc-statusCode'), null);
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await opening;
    t.after(() => sender.terminate());
    const echoed = new Promise<string>((resolve) => leg.once('message', (d) => resolve(String(d))));
    sender.send('through the suffix');
    assert.equal(await echoed, 'through the suffix');

    // A raw # (no client sends one, Node's parser lets it through) is escaped: it would end the address.
    const fragmented = rawUpgrade(t, r.port, '/$hc/echo/a#b?x=c#d&sb-hc-action=connect', { ServiceBusAuthorization: tokenFor(wsUrl(r.url, '/$hc/echo')) });
    const second = (await l.next<{ accept: { address: string } }>()).accept;
    const secondAddress = new URL(second.address);
    assert.deepEqual([secondAddress.pathname, secondAddress.searchParams.get('x'), secondAddress.hash], ['/$hc/echo/a%23b', 'c#d', '']);
    const secondLeg = await openWebSocket(second.address);
    t.after(() => secondLeg.terminate());
    assert.equal((await fragmented).status, 101);

    const elsewhere = await upgradeRefusal(senderUrl, { headers: { ServiceBusAuthorization: tokenFor(wsUrl(r.url, '/$hc/echo/other')) } });
    assert.deepEqual(elsewhere, { status: 403, code: 'TokenScopeInvalid' });
    // A listener's path names its hybrid connection: echo/room is none.
    const deeper = wsUrl(r.url, '/$hc/echo/room?sb-hc-action=listen');
    assert.deepEqual(await upgradeRefusal(deeper, { headers: { ServiceBusAuthorization: tokenFor(deeper) } }), { status: 404, code: 'EntityNotFound' });
  });

  it('reads a token from the Authorization header when no other is there, and keeps it from the listener; passes a sender\'s own Authorization through where no token is needed', async (t) => {
    const r = await startTestRelay(t, ENTITIES);
    const listeners = await Promise.all(
      ['echo', 'open'].map(async (entity) => {
        const url = wsUrl(r.url, `/$hc/${entity}?sb-hc-action=listen`);
        const l = await RawListener.connect(url, tokenFor(url));
        t.after(() => l.close());
        return l;
      }),
    );
    const [secured, open] = listeners;
    const url = `${r.url}/echo/x`;
    const asked = httpRequest(url, { headers: { authorization: tokenFor(url) } });
    const { request } = await secured.next<{ request: { id: string; requestHeaders: Record<string, string> } }>();
    assert.equal(request.requestHeaders.authorization, undefined);
    secured.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 204 } }));
    // Before: 401 TokenMissing.
    assert.equal((await asked).status, 204);

    const own = httpRequest(`${r.url}/open/x`, { headers: { authorization: 'Bearer for-the-listener' } });
    const second = (await open.next<{ request: { id: string; requestHeaders: Record<string, string> } }>()).request;
    assert.equal(second.requestHeaders.authorization, 'Bearer for-the-listener');
    open.ws.send(JSON.stringify({ response: { requestId: second.id, statusCode: 204 } }));
    assert.equal((await own).status, 204);
  });

  it('appends itself to Via on the request and on the listener\'s response, not on its own answers; keeps a bare sb-hc- query word', async (t) => {
    const r = await startTestRelay(t, ENTITIES);
    const listenUrl = wsUrl(r.url, '/$hc/open?sb-hc-action=listen');
    const l = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => l.close());
    const asked = httpRequest(`${r.url}/open/x?sb-hc-undefined&sb-hc-id=t1&a=1`, { headers: { via: '1.1 corporate-proxy' } });
    const { request } = await l.next<{ request: { id: string; requestTarget: string; requestHeaders: Record<string, string> } }>();
    assert.equal(request.requestTarget, '/open/x?sb-hc-undefined&a=1');
    assert.equal(request.requestHeaders.via, '1.1 corporate-proxy, 1.1 127.0.0.1');
    l.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, responseHeaders: { Via: '1.1 app-gateway' } } }));
    const answered = await asked;
    assert.equal(answered.status, 200);
    assert.equal(answered.headers.via, '1.1 app-gateway, 1.1 127.0.0.1');
    const relayAnswer = await httpRequest(`${r.url}/nothing-here/x`);
    assert.equal(relayAnswer.status, 404);
    assert.equal(relayAnswer.headers.via, undefined);
  });
});
