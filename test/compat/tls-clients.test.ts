// Microsoft's clients, unmodified, against a relay with listen.tls: hyco-ws
// and hyco-https over wss:// and https:// (explicit URIs on the test's port,
// and the packages' own URI helpers, which always build port 443),
// @azure/web-pubsub-client over wss:// and @azure/web-pubsub over https://
// without allowInsecureConnection. None of them takes a CA option, so each
// runs in a child process given the test CA through NODE_EXTRA_CA_CERTS, as
// a user would run them (test/helpers/client-process.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { makePki, type TestPki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { runClientScript } from '../helpers/client-process.ts';
import { HUB, HUB_KEY, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay } from '../helpers/relay.ts';

function tlsOverrides(pki: TestPki, port = 0): Record<string, unknown> {
  return pubsubOverrides({
    listen: { host: '127.0.0.1', port, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } },
    hybridConnections: [
      { name: 'echo', requiresClientAuthorization: true },
      { name: 'web', requiresClientAuthorization: true },
    ],
  });
}

/**
 * hyco-ws listener on `echo` and a hyco-ws sender; hyco-https listener on
 * `web` and an https sender (a small GET, and a 300 kB POST, which travels
 * through a rendezvous leg). Addresses come from LISTEN_WS, SEND_WS,
 * LISTEN_HTTP and HTTP_URL, each a function of the relay's base in BASE and
 * NS; every result is one JSON line.
 */
const HYCO_SCRIPT = `
import WebSocket from 'hyco-ws';
import https from 'hyco-https';
const { KEY_NAME, KEY, NS, BASE } = process.env;
const uris = process.env.HELPERS === '1'
  ? {
      listenWs: WebSocket.createRelayListenUri(NS, 'echo'),
      sendWs: WebSocket.createRelaySendUri(NS, 'echo'),
      listenHttp: https.createRelayListenUri(NS, 'web'),
      http: https.createRelayHttpsUri(NS, 'web'),
    }
  : {
      listenWs: BASE.replace('https:', 'wss:') + '/$hc/echo?sb-hc-action=listen',
      sendWs: BASE.replace('https:', 'wss:') + '/$hc/echo?sb-hc-action=connect',
      listenHttp: BASE.replace('https:', 'wss:') + '/$hc/web?sb-hc-action=listen',
      http: BASE + '/web',
    };
const out = (o) => console.log(JSON.stringify(o));
const fail = (where) => (e) => { out({ error: where + ': ' + (e && (e.code || e.message)) }); process.exit(1); };
out({ uris });
const wsServer = WebSocket.createRelayedServer(
  { server: uris.listenWs, token: () => WebSocket.createRelayToken(uris.listenWs, KEY_NAME, KEY) },
  (ws) => ws.on('message', (m) => ws.send('echo: ' + m)),
);
wsServer.on('error', fail('hyco-ws listener'));
const httpServer = https.createRelayedServer(
  { server: uris.listenHttp, token: () => https.createRelayToken(uris.listenHttp, KEY_NAME, KEY) },
  (req, res) => {
    let n = 0;
    req.on('data', (c) => (n += c.length));
    req.on('end', () => res.end(req.method + ' ' + req.url + ' ' + n));
  },
);
httpServer.on('error', fail('hyco-https listener'));
httpServer.listen();
await Promise.all([new Promise((r) => wsServer.once('listening', r)), new Promise((r) => httpServer.once('listening', r))]);
const sender = WebSocket.relayedConnect(uris.sendWs, WebSocket.createRelayToken(uris.sendWs, KEY_NAME, KEY), (ws) => ws.send('hi over wss'));
sender.on('error', fail('hyco-ws sender'));
out({ ws: String(await new Promise((r) => sender.once('message', r))) });
sender.close();
const ask = (method, path, body) =>
  new Promise((resolve, reject) => {
    const url = uris.http + path;
    const req = https.request(url, { method, headers: { ServiceBusAuthorization: https.createRelayToken(uris.http, KEY_NAME, KEY) } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
out({ get: await ask('GET', '/hello?x=1').catch(fail('https GET')) });
out({ post: await ask('POST', '/upload', Buffer.alloc(300000, 7)).catch(fail('https POST')) });
wsServer.close();
httpServer.close();
process.exit(0);
`;

function hycoEnv(pki: TestPki | undefined, base: string, helpers: boolean): Record<string, string> {
  return {
    ...(pki ? { NODE_EXTRA_CA_CERTS: pki.caFile } : {}),
    KEY_NAME: ROOT_KEY_NAME,
    KEY: ROOT_KEY,
    BASE: base,
    NS: '127.0.0.1',
    HELPERS: helpers ? '1' : '0',
  };
}

function assertHycoWorked(lines: unknown[], stderr: string): void {
  const all = Object.assign({}, ...(lines.filter((l) => typeof l === 'object') as object[])) as Record<string, any>;
  assert.equal(all.error, undefined, `${all.error} ${stderr}`);
  assert.equal(all.ws, 'echo: hi over wss');
  assert.deepEqual(all.get, { status: 200, text: 'GET /web/hello?x=1 0' });
  assert.deepEqual(all.post, { status: 200, text: 'POST /web/upload 300000' });
}

describe('Microsoft clients over TLS', () => {
  it('hyco-ws and hyco-https, unmodified, over wss:// and https:// on the relay port (both modes, a body through a rendezvous leg)', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, tlsOverrides(pki));
    const { lines, code, stderr } = await runClientScript(t, HYCO_SCRIPT, hycoEnv(pki, relay.url, false));
    assertHycoWorked(lines, stderr);
    assert.equal(code, 0);
  });

  it('hyco-ws refuses the relay when the test CA is not trusted', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, tlsOverrides(pki));
    const { lines, code } = await runClientScript(t, HYCO_SCRIPT, hycoEnv(undefined, relay.url, false));
    assert.equal(code, 1);
    const error = (lines.find((l) => typeof l === 'object' && l !== null && 'error' in l) as { error: string }).error;
    assert.match(error, /^hyco-ws listener: UNABLE_TO_VERIFY_LEAF_SIGNATURE|^hyco-https listener: UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  });

  it("hyco-ws and hyco-https with the packages' own URI helpers (wss://NS:443, https://NS) against a relay on 127.0.0.1:443", async (t) => {
    const pki = makePki(t);
    let relay;
    try {
      relay = await startTestRelay(t, tlsOverrides(pki, 443));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES') {
        t.skip(`127.0.0.1:443 cannot be bound here (${code}): run as root with the port free to test the URI helpers`);
        return;
      }
      throw err;
    }
    assert.equal(relay.url, 'https://127.0.0.1:443');
    const { lines, code, stderr } = await runClientScript(t, HYCO_SCRIPT, hycoEnv(pki, relay.url, true));
    const uris = (lines[0] as { uris: Record<string, string> }).uris;
    assert.equal(uris.listenWs, 'wss://127.0.0.1:443/$hc/echo?sb-hc-action=listen');
    assert.equal(uris.http, 'https://127.0.0.1/web');
    assertHycoWorked(lines, stderr);
    assert.equal(code, 0);
  });

  it('mints a client token over https:// whose audience names https:// (REST :generateToken, as a TokenCredential gets one)', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, tlsOverrides(pki));
    const url = `${relay.url}/api/hubs/${HUB}/:generateToken?api-version=2024-12-01`;
    const minted = await httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` }, tls: { ca: pki.ca } });
    assert.equal(minted.status, 200, String(minted.body));
    const token = JSON.parse(String(minted.body)).token as string;
    // Before: http://, whatever the connection.
    assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).aud, `${relay.url}/client/hubs/${HUB}`);
    assert.match(relay.url, /^https:\/\//);
  });

  it('@azure/web-pubsub-client over wss:// and @azure/web-pubsub over https:// without allowInsecureConnection', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, tlsOverrides(pki));
    const script = `
      import { WebPubSubClient } from '@azure/web-pubsub-client';
      import { WebPubSubServiceClient } from '@azure/web-pubsub';
      const out = (o) => console.log(JSON.stringify(o));
      const service = new WebPubSubServiceClient('Endpoint=' + process.env.BASE + ';AccessKey=' + process.env.HUB_KEY + ';Version=1.0;', process.env.HUB);
      const { url } = await service.getClientAccessToken({ roles: ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'] });
      out({ url: url.split('?')[0] });
      const client = new WebPubSubClient(url, { keepAliveIntervalInMs: 1000 });
      const got = [];
      client.on('group-message', (e) => got.push(e.message.data));
      client.on('server-message', (e) => got.push(e.message.data));
      await client.start();
      await client.joinGroup('g');
      await client.sendToGroup('g', { from: 'client' }, 'json');
      await service.group('g').sendToAll({ from: 'rest' });
      const deadline = Date.now() + 10000;
      while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      out({ got });
      await client.stop();
      process.exit(0);
    `;
    const { lines, code, stderr } = await runClientScript(t, script, { NODE_EXTRA_CA_CERTS: pki.caFile, BASE: relay.url, HUB, HUB_KEY });
    assert.equal(code, 0, stderr);
    assert.deepEqual(lines[0], { url: `${relay.url.replace('https:', 'wss:')}/client/hubs/${HUB}` });
    assert.deepEqual(lines[1], { got: [{ from: 'client' }, { from: 'rest' }] });
    assert.match(accessUrl(relay.url), /^wss:/);
  });
});
