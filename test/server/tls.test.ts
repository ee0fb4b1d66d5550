// listen.tls (docs/security.md, "TLS on the one port"): with certificates
// the port serves https:// and wss:// for every surface; a client that does
// not trust the certificate is refused; the certificate is replaced on
// SIGHUP and when its files change (an atomic rename included) without
// dropping open connections, and a bad new one is refused while the old one
// stays. Certificates are made at run time by test/helpers/certs.ts.
import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { connect as netConnect } from 'node:net';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { clientTls, makePki, type CertFiles, type TestPki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { ALL_ROLES, HUB, HUB_KEY, RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { captureLogger, metricValue, startRelayProcess, startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { ListenTlsConfig } from '../../src/config/types.ts';
import { readCertificates } from '../../src/server/tls.ts';

function tlsListen(pki: TestPki, files: CertFiles = pki.server): Record<string, unknown> {
  return { host: '127.0.0.1', port: 0, tls: { certFile: files.certFile, keyFile: files.keyFile } };
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is served. */
/** `n` TCP connections to `port` that never begin their TLS handshake, destroyed with the test. */
function stalledConnections(t: Parameters<typeof startTestRelay>[0], port: number, n: number): Promise<ReturnType<typeof netConnect>[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const socket = netConnect(port, '127.0.0.1');
      socket.on('error', () => {});
      t.after(() => socket.destroy());
      await once(socket, 'connect');
      return socket;
    }),
  );
}

/** `n` TLS connections to `port` that finished their handshake and send nothing, destroyed with the test. */
async function idleTlsConnections(t: Parameters<typeof startTestRelay>[0], port: number, pki: TestPki, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const socket = connect({ host: '127.0.0.1', port, ca: pki.ca, servername: 'localhost' });
    socket.on('error', () => {});
    t.after(() => socket.destroy());
    await once(socket, 'secureConnect');
  }
}

function servedFingerprint(port: number, pki: TestPki): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, ca: pki.ca, servername: 'localhost' }, () => {
        const fingerprint = socket.getPeerCertificate().fingerprint256;
        socket.end();
        resolve(fingerprint);
      });
      socket.once('error', reject);
    }),
    5000,
    'TLS handshake',
  );
}

const fingerprintOf = (files: CertFiles) => new X509Certificate(readFileSync(files.certFile)).fingerprint256;

/** Copies `files` over the relay's certificate files (as an operator renewing them by hand would). */
function installAt(target: CertFiles, files: CertFiles): void {
  copyFileSync(files.certFile, target.certFile);
  copyFileSync(files.keyFile, target.keyFile);
}

/**
 * A relay serving the certificate in a folder of its own (`folder`, files `live`), for the tests that replace the
 * folder whole; `served(files)` waits (10 s at most) until a new TLS handshake gets the certificate of `files`.
 */
async function relayServingFolder(t: Parameters<typeof startTestRelay>[0]) {
  const pki = makePki(t);
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-tls-folder-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const folder = join(dir, 'tls');
  const live = { certFile: join(folder, 'cert.pem'), keyFile: join(folder, 'key.pem') };
  mkdirSync(folder);
  installAt(live, pki.server);
  const { log, lines } = captureLogger();
  const relay = await startTestRelay(t, { listen: tlsListen(pki, live) }, { log });
  const served = async (files: CertFiles, what: string) => {
    const deadline = Date.now() + 10000;
    while ((await servedFingerprint(relay.port, pki)) !== fingerprintOf(files)) {
      assert.ok(Date.now() < deadline, `${what} was not served within 10 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { pki, folder, live, lines, served };
}

describe('TLS on the one port', () => {
  it('serves https:// and wss:// for hybrid connections (both modes), pub/sub, REST and ops', async (t) => {
    const pki = makePki(t);
    const tls = clientTls(pki);
    const relay = await startTestRelay(t, pubsubOverrides({ listen: tlsListen(pki) }));
    assert.match(relay.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(relay.publicUrl, relay.url);

    const health = await httpRequest(`${relay.url}/$relay/health`, { tls });
    assert.equal(health.status, 200);

    // WebSocket mode: the accept a listener is given names a wss:// rendezvous address.
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    assert.match(listenUrl, /^wss:/);
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), tls);
    t.after(() => listener.close());
    const sendUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const senderOpen = openWebSocket(sendUrl, { ...tls, headers: { ServiceBusAuthorization: tokenFor(sendUrl) } });
    const { accept } = await listener.next<{ accept: { address: string } }>();
    assert.match(accept.address, /^wss:\/\/127\.0\.0\.1:\d+\/\$hc\/echo\?sb-hc-action=accept/);
    const leg = await openWebSocket(accept.address, tls);
    const sender = await senderOpen;
    t.after(() => sender.terminate());
    leg.on('message', (m: Buffer) => leg.send(`echo ${m}`));
    sender.send('over TLS');
    const reply = await withTimeout(new Promise<string>((r) => sender.once('message', (m) => r(String(m)))), 5000, 'echo');
    assert.equal(reply, 'echo over TLS');
    leg.terminate();

    // HTTP mode: the request reaches the listener on its control channel, the answer comes back over https.
    const answered = httpRequest(`${relay.url}/echo/hello`, { tls, headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/echo`) } });
    const { request } = await listener.next<{ request: { id: string } }>();
    listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, statusDescription: 'OK', responseHeaders: { 'content-type': 'text/plain' }, body: true } }));
    listener.ws.send(Buffer.from('hello over https'));
    const res = await answered;
    assert.equal(res.status, 200);
    assert.equal(String(res.body), 'hello over https');

    // Pub/sub over wss://, and REST over https://.
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ALL_ROLES }), undefined, t, tls);
    assert.match(accessUrl(relay.url), /^wss:/);
    await client.waitFor((m) => m.event === 'connected');
    assert.equal((await client.request({ type: 'joinGroup', group: 'g' })).success, true);
    const restPath = `/api/hubs/${HUB}/groups/g/:send`;
    const rest = await httpRequest(`${relay.url}${restPath}?api-version=2024-01-01`, {
      method: 'POST',
      tls,
      headers: { authorization: `Bearer ${signJwt({ aud: `${relay.url}${restPath}` }, HUB_KEY, 300)}`, 'content-type': 'text/plain' },
      body: Buffer.from('from REST over https'),
    });
    assert.equal(rest.status, 202);
    const message = await client.waitFor((m) => m.type === 'message');
    assert.equal(message.data, 'from REST over https');
  });

  it('is refused by a client that does not trust the certificate, and speaks no plain HTTP on the port', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, { listen: tlsListen(pki) });
    const untrusted = (err: NodeJS.ErrnoException) => err.code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE';
    await assert.rejects(httpRequest(`${relay.url}/$relay/health`), untrusted);
    await assert.rejects(openWebSocket(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect')), untrusted);
    await assert.rejects(httpRequest(`${relay.url.replace('https:', 'http:')}/$relay/health`, { timeoutMs: 5000 }));
  });

  it('closes a connection whose handshake does not finish within firstByteMs, silent or trickling', async (t) => {
    const pki = makePki(t);
    const logs = captureLogger('debug');
    const relay = await startTestRelay(t, { listen: tlsListen(pki), timeouts: { firstByteMs: 500 } }, { log: logs.log });
    const opened = await Promise.all([0, 1].map(async (trickle) => {
      const socket = netConnect(relay.port, '127.0.0.1');
      socket.on('error', () => {});
      t.after(() => socket.destroy());
      await once(socket, 'connect');
      let closed = false;
      socket.on('close', () => (closed = true));
      socket.resume();
      // The first bytes of a ClientHello, and no more.
      if (trickle) socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
      return () => closed;
    }));
    // Bounds far past firstByteMs: before, both stayed open for good.
    await until(() => opened.every((closed) => closed()), 5000, 'both connections to be closed');
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'firstByteMs' }), 2);
    // A handshake that fails at once (plain HTTP on the TLS port, an old TLS version) is no such limit:
    // before, each counted as one, and alerts on the limit fired for the internet's noise.
    await assert.rejects(httpRequest(`${relay.url.replace('https:', 'http:')}/$relay/health`, { timeoutMs: 5000 }));
    await assert.rejects(httpRequest(`${relay.url}/$relay/health`, { tls: { ...clientTls(pki), maxVersion: 'TLSv1.1', minVersion: 'TLSv1' } as never }));
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'firstByteMs' }), 2);
    // Each logged once, at debug (before: twice, from 'tlsClientError' and from 'clientError').
    await until(() => logs.lines().filter((l) => l.event === 'tls.handshake_failed').length >= 2, 5000, 'the failed handshakes logged');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(logs.lines().filter((l) => l.event === 'tls.handshake_failed').length, 2);
  });

  /**
   * A TLS relay whose `limit` is 3, taken by three connections that never begin their handshake: a fourth is closed
   * at once, not left to its handshake, and counted under `limit`. `release()` closes the three: a request is served
   * again, and two finished handshakes held leave room for a third (each counts once, its TCP socket's place passed
   * to the TLS one).
   */
  async function takenBeforeHandshakes(t: Parameters<typeof startTestRelay>[0], limit: 'httpConnectionsPerNode' | 'httpConnectionsPerAddress') {
    const pki = makePki(t);
    const relay = await startTestRelay(t, { listen: tlsListen(pki), limits: { [limit]: 3 }, timeouts: { firstByteMs: 20000 } });
    const tls = clientTls(pki);
    const stalled = await stalledConnections(t, relay.port, 3);
    await assert.rejects(
      withTimeout(httpRequest(`${relay.url}/$relay/health`, { tls }), 5000, 'a request past the limit'),
      (err: Error) => !/timed out/.test(err.message),
      'a fourth connection is closed at once, not left to its handshake',
    );
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit }), 1);
    const release = async () => {
      for (const socket of stalled) socket.destroy();
      await untilAnswered(async () => (await httpRequest(`${relay.url}/$relay/health`, { tls }).catch(() => undefined))?.status === 200, 5000, 'a request once they closed');
      await idleTlsConnections(t, relay.port, pki, 2);
      assert.equal((await httpRequest(`${relay.url}/$relay/health`, { tls })).status, 200);
    };
    return { pki, relay, release };
  }

  it('counts connections still in their handshake against httpConnectionsPerNode', async (t) => {
    // Before, only finished handshakes counted: any number of connections could sit in theirs at once.
    const { release } = await takenBeforeHandshakes(t, 'httpConnectionsPerNode');
    await release();
  });

  it('counts connections by client address from their TCP accept, handshake included, and a finished handshake once', async (t) => {
    const { pki, relay, release } = await takenBeforeHandshakes(t, 'httpConnectionsPerAddress');
    // Another address (127.0.0.2) completes its handshake and is served meanwhile.
    const otherTcp = netConnect({ host: '127.0.0.1', port: relay.port, localAddress: '127.0.0.2' });
    otherTcp.on('error', () => {});
    t.after(() => otherTcp.destroy());
    const other = connect({ socket: otherTcp, ca: pki.ca, servername: 'localhost' });
    other.on('error', () => {});
    t.after(() => other.destroy());
    await withTimeout(once(other, 'secureConnect'), 5000, 'the other address handshake');
    other.write('GET /$relay/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    const answer = await withTimeout(
      new Promise<string>((resolve) => {
        let text = '';
        other.on('data', (c: Buffer) => (text += c.toString('latin1')));
        other.on('close', () => resolve(text));
      }),
      5000,
      'the other address answered',
    );
    assert.match(answer, /^HTTP\/1\.1 200 /);
    await release();
  });

  it('does not hold a drain for a connection that finished its handshake and sent nothing (a browser\'s preconnect)', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, { listen: tlsListen(pki), timeouts: { shutdownMs: 20000 } });
    const socket = connect({ port: relay.port, host: '127.0.0.1', ...clientTls(pki) });
    socket.on('error', () => {});
    t.after(() => socket.destroy());
    await once(socket, 'secureConnect');
    const startedAt = Date.now();
    // Before, it held the drain until firstByteMs (5 s) answered it 408.
    await withTimeout(relay.close(), 8000, 'the drain');
    assert.ok(Date.now() - startedAt < 3000, `the drain took ${Date.now() - startedAt} ms`);
  });

  it('refuses a TLS version below listen.tls.minVersion', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, { listen: { ...tlsListen(pki), tls: { ...(tlsListen(pki).tls as object), minVersion: 'TLSv1.3' } } });
    await assert.rejects(httpRequest(`${relay.url}/$relay/health`, { tls: { ...clientTls(pki), maxVersion: 'TLSv1.2' } as never }));
    assert.equal((await httpRequest(`${relay.url}/$relay/health`, { tls: clientTls(pki) })).status, 200);
  });

  it('applies a new listen.tls.minVersion and new certificate files on reload, and watches their folder (before: neither, the keeper compared the live config with itself)', async (t) => {
    const pki = makePki(t);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-tls-reload-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'relay.json');
    const moved = { certFile: join(dir, 'moved', 'cert.pem'), keyFile: join(dir, 'moved', 'key.pem') };
    mkdirSync(join(dir, 'moved'));
    const renewed = pki.issueServer('moved');
    installAt(moved, renewed);
    // Issued now: issuing writes into the PKI's folder, which the relay watches from the start.
    const again = pki.issueServer('moved-again');
    const config = (tls: Record<string, unknown>) => ({ ...pubsubOverrides(), listen: { ...tlsListen(pki), tls: { ...(tlsListen(pki).tls as object), ...tls } } });
    writeFileSync(file, JSON.stringify(testConfig(config({ minVersion: 'TLSv1.2' }))));
    const relay = await startTestRelay(t, config({ minVersion: 'TLSv1.2' }), { loadConfig: () => loadConfig(file, {}, {}) });
    const tls12 = { ...clientTls(pki), maxVersion: 'TLSv1.2' } as never;
    assert.equal((await httpRequest(`${relay.url}/$relay/health`, { tls: tls12 })).status, 200);

    // Another minimum version alone (the same files).
    writeFileSync(file, JSON.stringify(testConfig(config({ minVersion: 'TLSv1.3' }))));
    const outcome = relay.reload('signal');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual(outcome.changes.changed, ['listen.tls']);
    await assert.rejects(httpRequest(`${relay.url}/$relay/health`, { tls: tls12 }), Error, 'TLS 1.2 after the reload to TLSv1.3');
    // Files in another folder.
    writeFileSync(file, JSON.stringify(testConfig(config({ minVersion: 'TLSv1.3', ...moved }))));
    assert.ok(relay.reload('signal').ok);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));
    // The new folder is watched: a certificate renamed over the file there is served.
    const staged = { certFile: join(dir, 'moved', 'next.pem'), keyFile: join(dir, 'moved', 'next.key') };
    installAt(staged, again);
    renameSync(staged.keyFile, moved.keyFile);
    renameSync(staged.certFile, moved.certFile);
    const deadline = Date.now() + 10000;
    while ((await servedFingerprint(relay.port, pki)) !== fingerprintOf(again)) {
      assert.ok(Date.now() < deadline, 'the certificate renamed into the new folder was not served within 10 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    // A config naming certificate files that do not load refuses the reload, with the reason, and changes
    // nothing: before, it answered 200 (applying the rest) and kept the old certificate, said only in the log.
    const broken = join(dir, 'broken.pem');
    writeFileSync(broken, 'not a certificate');
    writeFileSync(file, JSON.stringify(testConfig(config({ minVersion: 'TLSv1.2', ...moved, certFile: broken }))));
    const refused = relay.reload('signal');
    assert.equal(refused.ok, false);
    assert.match((refused as { problem: string }).problem, /listen\.tls\.certFile[^]*is kept/);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(again));
    // Nor the minimum version the refused config asked for.
    await assert.rejects(httpRequest(`${relay.url}/$relay/health`, { tls: tls12 }), Error, 'still TLSv1.3 at least');
  });

  it('reloads the rest of the config while the certificate served has expired and its files are unchanged', async (t) => {
    // Only a new set of files is refused: the expired one nobody replaced yet (a failed renewal) must not
    // block an urgent reload, a leaked SAS rule removed, say (the first version refused every reload then).
    const pki = makePki(t);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-tls-expired-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'relay.json');
    const overrides = { ...pubsubOverrides(), listen: tlsListen(pki) };
    writeFileSync(file, JSON.stringify(testConfig(overrides)));
    const relay = await startTestRelay(t, overrides, { loadConfig: () => loadConfig(file, {}, {}) });
    writeFileSync(file, JSON.stringify(testConfig({ ...overrides, limits: { httpConnectionsPerNode: 123 } })));
    // Expired by the clock the check reads: twenty years on, for this one reload.
    const now = Date.now;
    Date.now = () => now() + 20 * 365 * 86_400_000;
    let outcome;
    try {
      outcome = relay.reload('api');
    } finally {
      Date.now = now;
    }
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual(outcome.changes.changed, ['limits']);
  });

  it('refuses to start with a certificate not valid yet, saying from when', async (t) => {
    const pki = makePki(t);
    const early = pki.issueServerValidFrom('early', new Date(Date.now() + 3_600_000));
    // Before: served, and every client refused the handshake ("certificate is not yet valid").
    await assert.rejects(startTestRelay(t, { listen: tlsListen(pki, early) }), /listen\.tls\.certFile: the certificate in \S+ is not valid before \w+ +\d+ [\d:]+ \d{4} GMT/);
  });

  it('refuses a key of another type than the certificate\'s, at start and when renamed in (before: OpenSSL took it without a word and every handshake failed)', async (t) => {
    const pki = makePki(t);
    // An RSA key beside the EC certificate: a renewal that changes the key type, its key written before its certificate.
    const rsaKey = join(pki.dir, 'rsa.key');
    writeFileSync(rsaKey, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(startTestRelay(t, { listen: tlsListen(pki, { certFile: pki.server.certFile, keyFile: rsaKey }) }), /listen\.tls\.keyFile: the key in \S+rsa\.key is not the certificate's/);

    const live = { certFile: join(pki.dir, 'live.pem'), keyFile: join(pki.dir, 'live.key') };
    installAt(live, pki.server);
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, { listen: tlsListen(pki, live) }, { log });
    copyFileSync(rsaKey, `${live.keyFile}.tmp`);
    renameSync(`${live.keyFile}.tmp`, live.keyFile);
    relay.reload('signal');
    await until(() => lines().some((l) => l.event === 'tls.certificate_refused' || l.event === 'tls.certificate_loaded'), 10000, 'the key of another type to be read');
    assert.match(String(lines().find((l) => l.event === 'tls.certificate_refused')?.err), /listen\.tls\.keyFile/);
    // The pair served before still is, and handshakes complete.
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(pki.server));
  });

  it('names listen.tls.keyFile when the key file holds no key it can use: empty, the certificate, an encrypted key (before: listen.tls.certFile, with OpenSSL\'s "DECODER routines::unsupported")', async (t) => {
    const pki = makePki(t);
    const encrypted = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' });
    const cases: [string, string | Buffer, RegExp][] = [
      ['empty.key', '', /listen\.tls\.keyFile: \S+empty\.key holds no PEM private key/],
      ['cert-as.key', readFileSync(pki.server.certFile), /listen\.tls\.keyFile: \S+cert-as\.key holds no PEM private key/],
      ['encrypted.key', encrypted, /listen\.tls\.keyFile: the key in \S+encrypted\.key is encrypted/],
    ];
    for (const [name, content, problem] of cases) {
      const keyFile = join(pki.dir, name);
      writeFileSync(keyFile, content);
      await assert.rejects(startTestRelay(t, { listen: tlsListen(pki, { certFile: pki.server.certFile, keyFile }) }), problem);
    }
  });

  it('refuses to start with a listen.tls.caFile holding no certificate (before: taken without a word, and every client certificate refused)', async (t) => {
    const pki = makePki(t);
    for (const content of ['garbage\n', readFileSync(pki.server.keyFile, 'latin1')]) {
      const caFile = join(pki.dir, 'not-a-ca.pem');
      writeFileSync(caFile, content);
      const listen = { ...tlsListen(pki), tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile, caFile, requestCert: true, requireClientCert: 'all' } };
      await assert.rejects(startTestRelay(t, { listen }), /listen\.tls\.caFile: no PEM certificate in \S+not-a-ca\.pem/);
    }
  });

  it('checks the chain sent after the certificate, at start and when renamed in: an expired intermediate is served but warned of; the earliest expiry is a metric', async (t) => {
    const pki = makePki(t);
    const day = 86_400_000;
    const seconds = (file: string) => Math.floor(Date.parse(new X509Certificate(readFileSync(file)).validTo) / 1000);
    const expiry = (relay: Parameters<typeof metricValue>[0], certificate: string) => metricValue(relay, 'edge_relay_tls_certificate_expiry_timestamp_seconds', { certificate });
    // Expired yesterday. Before: served without a word, every client refused the handshake.
    const stale = pki.issueServerChain('stale', new Date(Date.now() - 2 * day), new Date(Date.now() - day));
    const staleWarning = (lines: Record<string, unknown>[]) => {
      const warning = lines.find((l) => l.event === 'tls.chain_certificate_invalid');
      assert.ok(warning, 'a warning');
      assert.equal(warning.subject, 'CN=stale-ca');
      assert.equal(warning.problem, 'expired');
      assert.equal(Date.parse(String(warning.at)) / 1000, seconds(stale.intermediateFile));
      assert.equal(warning.served, fingerprintOf(stale));
    };

    // Valid, expiring before the server's certificate: no warning; the chain's expiry is the intermediate's.
    const good = pki.issueServerChain('good', new Date(Date.now() - day), new Date(Date.now() + 3_600_000));
    const live = { certFile: join(pki.dir, 'live.pem'), keyFile: join(pki.dir, 'live.key') };
    installAt(live, good);
    const { log, lines } = captureLogger('info');
    const relay = await startTestRelay(t, { listen: tlsListen(pki, live) }, { log });
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(good));
    assert.equal(await expiry(relay, 'server'), seconds(good.certFile));
    assert.equal(await expiry(relay, 'chain'), seconds(good.intermediateFile));
    assert.equal(lines().filter((l) => l.event === 'tls.chain_certificate_invalid').length, 0);

    // The stale chain renamed in: taken, warned of; an intermediate expired when read does not hold the metric
    // in the past (a cross-signature sent on purpose would, for good): the server certificate's expiry.
    copyFileSync(stale.keyFile, `${live.keyFile}.tmp`);
    copyFileSync(stale.certFile, `${live.certFile}.tmp`);
    renameSync(`${live.keyFile}.tmp`, live.keyFile);
    renameSync(`${live.certFile}.tmp`, live.certFile);
    await until(() => lines().some((l) => l.event === 'tls.chain_certificate_invalid'), 10000, 'the stale chain to be taken');
    staleWarning(lines());
    assert.equal(await expiry(relay, 'chain'), seconds(stale.certFile));
    // What a client trusting only the root makes of it (one with another path to a root, a cross-signed case, skips it).
    await assert.rejects(servedFingerprint(relay.port, pki), /expired/);

    // At start, the same.
    const startLogs = captureLogger('info');
    await startTestRelay(t, { listen: tlsListen(pki, stale) }, { log: startLogs.log });
    staleWarning(startLogs.lines());
  });

  it('reads the chain under every label OpenSSL takes: a TRUSTED CERTIFICATE first is the server\'s, an X509 CERTIFICATE after it an intermediate (found by review)', (t) => {
    const pki = makePki(t);
    const day = 86_400_000;
    const stale = pki.issueServerChain('stale', new Date(Date.now() - 2 * day), new Date(Date.now() - day));
    const [server, intermediate] = readFileSync(stale.certFile, 'latin1').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)!;
    const relabel = (block: string, label: string) => block.replace(/CERTIFICATE-----/g, `${label}-----`);
    const file = join(pki.dir, 'relabelled.pem');
    writeFileSync(file, `${relabel(server, 'TRUSTED CERTIFICATE')}\n${relabel(intermediate, 'X509 CERTIFICATE')}\n`);
    const tls: ListenTlsConfig = { certFile: file, keyFile: stale.keyFile, minVersion: 'TLSv1.2', requestCert: false, requireClientCert: 'none' };
    const set = readCertificates(tls);
    // Before the fix: the intermediate was taken for the server's certificate (its expiry refused the file).
    assert.equal(set.subject, 'CN=stale');
    assert.deepEqual(set.chainProblems.map((p) => [p.subject, p.problem]), [['CN=stale-ca', 'expired']]);
    // A TRUSTED block after the first is not sent (OpenSSL skips it): not checked either.
    writeFileSync(file, `${server}\n${relabel(intermediate, 'TRUSTED CERTIFICATE')}\n`);
    assert.deepEqual(readCertificates(tls).chainProblems, []);
  });

  it('keeps serving the old certificate while a new one is not valid yet, and takes the new one once it is, renamed in or named by a reload', async (t) => {
    const pki = makePki(t);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-tls-valid-from-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const live = { certFile: join(dir, 'live.pem'), keyFile: join(dir, 'live.key') };
    installAt(live, pki.server);
    const file = join(dir, 'relay.json');
    // Logged at info after the reload too (a reload sets the config's level).
    const config = (files: CertFiles, extra: Record<string, unknown> = {}) => ({ ...pubsubOverrides(), ...extra, log: { level: 'info' }, listen: tlsListen(pki, files) });
    writeFileSync(file, JSON.stringify(testConfig(config(live))));
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, config(live), { log, loadConfig: () => loadConfig(file, {}, {}) });
    const logged = (event: string) => lines().filter((l) => l.event === event);

    // A renewal valid from a few seconds on, renamed over the live files (a CA whose clock runs ahead).
    const soon = pki.issueServerValidFrom('soon', new Date(Date.now() + 3000));
    copyFileSync(soon.keyFile, `${live.keyFile}.tmp`);
    copyFileSync(soon.certFile, `${live.certFile}.tmp`);
    renameSync(`${live.keyFile}.tmp`, live.keyFile);
    renameSync(`${live.certFile}.tmp`, live.certFile);
    await until(() => logged('tls.certificate_refused').length === 1, 10000, 'the early certificate to be refused');
    const refusal = logged('tls.certificate_refused')[0];
    assert.match(String(refusal.err), /is not valid before/);
    const retryAt = Date.parse(String(refusal.retryAt));
    assert.ok(retryAt >= Date.parse(new X509Certificate(readFileSync(soon.certFile)).validFrom), `retry at ${refusal.retryAt}`);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(pki.server));
    // Nothing else changes the files: it is read again once valid, by itself.
    await until(() => logged('tls.certificate_loaded').length === 1, 15000, 'the certificate to be taken once valid');
    assert.equal(logged('tls.certificate_loaded')[0].reason, 'now-valid');
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(soon));

    // A reload naming other files, valid from a few seconds on: the rest of it is applied (not refused for
    // good files whose time has not come), the certificate served stays until the new one is valid.
    const next = pki.issueServerValidFrom('next', new Date(Date.now() + 3000));
    writeFileSync(file, JSON.stringify(testConfig(config(next, { limits: { httpConnectionsPerNode: 321 } }))));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual([...(outcome.changes.changed as string[])].sort(), ['limits', 'listen.tls']);
    assert.equal(logged('tls.certificate_refused').length, 2);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(soon));
    await until(() => logged('tls.certificate_loaded').length === 2, 15000, 'the reloaded certificate to be taken once valid');
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(next));
  });

  it('takes a new certificate on SIGHUP without dropping an open connection, and says https:// when it starts', async (t) => {
    const pki = makePki(t);
    const live = { certFile: join(pki.dir, 'live.pem'), keyFile: join(pki.dir, 'live.key') };
    installAt(live, pki.server);
    const relay = await startRelayProcess(t, { listen: tlsListen(pki, live), log: { level: 'info' } });
    assert.match(relay.url, /^https:\/\//);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(pki.server));

    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki));
    t.after(() => listener.close());

    // The files change in place (no rename: the folder watch fires too, but SIGHUP is what is tested here).
    const renewed = pki.issueServer('renewed');
    installAt(live, renewed);
    relay.child.kill('SIGHUP');
    await until(() => relay.stderr().includes('tls.certificate_loaded'), 10000, 'certificate reloaded');
    // Read on the signal, before the folder watch's debounce would have.
    assert.match(relay.stderr(), /"event":"tls.certificate_loaded","reason":"signal"/);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));

    // A bad certificate on the next SIGHUP is refused, and said so; the renewed one stays.
    writeFileSync(live.certFile, 'not a certificate\n');
    relay.child.kill('SIGHUP');
    await until(() => relay.stderr().includes('tls.certificate_refused'), 10000, 'certificate refused');
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));

    // The listener opened before is still there and still works.
    const sendUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const senderOpen = openWebSocket(sendUrl, { ...clientTls(pki), headers: { ServiceBusAuthorization: tokenFor(sendUrl) } });
    const { accept } = await listener.next<{ accept: { address: string } }>();
    const leg = await openWebSocket(accept.address, clientTls(pki));
    const sender = await senderOpen;
    leg.terminate();
    sender.terminate();
  });

  it('follows a certificate folder replaced whole, renamed in or removed and made again: later renewals in it are taken too (before: its watch stayed on the old folder and saw none)', async (t) => {
    const { pki, folder, live, lines, served } = await relayServingFolder(t);
    const loaded = () => lines().filter((l) => l.event === 'tls.certificate_loaded').length;
    const renewed = [pki.issueServer('folder-1'), pki.issueServer('folder-2'), pki.issueServer('folder-3'), pki.issueServer('folder-4')];

    // A new folder renamed over the old one (the old kept aside): the old folder's watch sees its move.
    mkdirSync(`${folder}.new`);
    installAt({ certFile: join(`${folder}.new`, 'cert.pem'), keyFile: join(`${folder}.new`, 'key.pem') }, renewed[0]);
    renameSync(folder, `${folder}.old`);
    renameSync(`${folder}.new`, folder);
    await served(renewed[0], 'the certificate of the folder renamed in');
    // A renewal in the folder renamed in.
    installAt({ certFile: `${live.certFile}.tmp`, keyFile: `${live.keyFile}.tmp` }, renewed[1]);
    renameSync(`${live.keyFile}.tmp`, live.keyFile);
    renameSync(`${live.certFile}.tmp`, live.certFile);
    await served(renewed[1], 'a renewal in the folder renamed in');

    // The folder removed, and made again a while later.
    rmSync(folder, { recursive: true });
    await until(() => lines().some((l) => l.event === 'tls.certificate_refused'), 10000, 'the removed files to be refused');
    await new Promise((r) => setTimeout(r, 2500));
    mkdirSync(folder);
    installAt(live, renewed[2]);
    await served(renewed[2], 'the certificate of the folder made again');
    installAt(live, renewed[3]);
    await served(renewed[3], 'a renewal in the folder made again');
    assert.equal(loaded(), 4);
    // Refused once while the folder was away, not once per look for it.
    assert.equal(lines().filter((l) => l.event === 'tls.certificate_refused').length, 1);
  });

  it('follows a certificate folder removed and made again under the same inode number (ext4 gives a freed one out again): later renewals in it are taken (found by the review of the day\'s changes: before, its device and inode alone said it was the same folder)', async (t) => {
    const { pki, folder, live, lines, served } = await relayServingFolder(t);
    const renewed = [pki.issueServer('inode-1'), pki.issueServer('inode-2'), pki.issueServer('inode-3')];
    const inodeOf = (path: string) => statSync(path).ino;

    // Made again at once (within the keeper's debounce), and a while later (after it looked for the folder).
    const before = inodeOf(folder);
    rmSync(folder, { recursive: true });
    mkdirSync(folder);
    // Where the filesystem gives another inode the case is the other test's.
    if (inodeOf(folder) !== before) return t.skip('this filesystem gave the folder made again another inode number');
    installAt(live, renewed[0]);
    await served(renewed[0], 'the certificate of the folder made again at once');
    installAt(live, renewed[1]);
    await served(renewed[1], 'a renewal in the folder made again at once');

    rmSync(folder, { recursive: true });
    await until(() => lines().some((l) => l.event === 'tls.certificate_refused'), 10000, 'the removed files to be refused');
    await new Promise((r) => setTimeout(r, 1500));
    mkdirSync(folder);
    installAt(live, renewed[2]);
    await served(renewed[2], 'the certificate of the folder made again later');
    installAt(live, pki.server);
    await served(pki.server, 'a renewal in the folder made again later');
  });

  it('takes a certificate renamed over the old file (as certbot and Kubernetes do), and keeps the old one when the new one is bad', async (t) => {
    const pki = makePki(t);
    const live = { certFile: join(pki.dir, 'live.pem'), keyFile: join(pki.dir, 'live.key') };
    installAt(live, pki.server);
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, { listen: tlsListen(pki, live) }, { log });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const open = await RawListener.connect(listenUrl, tokenFor(listenUrl), clientTls(pki));
    t.after(() => open.close());
    const logged = (event: string) => lines().filter((l) => l.event === event).length;

    // Atomic replacement: new files written beside, then renamed over the live ones. No signal.
    const renewed = pki.issueServer('renewed');
    copyFileSync(renewed.keyFile, `${live.keyFile}.tmp`);
    copyFileSync(renewed.certFile, `${live.certFile}.tmp`);
    renameSync(`${live.keyFile}.tmp`, live.keyFile);
    renameSync(`${live.certFile}.tmp`, live.certFile);
    await until(() => logged('tls.certificate_loaded') === 1, 10000, 'the renamed certificate to be loaded');
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));

    // A certificate whose key is not the one beside it: refused with a log line, the renewed one stays.
    const other = pki.issueServer('other');
    copyFileSync(other.certFile, `${live.certFile}.tmp`);
    renameSync(`${live.certFile}.tmp`, live.certFile);
    await until(() => logged('tls.certificate_refused') === 1, 10000, 'the mismatched certificate to be refused');
    assert.match(String(lines().find((l) => l.event === 'tls.certificate_refused')!.err), /listen\.tls\.keyFile/);
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));
    // Not PEM at all, read on a reload: the same.
    writeFileSync(live.certFile, 'not a certificate\n');
    relay.reload('signal');
    await until(() => logged('tls.certificate_refused') >= 2, 10000, 'the garbage certificate to be refused');
    assert.equal(await servedFingerprint(relay.port, pki), fingerprintOf(renewed));
    // The listener opened at the start was never dropped.
    assert.equal(open.ws.readyState, open.ws.OPEN);
    assert.equal(logged('tls.certificate_loaded'), 1);
  });
});
