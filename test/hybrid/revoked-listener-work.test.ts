// A listener the relay closes for a reason of its own (its SAS rule revoked on
// reload, its token expired, a broken protocol) loses, at once, what it was
// told and has not taken up: a request it was asked to dial for goes on to
// another listener under a new address, and a connect it was offered fails.
// The rendezvous id in an address is a leg's only credential: before, the
// revoked listener could still dial it during its closing handshake (or
// after, the request having gone on under the same address) and take the
// request, body and all, while the listener that was picked was refused.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { it } from 'node:test';
import WebSocket from 'ws';
import { buildConfig } from '../../src/config/load.ts';
import { RawListener, staleLeg, upgradeRefusal } from '../helpers/raw-listener.ts';
import { ROOT_KEY, startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const TENANT = { keyName: 'tenant', key: 'tenant-key-0123456789' };

type DialNotice = { request: { address: string; id: string; requestTarget?: string } };
type AcceptNotice = { accept: { address: string; id: string } };

/** A relay whose `tenant` rule (Listen) a reload removes; closing handshakes may take 5 s (the window looked at). */
async function relayWithRevocableRule(t: { after(fn: () => void): void }) {
  let withTenant = true;
  const overrides = () => ({
    sas: [{ keyName: 'root', key: ROOT_KEY, rights: ['Manage'] }, ...(withTenant ? [{ ...TENANT, rights: ['Listen'] }] : [])],
    hybridConnections: [{ name: 'open', requiresClientAuthorization: false }],
    timeouts: { httpResponseMs: 10000, acceptMs: 10000, closeHandshakeMs: 5000 },
  });
  const relay = await startTestRelay(t, overrides(), { loadConfig: () => buildConfig(testConfig(overrides())) });
  const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
  const revoke = () => {
    withTenant = false;
    assert.ok(relay.reload('api').ok);
  };
  const listener = async (credential?: typeof TENANT) => {
    const l = await RawListener.connect(listenUrl, tokenFor(listenUrl, credential));
    t.after(() => l.close());
    return l;
  };
  return { relay, revoke, listener };
}

it('a request a revoked listener was asked to dial for goes on to another under a new address; the old one serves nothing, even during its closing handshake', async (t) => {
  const { relay, revoke, listener } = await relayWithRevocableRule(t);
  const revoked = await listener(TENANT);
  // Chunked: the listener is asked to dial for it.
  const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(`${relay.url}/open/secret`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end('top-secret-body');
  });
  t.after(() => answer.catch(() => undefined));
  const told = await revoked.next<DialNotice>();
  assert.equal(told.request.requestTarget, undefined);
  const good = await listener();
  // The revoked listener does not read its close frame: its closing handshake lasts closeHandshakeMs.
  revoked.ws.pause();
  revoke();
  // It dials the address it was given, during that handshake.
  const stale = await staleLeg(told.request.address);
  assert.deepEqual(stale.messages, [], 'the revoked listener got the request');
  assert.ok(stale.outcome === 'closed 1000' || stale.outcome === 'refused 404', stale.outcome);
  // The listener left is asked to dial an address of its own, and answers.
  const rerouted = await good.next<DialNotice>();
  assert.notEqual(rerouted.request.address, told.request.address);
  const leg = new WebSocket(rerouted.request.address);
  t.after(() => leg.terminate());
  leg.on('error', () => undefined);
  const body: Buffer[] = [];
  leg.on('message', (d: Buffer, binary: boolean) => {
    if (binary) body.push(d);
    if (binary && Buffer.concat(body).toString() === 'top-secret-body') {
      leg.send(JSON.stringify({ response: { requestId: rerouted.request.id, statusCode: 200, responseHeaders: {}, body: true } }));
      leg.send(Buffer.from('answered by the listener left'));
    }
  });
  assert.deepEqual(await withTimeout(answer, 10000, 'the answer'), { status: 200, body: 'answered by the listener left' });
});

it('a connect offered to a revoked listener fails at once (502 ListenerGone); its leg is refused during its closing handshake', async (t) => {
  const { relay, revoke, listener } = await relayWithRevocableRule(t);
  const revoked = await listener(TENANT);
  const refused = upgradeRefusal(wsUrl(relay.url, '/$hc/open?sb-hc-action=connect'));
  const offered = await revoked.next<AcceptNotice>();
  revoked.ws.pause();
  const started = Date.now();
  revoke();
  const refusal = await refused;
  assert.equal(refusal.status, 502);
  assert.ok(Date.now() - started < 5000, 'the sender waited for the closing handshake');
  const stale = await staleLeg(offered.accept.address);
  assert.equal(stale.outcome, 'refused 404');
});
