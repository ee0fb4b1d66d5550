// The connect event as a handler reads it, raw (no SDK in between): the
// certificate a client presented over TLS (clientCertificates), and a
// ce-signature with one HMAC per access key the hub accepts, two while a
// rotated key is still in its grace (docs/event-handlers.md); its answer with
// null for what it does not set (.NET's SDK), and `disconnected` after a yes
// whose connection was not admitted after all.
import assert from 'node:assert/strict';
import { X509Certificate, createHmac } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { clientTls, makePki } from '../helpers/certs.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { startTestRelay, testConfig } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { gc } from '../helpers/gc.ts';

const KEY = 'connect-key-0123456789abcdef-first';
const KEY_NEW = 'connect-key-0123456789abcdef-second';

interface Received {
  headers: IncomingHttpHeaders;
  body: any;
}

/** A handler that allows every origin, takes every connect and keeps what it got. */
async function connectHandler(t: TestContext): Promise<{ url: string; connects: Received[] }> {
  const connects: Received[] = [];
  const server = createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(200, { 'webhook-allowed-origin': '*' });
      return res.end();
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.headers['ce-eventname'] === 'connect') connects.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      res.writeHead(req.headers['ce-eventname'] === 'connect' ? 200 : 204, { 'content-type': 'application/json' });
      res.end(req.headers['ce-eventname'] === 'connect' ? '{}' : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(() => new Promise((r) => server.close(r)));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/events/{event}`, connects };
}

function hub(accessKey: string, urlTemplate: string) {
  return { name: 'chat', accessKey, eventHandlers: [{ urlTemplate, userEventPattern: '', systemEvents: ['connect'] }] };
}

/** A client that asks for the upgrade at `url` and closes its side 50 ms later, while the connect event is answered. */
function upgradeAndLeave(t: TestContext, port: number, url: string): Socket {
  const leaving = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  cleanupFor(t).after(() => leaving.destroy());
  leaving.on('error', () => undefined);
  const target = new URL(url);
  leaving.write(`GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  setTimeout(() => leaving.end(), 50);
  return leaving;
}

function hmac(key: string, connectionId: string): string {
  return `sha256=${createHmac('sha256', key).update(connectionId).digest('hex')}`;
}

describe('the connect event', () => {
  it('carries the certificate a client presented over TLS (thumbprint and PEM), and none when it presented none', async (t) => {
    const pki = makePki(t);
    const handler = await connectHandler(t);
    const relay = await startTestRelay(t, {
      listen: { host: '127.0.0.1', port: 0, tls: { ...pki.server, caFile: pki.caFile, requestCert: true, requireClientCert: 'listeners' } },
      pubsub: { hubs: [hub(KEY, handler.url)] },
    });
    const device = pki.issueClient('device-7');
    const url = accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'dev' });
    await RawPubSubClient.connect(url, undefined, t, clientTls(pki, device));
    await RawPubSubClient.connect(url, undefined, t, clientTls(pki));
    await until(() => handler.connects.length === 2, 5000, 'two connect events');

    const [withCert, without] = handler.connects;
    const expected = new X509Certificate(readFileSync(device.certFile));
    assert.equal(withCert.body.clientCertificates.length, 1);
    assert.equal(withCert.body.clientCertificates[0].thumbprint, expected.fingerprint.replace(/:/g, ''));
    assert.equal(new X509Certificate(withCert.body.clientCertificates[0].content).fingerprint256, expected.fingerprint256);
    assert.deepEqual(without.body.clientCertificates, []);
  });

  it("carries the upgrade's headers but its credentials and its handshake's own: no authorization, proxy-authorization or cookie (found by the security review: proxy-authorization was passed on)", async (t) => {
    const handler = await connectHandler(t);
    const relay = await startTestRelay(t, { pubsub: { hubs: [hub(KEY, handler.url)] } });
    const headers = { authorization: 'Basic dXNlcjpwYXNz', 'proxy-authorization': 'Basic cHJveHk6c2VjcmV0', cookie: 'session=s3cr3t', 'user-agent': 'device-agent/1.0', 'x-device': 'd-7' };
    await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'dev' }), undefined, t, { headers });
    await until(() => handler.connects.length === 1, 5000, 'the connect event');
    const passed = handler.connects[0].body.headers as Record<string, string[]>;
    assert.deepEqual(passed['user-agent'], ['device-agent/1.0']);
    assert.deepEqual(passed['x-device'], ['d-7']);
    for (const name of ['authorization', 'proxy-authorization', 'cookie', 'sec-websocket-key', 'connection', 'upgrade']) assert.equal(passed[name], undefined, name);
    assert.equal(JSON.stringify(handler.connects[0].body).includes('cHJveHk6c2VjcmV0'), false, 'no credential anywhere in the event');
  });

  it('is signed with every key the hub accepts: the new key and, during its grace, the one it replaced', async (t) => {
    const handler = await connectHandler(t);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-connect-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'relay.json');
    const config = (key: string) => testConfig({ rotationGraceSeconds: 60, pubsub: { hubs: [hub(key, handler.url)] } });
    writeFileSync(file, JSON.stringify(config(KEY)));
    const relay = await startTestRelay(t, config(KEY), { loadConfig: () => loadConfig(file, {}, {}) });

    await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await until(() => handler.connects.length === 1, 5000, 'connect before the rotation');
    const first = handler.connects[0].headers;
    assert.equal(first['ce-signature'], hmac(KEY, String(first['ce-connectionid'])));

    writeFileSync(file, JSON.stringify(config(KEY_NEW)));
    assert.ok(relay.reload('api').ok);
    await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY_NEW }), undefined, t);
    await until(() => handler.connects.length === 2, 5000, 'connect after the rotation');
    const second = handler.connects[1].headers;
    const id = String(second['ce-connectionid']);
    assert.equal(second['ce-signature'], `${hmac(KEY_NEW, id)},${hmac(KEY, id)}`);
  });

  it('is answered before the hub admits, so what changed meanwhile counts: the hub filled up, the client left', async (t) => {
    // A handler that takes 300 ms to say yes.
    const server = createServer((req, res) => {
      if (req.method === 'OPTIONS') {
        res.writeHead(200, { 'webhook-allowed-origin': '*' });
        return res.end();
      }
      req.resume();
      req.on('end', () => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), 300));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise((r) => server.close(r)));
    const { port } = server.address() as { port: number };
    const relay = await startTestRelay(t, { limits: { connectionsPerHub: 2 }, pubsub: { hubs: [hub(KEY, `http://127.0.0.1:${port}/events/{event}`)] } });
    const url = accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' });
    const held = () => relay.pubsub.hub('chat')!.local.connections.size;
    // How the live trace takes each refusal at the limit: authorized clients' under the main cap, not the refusals'.
    const traced: string[] = [];
    const trace = relay.metrics.trace;
    const emit = trace.emit.bind(trace);
    const emitRefusal = trace.emitRefusal.bind(trace);
    trace.emit = (kind, fields) => {
      if (kind === 'limit.refused') traced.push(`${fields.code} authorized`);
      emit(kind, fields);
    };
    trace.emitRefusal = (kind, fields) => {
      if (kind === 'limit.refused') traced.push(`${fields.code} before authorization`);
      emitRefusal(kind, fields);
    };
    t.after(trace.attach(() => {}));

    // Closes its side while the handler answers (before: admitted, 101 and all, and held until idleMs).
    const leaving = upgradeAndLeave(t, relay.port, url);
    await withTimeout(new Promise((r) => leaving.once('close', r)), 5000, 'the relay to close the connection that left');
    assert.equal(held(), 0);

    // Five at once while the handler answers (before: all five admitted past connectionsPerHub 2).
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () => RawPubSubClient.connect(url, undefined, t).then(() => 'open', (err: Error) => err.message)),
    );
    assert.deepEqual([...outcomes].sort(), ['HTTP 429', 'HTTP 429', 'HTTP 429', 'open', 'open']);
    assert.equal(held(), 2);
    // Refused once their tokens were good and the handler said yes (before: traced as refusals before authorization).
    assert.deepEqual(traced, ['connectionsPerHub authorized', 'connectionsPerHub authorized', 'connectionsPerHub authorized']);
  });
});

describe("the connect event's time", () => {
  it('shares timeoutMs between abuse protection and the event: a slow OPTIONS and a slow answer get 504, not twice the wait', async (t) => {
    // Each answer comes after 2.5 s, with timeoutMs 4000: both together are past it. (Margins of a second or more:
    // with 1.2 s, 2 s and a 300 ms margin the bound was within reach of a busy machine's delays.)
    const server = createServer((req, res) => {
      req.resume();
      setTimeout(() => {
        if (req.method === 'OPTIONS') res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
        else res.writeHead(204).end();
      }, 2500);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
    const { port } = server.address() as { port: number };
    const chat = hub(KEY, `http://127.0.0.1:${port}/events/{event}`);
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ ...chat, eventHandlers: [{ ...chat.eventHandlers[0], timeoutMs: 4000 }] }] } });
    const started = Date.now();
    const outcome = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t).then(() => 'open', (err: Error) => err.message);
    // Before: admitted after ~5 s (each of the two had all of timeoutMs). Also before, now and then under the full
    // suite's load: admitted all the same, a collection having taken the event's timeout (the test below).
    assert.equal(outcome, 'HTTP 504');
    assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
    // Once the origin is allowed, the event alone has the whole timeoutMs.
    assert.equal(await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t).then(() => 'open', (err: Error) => err.message), 'open');
  });

  it('times out a handler that never answers though the garbage collector runs meanwhile (before: the connect hung)', async (t) => {
    // Node 20's AbortSignal.any() held AbortSignal.timeout() weakly: a collection while the handler was silent took the
    // timeout with it, and the connect waited for as long as the handler did (here: for good).
    const silent = createServer((req, res) => {
      req.resume();
      if (req.method === 'OPTIONS') res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
      // A connect event is never answered.
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise<void>((r) => (silent.closeAllConnections(), silent.close(() => r()))));
    const { port } = silent.address() as { port: number };
    const chat = hub(KEY, `http://127.0.0.1:${port}/events/{event}`);
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ ...chat, eventHandlers: [{ ...chat.eventHandlers[0], timeoutMs: 500 }] }] } });
    const collecting = setInterval(gc, 20);
    t.after(() => clearInterval(collecting));
    const connecting = RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t).then(() => 'open', (err: Error) => err.message);
    const outcome = await withTimeout(connecting, 8000, 'the answer to a connect whose handler is silent');
    clearInterval(collecting);
    assert.equal(outcome, 'HTTP 504');
  });
});

describe("the connect event's refusals", () => {
  it("reach the client with the handler's own 4xx status (Azure returns it as the answer); 5xx and others stay 500", async (t) => {
    // A handler that refuses each connect with the status the client's user id names.
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(Number(req.headers['ce-userid'])).end('go away'));
    });
    const relay = await startTestRelay(t, { pubsub: { hubs: [hub(KEY, urlTemplate)] } });
    const answered = async (status: number) =>
      RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: String(status) }), undefined, t).then(
        () => 'open',
        (err: Error) => err.message,
      );
    // Before: 404, 409, 410 and 429 were refused 500 (only 400, 401 and 403 passed through).
    for (const status of [400, 401, 403, 404, 409, 410, 429]) assert.equal(await answered(status), `HTTP ${status}`, String(status));
    // Any 4xx passes, one HTTP does not name too; a 5xx or a 3xx is the handler failing.
    assert.equal(await answered(499), 'HTTP 499');
    assert.equal(await answered(503), 'HTTP 500');
    assert.equal(await answered(302), 'HTTP 500');
  });
});

describe("the connect event's answer", () => {
  it("takes null as not set, as Microsoft's .NET handler SDK writes every property it was not given: the token's user stays (before: 500, or anonymous)", async (t) => {
    const answers = [
      { userId: null, groups: null, subprotocol: null, roles: null },
      { userId: null, groups: ['lobby'], subprotocol: null, roles: null },
      { groups: [], userId: '', roles: [], subprotocol: '' },
    ];
    let next = 0;
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answers[next++])));
    });
    const relay = await startTestRelay(t, { pubsub: { hubs: [hub(KEY, urlTemplate)] } });
    for (const answer of answers) {
      const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'alice' }), undefined, t);
      const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected', 5000);
      assert.equal(connected.userId, 'alice', JSON.stringify(answer));
    }
  });

  it('is followed by disconnected when it said yes and the connection was not admitted after all: the client left, the hub filled (Azure: always after a 2xx connect)', async (t) => {
    const events: { event: string; connectionId: string }[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      req.on('end', () => {
        const event = String(req.headers['ce-eventname']);
        events.push({ event, connectionId: String(req.headers['ce-connectionid']) });
        if (event === 'connect') setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), 300);
        else res.writeHead(204).end();
      });
    });
    const hubConfig = { name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '', systemEvents: ['connect', 'connected', 'disconnected'] }] };
    const relay = await startTestRelay(t, { limits: { connectionsPerHub: 1 }, pubsub: { hubs: [hubConfig] } });
    const url = accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' });
    const of = (id: string) => events.filter((e) => e.connectionId === id).map((e) => e.event);

    // Leaves while the handler answers.
    const leaving = upgradeAndLeave(t, relay.port, url);
    await until(() => events.some((e) => e.event === 'disconnected'), 5000, 'disconnected for the client that left');
    const left = events.find((e) => e.event === 'connect')!.connectionId;
    assert.deepEqual(of(left), ['connect', 'disconnected']);

    // Two at once into a hub of one: the second said yes, then refused 429.
    const outcomes = await Promise.all([0, 1].map(() => RawPubSubClient.connect(url, undefined, t).then(() => 'open', (err: Error) => err.message)));
    assert.deepEqual([...outcomes].sort(), ['HTTP 429', 'open']);
    await until(() => events.filter((e) => e.event === 'disconnected').length === 2, 5000, 'disconnected for the one refused');
    const refused = events.filter((e) => e.event === 'disconnected' && e.connectionId !== left).map((e) => e.connectionId)[0];
    assert.deepEqual(of(refused), ['connect', 'disconnected']);
  });
});
