// Client certificates (docs/security.md, "Client certificates"): with
// listen.tls.caFile and requestCert, listen.tls.requireClientCert
// "listeners" makes a listener need a certificate from that CA on top of
// its SAS token (control channel and rendezvous legs), while senders and
// pub/sub clients connect without one; "all" refuses anyone without one in
// the TLS handshake.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { clientTls, makePki, type CertFiles, type TestPki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { buildConfig } from '../../src/config/load.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

function mtlsListen(pki: TestPki, requireClientCert: 'listeners' | 'all'): Record<string, unknown> {
  return {
    host: '127.0.0.1',
    port: 0,
    tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile, caFile: pki.caFile, requestCert: true, requireClientCert },
  };
}

/** A TLS connection to the relay (on `options.port`, or over `options.socket`), closed with the test; `prepare` sees it first. */
function openTls(t: TestContext, options: ConnectionOptions, prepare?: (socket: TLSSocket) => void): Promise<TLSSocket> {
  return withTimeout(
    new Promise<TLSSocket>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', ...options }, () => resolve(socket));
      prepare?.(socket);
      socket.once('error', reject);
      t.after(() => socket.destroy());
    }),
    5000,
    'a TLS connection',
  );
}

/** Sends `request` on a raw connection; the status line of its answer. */
function statusLine(socket: TLSSocket, request: string): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve) => {
      let text = '';
      const onData = (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (!text.includes('\r\n\r\n')) return;
        socket.off('data', onData);
        resolve(text.slice(0, text.indexOf('\r\n')));
      };
      socket.on('data', onData);
      socket.write(request);
    }),
    5000,
    'an answer',
  );
}

/** A listener's upgrade request for `listenUrl`'s entity, its token in the query. */
function listenRequest(listenUrl: string): string {
  const { pathname, search } = new URL(listenUrl);
  return (
    `GET ${pathname}${search}&sb-hc-token=${encodeURIComponent(tokenFor(listenUrl))} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

/** A relay whose listeners need a client certificate from `cas`, listen.tls.caFile, which `replaceCas` replaces (renamed over it, as its folder is watched). */
async function relayWithClientCas(t: TestContext, pki: TestPki, cas: Buffer): Promise<{ listenUrl: string; replaceCas: (pem: Buffer) => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const caFile = join(dir, 'clients.pem');
  writeFileSync(caFile, cas);
  const listen = mtlsListen(pki, 'listeners');
  const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
  const replaceCas = (pem: Buffer) => {
    writeFileSync(`${caFile}.next`, pem);
    renameSync(`${caFile}.next`, caFile);
  };
  return { listenUrl: wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen'), replaceCas };
}

/** How an upgrade to `listenUrl` with `cert` (a new TLS connection) is answered. */
function listenWith(pki: TestPki, listenUrl: string, cert: CertFiles): Promise<{ status: number; code?: string }> {
  return upgradeRefusal(listenUrl, { ...clientTls(pki, cert), headers: { ServiceBusAuthorization: tokenFor(listenUrl) } });
}

/** What the listener's channel became within `ms`: closed (its code and reason), or still 'open'. */
function closedWithin(listener: RawListener, ms: number): Promise<{ code: number; reason: string } | 'open'> {
  return Promise.race([listener.closed, new Promise<'open'>((r) => setTimeout(() => r('open'), ms))]);
}

/** The listener was closed 1008 ClientCertificateRevoked, and a new handshake with `sent` is refused as it would be (403). */
async function assertRevoked(listener: RawListener, pki: TestPki, listenUrl: string, sent: CertFiles): Promise<void> {
  const closed = await withTimeout(listener.closed, 10000, 'the listener to be closed');
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /ClientCertificateRevoked/);
  assert.deepEqual(await listenWith(pki, listenUrl, sent), { status: 403, code: 'ClientCertificateRequired' });
}

/** Once `applied` says the changed CAs are in force: the listener is still open, and a new handshake with `sent` is let in (101). */
async function assertKept(listener: RawListener, pki: TestPki, listenUrl: string, sent: CertFiles, applied: () => Promise<boolean>): Promise<void> {
  await untilAnswered(applied, 10000, 'the new CA applied');
  const outcome = await closedWithin(listener, 500);
  assert.equal(outcome, 'open', `the listener was closed: ${JSON.stringify(outcome)}`);
  assert.equal((await listenWith(pki, listenUrl, sent)).status, 101);
}

/**
 * A listener connected with `cert` while `listed` alone is in listen.tls.caFile; then the other CA is listed before
 * it (`newcomer`, which it signed, let in tells the change applied): the listener is kept (assertKept).
 */
async function assertKeptWithOtherCaAdded(t: TestContext, pki: TestPki, listed: Buffer, cert: CertFiles, newcomer: CertFiles): Promise<void> {
  const { listenUrl, replaceCas } = await relayWithClientCas(t, pki, listed);
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, cert));
  t.after(() => listener.close());
  replaceCas(Buffer.concat([readFileSync(join(pki.dir, 'other-ca.pem')), listed]));
  await assertKept(listener, pki, listenUrl, cert, async () => (await listenWith(pki, listenUrl, newcomer)).status === 101);
}

// Extensions as test/helpers/certs.ts gives its CAs (with their key's identifier, which links what a CA issued to a
// certificate made for the CA's key) and its clients.
const CA_EXTENSIONS = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n';
const CLIENT_EXTENSIONS = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
const DAY_MS = 86_400_000;

/**
 * A listener whose certificate the test CA signed, connected during a rotation (the test CA and the other CA
 * listed) with a chain of its certificate and `link`: a certificate for the test CA's name and key that the other
 * CA issued (`extensions` and dates as given). The handshake takes it: OpenSSL looks in its store first, and the
 * test CA there signed the listener's certificate. Then the rotation ends, the other CA alone listed: whether the
 * listener stays is what the recheck makes of the link.
 */
async function listenerLinkedToOtherCa(
  t: TestContext,
  link: { name: string; extensions: string; validFrom?: Date; until?: Date },
): Promise<{ listener: RawListener; pki: TestPki; listenUrl: string; allowed: CertFiles; sent: CertFiles }> {
  const pki = makePki(t);
  const allowed = pki.issueClient('factory-listener');
  pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
  const otherCa = readFileSync(join(pki.dir, 'other-ca.pem'));
  const { name, ...options } = link;
  const linked = pki.issueCertificate(name, { subject: '/CN=edge-relay ca', keyOf: 'ca', issuer: 'other-ca', ...options });
  const sent = { certFile: pki.bundle(`${name}-chain.pem`, [allowed.certFile, linked.certFile]), keyFile: allowed.keyFile };
  const { listenUrl, replaceCas } = await relayWithClientCas(t, pki, Buffer.concat([pki.ca, otherCa]));
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, sent));
  t.after(() => listener.close());
  replaceCas(otherCa);
  return { listener, pki, listenUrl, allowed, sent };
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

  it('closes a listener whose certificate the new listen.tls.caFile no longer signs (1008 ClientCertificateRevoked), and keeps one it still does', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    const newcomer = pki.issueClient('newcomer', { untrusted: true });
    const otherCa = readFileSync(join(pki.dir, 'other-ca.pem'));
    // caFile in a folder of its own, replaced by renaming a new file over it (the folder is watched).
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'clients.pem');
    writeFileSync(caFile, pki.ca);
    const replaceCas = (pem: Buffer) => {
      writeFileSync(`${caFile}.next`, pem);
      renameSync(`${caFile}.next`, caFile);
    };
    const listen = mtlsListen(pki, 'listeners');
    const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, allowed));
    t.after(() => listener.close());
    // Both CAs: the listener's still signs it.
    replaceCas(Buffer.concat([otherCa, pki.ca]));
    const newcomerIn = async () => (await upgradeRefusal(listenUrl, { ...clientTls(pki, newcomer), headers: { ServiceBusAuthorization: tokenFor(listenUrl) } })).status === 101;
    await untilAnswered(newcomerIn, 10000, 'the new CA applied');
    const stillOpen = await Promise.race([listener.closed.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 300))]);
    assert.ok(stillOpen, 'a listener whose CA is still listed stays');
    // Only the other CA: before, the listener stayed registered and every accept leg it opened was refused 403.
    replaceCas(otherCa);
    const closed = await withTimeout(listener.closed, 10000, 'the listener to be closed');
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /ClientCertificateRevoked/);
  });

  // Found by review: node links the chain a peer sent by names and key ids alone, and a CA's certificate is public.
  it('closes a listener whose certificate only a removed CA signs, however it padded the chain it sent (before: a forged link to a listed CA kept it)', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
    const otherCa = readFileSync(join(pki.dir, 'other-ca.pem'));
    // The listener's certificate, then a made-up "test CA" under a made-up "other CA", then the real other CA.
    const padded = pki.forgeChainTo(allowed, 'other-ca');
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'clients.pem');
    // Both CAs, as during a rotation: the handshake trusts the test CA, which signed the listener's certificate.
    writeFileSync(caFile, Buffer.concat([pki.ca, otherCa]));
    const listen = mtlsListen(pki, 'listeners');
    const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, padded));
    t.after(() => listener.close());
    // The rotation ends: only the other CA, which signed nothing of the listener's.
    writeFileSync(`${caFile}.next`, otherCa);
    renameSync(`${caFile}.next`, caFile);
    const closed = await withTimeout(listener.closed, 10000, 'the listener to be closed');
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /ClientCertificateRevoked/);
  });

  // Found by review: the recheck took as an issuer what OpenSSL does not, a certificate that is not a CA. A listed CA
  // issued a plain leaf for the removed CA's name and key; the peer sent it after its own certificate, and node links
  // the chain by names and key ids. At the handshake OpenSSL looks in its store first, where the removed CA still was.
  it('closes a listener whose certificate only a removed CA signs, though it sent a leaf (CA:FALSE) a listed CA issued for that CA\'s name and key (before: that leaf linked it to the listed CA)', async (t) => {
    const { listener, pki, listenUrl, sent } = await listenerLinkedToOtherCa(t, { name: 'ca-lookalike', extensions: 'basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n' });
    // As a new handshake judges the same chain ("invalid CA certificate").
    await assertRevoked(listener, pki, listenUrl, sent);
  });

  // Found by review: the recheck read no dates. The same path through a CA's certificate (a cross-certificate of the
  // removed CA by a listed one, a path OpenSSL takes: the next test) that has expired.
  it('closes a listener whose certificate only a removed CA signs, though it sent an expired cross-certificate of that CA by a listed one (before: the expired link kept it)', async (t) => {
    const expired = { validFrom: new Date(Date.now() - 2 * DAY_MS), until: new Date(Date.now() - DAY_MS) };
    const { listener, pki, listenUrl, sent } = await listenerLinkedToOtherCa(t, { name: 'ca-crossed', extensions: CA_EXTENSIONS, ...expired });
    // As a new handshake judges the same chain ("certificate has expired").
    await assertRevoked(listener, pki, listenUrl, sent);
  });

  it('keeps a listener whose certificate a removed CA signs when it sent a valid cross-certificate of that CA by a listed one, a path the handshake takes too', async (t) => {
    const { listener, pki, listenUrl, allowed, sent } = await listenerLinkedToOtherCa(t, { name: 'ca-crossed', extensions: CA_EXTENSIONS });
    // Applied once the listener's certificate alone, without the cross-certificate, is refused.
    await assertKept(listener, pki, listenUrl, sent, async () => (await listenWith(pki, listenUrl, allowed)).status === 403);
  });

  // Found by review: the recheck read no dates, OpenSSL checks those of the CA it trusts too.
  it('closes a listener whose CA is listed in the changed listen.tls.caFile only as an expired certificate (before: the expired CA kept it)', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
    const otherCa = readFileSync(join(pki.dir, 'other-ca.pem'));
    // The test CA's name and key, self-signed, its validity over.
    const expired = { validFrom: new Date(Date.now() - 2 * DAY_MS), until: new Date(Date.now() - DAY_MS) };
    const expiredCa = pki.issueCertificate('ca-expired', { subject: '/CN=edge-relay ca', keyOf: 'ca', extensions: CA_EXTENSIONS, ...expired });
    const { listenUrl, replaceCas } = await relayWithClientCas(t, pki, pki.ca);
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, allowed));
    t.after(() => listener.close());
    replaceCas(Buffer.concat([otherCa, readFileSync(expiredCa.certFile)]));
    // As a new handshake judges the same certificate ("certificate has expired").
    await assertRevoked(listener, pki, listenUrl, allowed);
  });

  // OpenSSL trusts a listed certificate as the whole path only when it is self-signed: one that is not needs its issuer.
  it('closes a listener whose own certificate, which its removed CA issued, is listed in the changed listen.tls.caFile (before: listed, it was kept; the handshake refuses it)', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
    const { listenUrl, replaceCas } = await relayWithClientCas(t, pki, pki.ca);
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, allowed));
    t.after(() => listener.close());
    replaceCas(Buffer.concat([readFileSync(join(pki.dir, 'other-ca.pem')), readFileSync(allowed.certFile)]));
    await assertRevoked(listener, pki, listenUrl, allowed);
  });

  it('keeps a listener whose own self-signed certificate (CA:FALSE, a pinned one) is still in the changed listen.tls.caFile', async (t) => {
    const pki = makePki(t);
    const newcomer = pki.issueClient('newcomer', { untrusted: true }); // makes other-ca.pem
    const pinned = pki.issueCertificate('pinned-listener', { subject: '/CN=pinned-listener', extensions: `${CLIENT_EXTENSIONS}subjectKeyIdentifier=hash\n` });
    await assertKeptWithOtherCaAdded(t, pki, readFileSync(pinned.certFile), pinned, newcomer);
  });

  // OpenSSL takes as the CA that ends a path more than node's X509Certificate#ca (basicConstraints CA:TRUE) calls one.
  for (const [kind, extensions] of [
    ['a version 1 root (no extensions)', undefined],
    ['a root with keyUsage keyCertSign and no basicConstraints', 'keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n'],
  ] as const) {
    it(`keeps a listener whose CA, ${kind}, is still in the changed listen.tls.caFile`, async (t) => {
      const pki = makePki(t);
      const newcomer = pki.issueClient('newcomer', { untrusted: true }); // makes other-ca.pem
      const root = pki.issueCertificate('old-root', { subject: '/CN=edge-relay old-root', ...(extensions ? { extensions } : {}) });
      const allowed = pki.issueCertificate('factory-listener', { subject: '/CN=factory-listener', issuer: 'old-root', extensions: CLIENT_EXTENSIONS });
      await assertKeptWithOtherCaAdded(t, pki, readFileSync(root.certFile), allowed, newcomer);
    });
  }

  // Found by review: OpenSSL reads these labels as CAs (the handshake trusted them), the recheck after a change did not.
  for (const label of ['TRUSTED CERTIFICATE', 'X509 CERTIFICATE']) {
    it(`keeps a listener whose CA, written as "${label}", is still in the changed listen.tls.caFile (before: every listener closed as revoked)`, async (t) => {
      const pki = makePki(t);
      const allowed = pki.issueClient('factory-listener');
      pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
      const relabel = (pem: Buffer) => Buffer.from(pem.toString('latin1').replace(/(BEGIN|END) CERTIFICATE/g, `$1 ${label}`), 'latin1');
      const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const caFile = join(dir, 'clients.pem');
      writeFileSync(caFile, relabel(pki.ca));
      const listen = mtlsListen(pki, 'listeners');
      const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
      const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
      const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, allowed));
      t.after(() => listener.close());
      // Another CA added for a rotation; the listener's own stays in the file.
      writeFileSync(`${caFile}.next`, Buffer.concat([readFileSync(join(pki.dir, 'other-ca.pem')), relabel(pki.ca)]));
      renameSync(`${caFile}.next`, caFile);
      const newcomer = pki.issueClient('newcomer-after', { untrusted: true });
      const newcomerIn = async () => (await upgradeRefusal(listenUrl, { ...clientTls(pki, newcomer), headers: { ServiceBusAuthorization: tokenFor(listenUrl) } })).status === 101;
      await untilAnswered(newcomerIn, 10000, 'the new CA applied');
      const outcome = await Promise.race([listener.closed, new Promise<'open'>((r) => setTimeout(() => r('open'), 500))]);
      assert.equal(outcome, 'open', `the listener was closed: ${JSON.stringify(outcome)}`);
    });
  }

  it('refuses a reload that drops listen.tls.caFile while requestCert runs until a restart (before: client certificates were checked against the default public roots, and every listener was closed)', async (t) => {
    const pki = makePki(t);
    const allowed = pki.issueClient('factory-listener');
    const listen = mtlsListen(pki, 'listeners');
    let next: Record<string, unknown> = { listen };
    const relay = await startTestRelay(t, { listen }, { loadConfig: () => buildConfig(testConfig(next)) });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki, allowed));
    t.after(() => listener.close());
    // The operator takes mutual TLS out of the file: requestCert and requireClientCert wait for a restart.
    next = { listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } } };
    const outcome = relay.reload('api');
    assert.equal(outcome.ok, false, JSON.stringify(outcome));
    assert.match(String((outcome as { problem?: string }).problem), /listen\/tls\/caFile/);
    const closed = await Promise.race([listener.closed, new Promise<'open'>((r) => setTimeout(() => r('open'), 500))]);
    assert.equal(closed, 'open', 'the running listener was closed');
    const again = await withTimeout(upgradeRefusal(listenUrl, { ...clientTls(pki, allowed), headers: { ServiceBusAuthorization: tokenFor(listenUrl) } }), 5000, 'upgrade');
    assert.equal(again.status, 101, 'a listener with a certificate from the configured CA was refused');
  });

  for (const mode of ['listeners', 'all'] as const) {
    it(`(${mode}) refuses a listener opened after listen.tls.caFile changed on a keep-alive connection whose certificate the new CAs do not sign`, async (t) => {
      const pki = makePki(t);
      const allowed = pki.issueClient('factory-listener');
      pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
      const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const caFile = join(dir, 'clients.pem');
      writeFileSync(caFile, pki.ca);
      const listen = mtlsListen(pki, mode);
      const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
      const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
      const port = Number(new URL(relay.url).port);
      const tlsNow = () => openTls(t, { port, ...clientTls(pki, allowed) });
      // A keep-alive connection whose handshake the first CA verified.
      const kept = await tlsNow();
      assert.match(await statusLine(kept, `GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`), /^HTTP\/1\.1 200/);
      writeFileSync(`${caFile}.next`, readFileSync(join(pki.dir, 'other-ca.pem')));
      renameSync(`${caFile}.next`, caFile);
      // The new CAs apply: a new connection with the same certificate is refused (in the handshake, with "all").
      const newOneRefused = async () => {
        try {
          const fresh = await tlsNow();
          const line = await statusLine(fresh, listenRequest(listenUrl));
          fresh.destroy();
          return / 403 /.test(line);
        } catch {
          return true;
        }
      };
      await untilAnswered(newOneRefused, 10000, 'the new CA applied');
      // Before, the old connection's handshake vouched for it still: 101, and senders were given to it.
      assert.match(await statusLine(kept, listenRequest(listenUrl)), /^HTTP\/1\.1 403 /);
    });
  }

  it('lets in a listener resuming a TLS session made after listen.tls.caFile changed (its certificate through an intermediate), and resumes none of before', async (t) => {
    const pki = makePki(t);
    const listener = pki.issueClient('via-intermediate', { intermediate: true });
    pki.issueClient('other', { untrusted: true }); // makes other-ca.pem
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'clients.pem');
    writeFileSync(caFile, pki.ca);
    const listen = mtlsListen(pki, 'listeners');
    const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const port = Number(new URL(relay.url).port);
    let session: Buffer | undefined;
    const tlsNow = (resume?: Buffer) =>
      openTls(t, { port, ...clientTls(pki, listener), ...(resume ? { session: resume } : {}) }, (socket) => socket.on('session', (s: Buffer) => (session = s)));
    const listenStatus = (socket: TLSSocket) => statusLine(socket, listenRequest(listenUrl));
    // A session of before the change.
    const early = await tlsNow();
    await until(() => session !== undefined, 5000, 'a session ticket');
    const before = session!;
    early.destroy();
    // Another CA added: the listener's CA is still listed.
    writeFileSync(`${caFile}.next`, Buffer.concat([pki.ca, readFileSync(join(pki.dir, 'other-ca.pem'))]));
    renameSync(`${caFile}.next`, caFile);
    // The change applied: a session of before no longer resumes (a resumption would skip the check against the new CAs).
    await untilAnswered(async () => {
      const s = await tlsNow(before);
      const resumed = s.isSessionReused();
      s.destroy();
      return !resumed;
    }, 10000, 'the CA change applied');
    session = undefined;
    const full = await tlsNow();
    assert.match(await listenStatus(full), /^HTTP\/1\.1 101 /);
    await until(() => session !== undefined, 5000, 'a session ticket');
    const resumed = await tlsNow(session);
    assert.equal(resumed.isSessionReused(), true);
    // Before: 403, the resumed session showing no chain past the listener's certificate to check again.
    assert.match(await listenStatus(resumed), /^HTTP\/1\.1 101 /);
  });

  it('refuses a listener whose TCP connection was accepted before its CA was removed and whose handshake finished after', async (t) => {
    const pki = makePki(t);
    const revoked = pki.issueClient('revoked', { untrusted: true }); // from other-ca.pem
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-client-ca-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'clients.pem');
    writeFileSync(caFile, Buffer.concat([pki.ca, readFileSync(join(pki.dir, 'other-ca.pem'))]));
    const listen = mtlsListen(pki, 'listeners');
    const relay = await startTestRelay(t, { listen: { ...listen, tls: { ...(listen.tls as object), caFile } } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const port = Number(new URL(relay.url).port);
    const tlsNow = (socket?: Socket) => openTls(t, { ...(socket ? { socket } : { port }), ...clientTls(pki, revoked) });
    const listenStatus = (socket: TLSSocket) => statusLine(socket, listenRequest(listenUrl));
    // A TCP connection accepted while both CAs are listed; its handshake comes later.
    const raw = netConnect({ host: '127.0.0.1', port });
    t.after(() => raw.destroy());
    await withTimeout(new Promise((r) => raw.once('connect', r)), 5000, 'a TCP connection');
    await new Promise((r) => setTimeout(r, 100));
    writeFileSync(`${caFile}.next`, pki.ca);
    renameSync(`${caFile}.next`, caFile);
    const freshRefused = async () => {
      const s = await tlsNow();
      const refused = / 403 /.test(await listenStatus(s));
      s.destroy();
      return refused;
    };
    await untilAnswered(freshRefused, 10000, 'the CA change applied (a new connection refused)');
    // Its handshake was checked against the CAs of its accept: trusted as checked against the new ones, it got 101.
    const late = await tlsNow(raw);
    assert.match(await listenStatus(late), /^HTTP\/1\.1 403 /);
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
