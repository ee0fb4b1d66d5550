// The relay's own query parameters (sb-hc-token, sb-hc-action, sb-hc-id,
// sb-hc-statusCode, sb-hc-statusDescription) are read in any ASCII case, as
// they are stripped from what a listener sees in any case, and as Azure's
// service reads them (ASP.NET's query is case-insensitive; Microsoft's clients
// strip sb-hc-* with OrdinalIgnoreCase). Before, they were read in lower case
// (camel case for the status pair) only: a sender's `Sb-Hc-Token=...` was
// stripped and refused 401 TokenMissing, a listener's leg dialed with
// `Sb-Hc-Action=accept` was refused 400, and a reject spelled
// `SB-HC-STATUSCODE=403` spliced the connection instead.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { paramInAnyCase } from '../../src/http/query-params.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { listenOn, openWebSocket, upgradeStatus } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const RELAY = { hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }] };

/** `address` with its sb-hc-action and sb-hc-id names spelled in other ASCII cases. */
function mixedCase(address: string): string {
  return address.replace('sb-hc-action=', 'Sb-Hc-Action=').replace('sb-hc-id=', 'SB-HC-ID=');
}

describe('sb-hc-* query parameters in any ASCII case', () => {
  it("a sender's HTTP request with its token as Sb-Hc-Token reaches the listener, the token stripped and its own Authorization passed on", async (t) => {
    const relay = await startTestRelay(t, RELAY);
    let seen: IncomingMessage | undefined;
    await startHycoHttpsListener(t, relay.url, (req, res) => {
      seen = req;
      req.resume();
      res.end('ok');
    });
    const token = encodeURIComponent(tokenFor(`${relay.url}/echo/x`));
    const r = await httpRequest(`${relay.url}/echo/x?a=1&Sb-Hc-Token=${token}&b=2`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assert.equal(r.status, 200, `${r.status} ${r.body.toString()}`);
    assert.equal(r.body.toString(), 'ok');
    assert.equal(seen?.url, '/echo/x?a=1&b=2');
    // The token came in the query: Authorization is the sender's business with the listener, as with sb-hc-token.
    assert.equal(seen?.headers.authorization, 'Basic dXNlcjpwYXNz');
  });

  /** A sender's connect (its path and headers, given a token for the entity) and the listener's leg dialed at `leg(address)`: the message the sender sends, as the listener's leg reads it. */
  async function relayedMessage(t: TestContext, sender: (token: string) => { path: string; headers: Record<string, string> }, leg: (address: string) => string, check: (accept: { id: string; address: string }) => void) {
    const relay = await startTestRelay(t, RELAY);
    const listener = await listenOn(t, relay.url, 'echo');
    const { path, headers } = sender(tokenFor(wsUrl(relay.url, '/$hc/echo')));
    const opening = openWebSocket(wsUrl(relay.url, path), { headers });
    opening.catch(() => {});
    const { accept } = await listener.next<{ accept: { id: string; address: string } }>();
    check(accept);
    const listenerLeg = await openWebSocket(leg(accept.address));
    t.after(() => listenerLeg.terminate());
    const senderWs = await opening;
    t.after(() => senderWs.terminate());
    const heard = withTimeout(new Promise<string>((resolve) => listenerLeg.once('message', (data) => resolve(String(data)))), 5000, "the sender's message at the listener");
    senderWs.send('hello');
    assert.equal(await heard, 'hello');
  }

  it("a sender's WebSocket connect as Sb-Hc-Action, with SB-HC-TOKEN and Sb-Hc-Id, opens, its tracking id the accept's id", async (t) => {
    const sender = (token: string) => ({ path: `/$hc/echo?Sb-Hc-Action=connect&SB-HC-TOKEN=${encodeURIComponent(token)}&Sb-Hc-Id=tracked-1&q=1`, headers: {} });
    await relayedMessage(t, sender, (address) => address, (accept) => {
      // The tracking id, read as sb-hc-id is: the listener is told it as the accept's id.
      assert.equal(accept.id, 'tracked-1');
      assert.doesNotMatch(accept.address, /token|tracked/i);
      assert.match(accept.address, /&q=1$/);
    });
  });

  it("a listener's leg dialed as Sb-Hc-Action=accept and SB-HC-ID is spliced to its sender", async (t) => {
    const sender = (token: string) => ({ path: '/$hc/echo?sb-hc-action=connect', headers: { ServiceBusAuthorization: token } });
    await relayedMessage(t, sender, mixedCase, () => {});
  });

  it("a listener's reject as SB-HC-STATUSCODE and Sb-Hc-StatusDescription fails the sender with that status", async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const listener = await listenOn(t, relay.url, 'echo');
    const senderUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const opening = openWebSocket(senderUrl, { headers: { ServiceBusAuthorization: tokenFor(senderUrl) } });
    opening.catch(() => {});
    const { accept } = await listener.next<{ accept: { address: string } }>();
    const status = await upgradeStatus(`${accept.address}&SB-HC-STATUSCODE=403&Sb-Hc-StatusDescription=${encodeURIComponent('Go away')}`);
    assert.equal(status, 410, 'the reject handshake itself fails, as the listener expects');
    await assert.rejects(opening, (err: { status?: number; statusMessage?: string }) => err.status === 403 && err.statusMessage === 'Go away');
  });

  it('an operator endpoint takes a Manage token as SB-HC-TOKEN', async (t) => {
    const relay = await startTestRelay(t, RELAY);
    const token = encodeURIComponent(tokenFor(`${relay.url}/`));
    assert.equal((await httpRequest(`${relay.url}/$relay/stats?SB-HC-TOKEN=${token}`)).status, 200);
    assert.equal((await httpRequest(`${relay.url}/$relay/stats`)).status, 401);
  });
});

describe('paramInAnyCase', () => {
  it('finds the first parameter of the name in any ASCII case, as URLSearchParams.get finds the first of the exact name; A-Z fold only', () => {
    const params = new URLSearchParams('a=0&SB-HC-ID=first&sb-hc-id=second&sb-hc-to%E2%84%AAen=kelvin');
    assert.equal(paramInAnyCase(params, 'sb-hc-id'), 'first');
    assert.equal(paramInAnyCase(params, 'Sb-Hc-Id'), 'first');
    assert.equal(paramInAnyCase(params, 'sb-hc-action'), null);
    // The Kelvin sign (U+212A) is not a K: toLowerCase would fold it.
    assert.equal(paramInAnyCase(params, 'sb-hc-token'), null);
  });
});
