// Client certificates (docs/security.md, "Client certificates"): with
// listen.tls.caFile and requestCert, listen.tls.requireClientCert
// "listeners" makes a listener need a certificate from that CA on top of
// its SAS token (control channel and rendezvous legs), while senders and
// pub/sub clients connect without one; "all" refuses anyone without one in
// the TLS handshake.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientTls, makePki, type TestPki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

function mtlsListen(pki: TestPki, requireClientCert: 'listeners' | 'all'): Record<string, unknown> {
  return {
    host: '127.0.0.1',
    port: 0,
    tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile, caFile: pki.caFile, requestCert: true, requireClientCert },
  };
}

describe('client certificates for listeners (mutual TLS on top of SAS)', () => {
  it('lets in a listener with a certificate from listen.tls.caFile, and refuses one from another CA or none (403 ClientCertificateRequired)', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    const refused = pki.issueClient('intruder', { untrusted: true });
    const relay = await startTestRelay(t, { listen: mtlsListen(pki, 'listeners') });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const token = tokenFor(listenUrl);

    const required = { status: 403, code: 'ClientCertificateRequired' };
    assert.deepEqual(await upgradeRefusal(listenUrl, { ...clientTls(pki, refused), headers: { ServiceBusAuthorization: token } }), required);
    assert.deepEqual(await upgradeRefusal(listenUrl, { ...clientTls(pki), headers: { ServiceBusAuthorization: token } }), required);
    // The certificate is on top of SAS, not instead of it.
    assert.deepEqual(await upgradeRefusal(listenUrl, clientTls(pki, allowed)), { status: 401, code: 'TokenMissing' });

    const listener = await RawListener.connect(listenUrl, token, clientTls(pki, allowed));
    t.after(() => listener.close());

    // A sender needs no certificate; the listener's rendezvous leg does.
    const sendUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const senderOpen = openWebSocket(sendUrl, { ...clientTls(pki), headers: { ServiceBusAuthorization: tokenFor(sendUrl) } });
    const { accept } = await listener.next<{ accept: { address: string } }>();
    assert.deepEqual(await upgradeRefusal(accept.address, clientTls(pki)), required);
    const leg = await openWebSocket(accept.address, clientTls(pki, allowed));
    const sender = await senderOpen;
    t.after(() => sender.terminate());
    leg.on('message', (m: Buffer) => leg.send(`echo ${m}`));
    sender.send('mutual');
    assert.equal(await withTimeout(new Promise<string>((r) => sender.once('message', (m) => r(String(m)))), 5000, 'echo'), 'echo mutual');
    leg.terminate();
  });

  it('with requireClientCert "all", refuses a client without a trusted certificate in the TLS handshake', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('operator');
    const refused = pki.issueClient('intruder', { untrusted: true });
    const relay = await startTestRelay(t, { listen: mtlsListen(pki, 'all') });
    const health = `${relay.url}/$relay/health`;
    assert.equal((await httpRequest(health, { tls: clientTls(pki, allowed) })).status, 200);
    await assert.rejects(httpRequest(health, { tls: clientTls(pki, refused) }));
    await assert.rejects(httpRequest(health, { tls: clientTls(pki) }));
  });
});
