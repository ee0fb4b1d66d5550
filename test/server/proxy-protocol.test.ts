// listen.proxyProtocol (docs/security.md, "Behind a load balancer"): behind
// a TCP balancer (AWS NLB, haproxy `send-proxy`), each connection begins with
// a PROXY protocol header naming the client, which the relay takes as the
// connection's peer: for the per-address connection rate, logs, and the
// remote endpoint a listener is told, over plain HTTP and TLS. Connections
// from peers not in listen.trustProxy, without a valid header, or whose
// header does not come within timeouts.headersMs, are closed unread.
// The last test puts a real haproxy (v1 and v2) in front.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import type WebSocket from 'ws';
import { buildConfig } from '../../src/config/load.ts';
import { makePki, clientTls } from '../helpers/certs.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { connectingWith, proxyV1Header, proxyV2Header, startHaproxy } from '../helpers/proxy-protocol.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { captureLogger, metricValue, startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const LOCAL = proxyV2Header({ local: true });
/** Two new connections per address, then 429 (no refill to speak of during the test). */
const TIGHT_RATE = { limits: { connectRatePerAddress: 0.001, connectBurstPerAddress: 2 } };
const behindBalancer = (extra: Record<string, unknown> = {}) => ({ listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'], proxyProtocol: true, ...extra } });

type Accept = { accept: { address: string; remoteEndpoint: { address: string; port: number } } };

/** A sender's relayed WebSocket to `echo` through a balancer that names `header`'s client; resolves to what the listener was told. */
async function senderSeenAs(t: TestContext, relayUrl: string, listener: RawListener, header: Buffer, tls?: object): Promise<Accept['accept']['remoteEndpoint']> {
  const connectUrl = wsUrl(relayUrl, '/$hc/echo?sb-hc-action=connect');
  const sender = openWebSocket(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl) }, createConnection: connectingWith(header, tls) as never });
  sender.catch(() => undefined);
  const { accept } = await listener.next<Accept>();
  const leg = await openWebSocket(accept.address, { createConnection: connectingWith(LOCAL, tls) as never });
  const opened = await sender;
  cleanupFor(t).after(() => {
    leg.terminate();
    opened.terminate();
  });
  return accept.remoteEndpoint;
}

/** A raw TCP connection to the relay; resolves once it closes, to what the relay wrote (bounded). */
async function rawExchange(t: TestContext, port: number, writes: Buffer[], gapMs = 0): Promise<{ received: string; closedAfterMs: number }> {
  const socket = connect(port, '127.0.0.1');
  cleanupFor(t).after(() => socket.destroy());
  socket.on('error', () => socket.destroy());
  await withTimeout(once(socket, 'connect'), 5000, 'connect');
  const started = Date.now();
  let received = '';
  socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
  const closed = withTimeout(once(socket, 'close'), 10000, 'the relay to close the connection');
  for (const w of writes) {
    if (socket.destroyed) break;
    socket.write(w);
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  }
  await closed;
  return { received, closedAfterMs: Date.now() - started };
}

const HEALTH = Buffer.from('GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');

describe('listen.proxyProtocol', () => {
  it('takes the client a v1 or v2 header names: the listener is told it, the connection rate counts it, the log names it', async (t) => {
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, { ...TIGHT_RATE, ...behindBalancer() }, { log });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), { createConnection: connectingWith(LOCAL) as never });
    t.after(() => listener.close());
    assert.deepEqual(await senderSeenAs(t, relay.url, listener, proxyV1Header('203.0.113.7', 40000)), { address: '203.0.113.7', port: 40000 });
    assert.deepEqual(await senderSeenAs(t, relay.url, listener, proxyV2Header({ address: '2001:db8::7', port: 5555 })), { address: '2001:db8::7', port: 5555 });
    // v1 UNKNOWN and v2 LOCAL (a balancer's own health check): the TCP peer.
    const unknown = await senderSeenAs(t, relay.url, listener, Buffer.from('PROXY UNKNOWN\r\n'));
    assert.equal(unknown.address, '127.0.0.1');
    // The rate: 203.0.113.7 has used one of its two; 198.51.100.9 is another client behind the same balancer.
    const dial = (header: Buffer) => upgradeRefusal(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect'), { createConnection: connectingWith(header) as never });
    assert.equal((await dial(proxyV1Header('203.0.113.7', 40001))).status, 401);
    assert.deepEqual(await dial(proxyV2Header({ address: '203.0.113.7', port: 40002 })), { status: 429, code: 'TooManyConnectionAttempts' });
    assert.equal((await dial(proxyV2Header({ address: '198.51.100.9', port: 40003 }))).status, 401);
    assert.deepEqual(lines().filter((l) => l.event === 'limit.reached').map((l) => l.address), ['203.0.113.7']);
  });

  it('believes X-Forwarded-For only when the header names a client that is itself a trusted proxy', async (t) => {
    const relay = await startTestRelay(t, behindBalancer({ trustProxy: ['127.0.0.1', '10.0.0.0/8'] }));
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), { createConnection: connectingWith(LOCAL) as never });
    t.after(() => listener.close());
    const seen = async (header: Buffer) => {
      const connectUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
      const sender = openWebSocket(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl), 'X-Forwarded-For': '192.0.2.44' }, createConnection: connectingWith(header) as never });
      sender.catch(() => undefined);
      const { accept } = await listener.next<Accept>();
      (await openWebSocket(accept.address, { createConnection: connectingWith(LOCAL) as never })).terminate();
      (await sender).terminate();
      return accept.remoteEndpoint.address;
    };
    assert.equal(await seen(proxyV1Header('10.1.2.3', 1234)), '192.0.2.44');
    assert.equal(await seen(proxyV1Header('203.0.113.7', 1234)), '203.0.113.7');
    // A header that names no client (LOCAL, UNKNOWN): the balancer writes no X-Forwarded-For in TCP mode, so one
    // there was written by whoever is behind it.
    assert.equal(await seen(LOCAL), '127.0.0.1');
    assert.equal(await seen(Buffer.from('PROXY UNKNOWN\r\n')), '127.0.0.1');
    assert.equal(await seen(proxyV2Header({ unspec: true })), '127.0.0.1');
  });

  it('passes on what follows the header however it is cut: in the header\'s write, or a byte at a time', async (t) => {
    const relay = await startTestRelay(t, behindBalancer());
    const port = Number(new URL(relay.url).port);
    const whole = await rawExchange(t, port, [Buffer.concat([proxyV1Header('203.0.113.7', 1), HEALTH])]);
    assert.match(whole.received, /^HTTP\/1\.1 200 /);
    const header = proxyV2Header({ address: '203.0.113.7', port: 2 });
    const bytes = [...Buffer.concat([header, HEALTH])].map((b) => Buffer.from([b]));
    const trickled = await rawExchange(t, port, bytes, 2);
    assert.match(trickled.received, /^HTTP\/1\.1 200 /);
    // Keep-alive requests after the first, and a relayed HTTP request through the same kind of connection.
    const answered = await new Promise<number>((resolve, reject) => {
      const req = request(`${relay.url}/$relay/health`, { createConnection: connectingWith(proxyV1Header('203.0.113.7', 3)) as never }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(answered, 200);
  });

  it('closes connections without a valid header, from peers it does not trust, and those whose header does not come in time', async (t) => {
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, { ...behindBalancer(), timeouts: { headersMs: 400 } }, { log });
    const port = Number(new URL(relay.url).port);
    // Plain HTTP, where a header should be: closed unanswered.
    assert.deepEqual((await rawExchange(t, port, [HEALTH])).received, '');
    assert.deepEqual((await rawExchange(t, port, [Buffer.concat([Buffer.from('PROXY TCP4 203.0.113 127.0.0.1 1 2\r\n'), HEALTH])])).received, '');
    assert.equal(await metricValue(relay, 'edge_relay_proxy_protocol_refused_total', { reason: 'invalid' }), 2);
    // A header begun and never finished: closed at timeouts.headersMs (a wide bound catches a hang).
    const stalled = await rawExchange(t, port, [Buffer.from('PROXY TCP4 203.0.1')]);
    assert.equal(stalled.received, '');
    assert.ok(stalled.closedAfterMs >= 200 && stalled.closedAfterMs < 5000, `closed after ${stalled.closedAfterMs} ms`);
    // Nothing at all: the same, unanswered (not 408: no HTTP was spoken yet).
    const silent = await rawExchange(t, port, []);
    assert.equal(silent.received, '');
    assert.ok(silent.closedAfterMs < 5000, `closed after ${silent.closedAfterMs} ms`);
    assert.equal(await metricValue(relay, 'edge_relay_proxy_protocol_refused_total', { reason: 'timeout' }), 2);
    // A header from a peer that is not a listed balancer is not believed, nor anything after it.
    const strict = await startTestRelay(t, behindBalancer({ trustProxy: ['10.0.0.1'] }));
    const refused = await rawExchange(t, Number(new URL(strict.url).port), [Buffer.concat([proxyV1Header('203.0.113.7', 1), HEALTH])]);
    assert.equal(refused.received, '');
    assert.equal(await metricValue(strict, 'edge_relay_proxy_protocol_refused_total', { reason: 'untrusted_peer' }), 1);
    // The relay keeps serving those that send one.
    assert.match((await rawExchange(t, port, [Buffer.concat([LOCAL, HEALTH])])).received, /^HTTP\/1\.1 200 /);
    const logged = lines().filter((l) => l.event === 'proxy_protocol.refused').map((l) => l.reason);
    assert.deepEqual(logged, ['invalid', 'invalid', 'timeout', 'timeout']);
  });

  it('counts a connection that sent its header and nothing more as silent (timeouts.firstByteMs), and as idle in the drain; a header is bounded by the shorter of firstByteMs and headersMs', async (t) => {
    const relay = await startTestRelay(t, { ...behindBalancer(), timeouts: { firstByteMs: 300, headersMs: 5000, shutdownMs: 8000 } });
    const port = Number(new URL(relay.url).port);
    const silent = await rawExchange(t, port, [LOCAL]);
    assert.match(silent.received, /^HTTP\/1\.1 408 /);
    assert.ok(silent.closedAfterMs < 3000, `closed after ${silent.closedAfterMs} ms`);
    // No header at all: closed unanswered at firstByteMs (300 ms here), not at headersMs (5 s).
    const headerless = await rawExchange(t, port, []);
    assert.equal(headerless.received, '');
    assert.ok(headerless.closedAfterMs < 3000, `closed after ${headerless.closedAfterMs} ms`);
    // The drain does not wait on it (before, a header alone counted as a request begun: the whole of shutdownMs).
    const idle = connect(port, '127.0.0.1');
    cleanupFor(t).after(() => idle.destroy());
    idle.on('error', () => idle.destroy());
    await withTimeout(once(idle, 'connect'), 5000, 'connect');
    idle.write(proxyV1Header('203.0.113.7', 1));
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await relay.close();
    assert.ok(Date.now() - started < 4000, `closed in ${Date.now() - started} ms`);
  });

  it('refuses a reload that empties listen.trustProxy while the protocol is on (it stays on until a restart)', async (t) => {
    let next: Record<string, unknown> = behindBalancer();
    const relay = await startTestRelay(t, behindBalancer(), { loadConfig: () => buildConfig(testConfig(next)) });
    next = { listen: { host: '127.0.0.1', port: 0 } };
    const outcome = relay.reload('api');
    assert.equal(outcome.ok, false);
    assert.match(String((outcome as { problem?: string }).problem), /listen\/trustProxy: listen\.proxyProtocol is on until a restart/);
    assert.match((await rawExchange(t, Number(new URL(relay.url).port), [Buffer.concat([LOCAL, HEALTH])])).received, /^HTTP\/1\.1 200 /);
    // Listing other balancers is a change like any.
    next = behindBalancer({ trustProxy: ['127.0.0.1', '10.0.0.0/8'] });
    assert.equal(relay.reload('api').ok, true);
  });

  it('reads the header before the TLS handshake, with the handshake in the same write', async (t) => {
    const pki = makePki(t);
    const relay = await startTestRelay(t, behindBalancer({ tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } }));
    const tls = { ...clientTls(pki), servername: undefined };
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl), { createConnection: connectingWith(LOCAL, tls) as never });
    t.after(() => listener.close());
    assert.deepEqual(await senderSeenAs(t, relay.url, listener, proxyV2Header({ address: '203.0.113.70', port: 4430 }), tls), { address: '203.0.113.70', port: 4430 });
  });

  it('is refused without listen.trustProxy: a header from anyone would be believed', () => {
    assert.throws(() => buildConfig({ listen: { host: '127.0.0.1', port: 0, proxyProtocol: true } }), /listen\/proxyProtocol: needs listen\.trustProxy/);
  });

  it('works behind a real haproxy sending v1 (send-proxy) and v2 (send-proxy-v2)', async (t) => {
    const relay = await startTestRelay(t, behindBalancer());
    const relayPort = Number(new URL(relay.url).port);
    const ports = await startHaproxy(t, relayPort);
    for (const [version, port] of Object.entries(ports)) {
      const base = `http://127.0.0.1:${port}`;
      const listenUrl = wsUrl(base, '/$hc/echo?sb-hc-action=listen');
      const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
      cleanupFor(t).after(() => listener.close());
      const connectUrl = wsUrl(base, '/$hc/echo?sb-hc-action=connect');
      const sender = openWebSocket(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl) } });
      sender.catch(() => undefined);
      const { accept } = await listener.next<Accept>();
      // The leg goes through the balancer too: every connection to the relay's port must.
      const leg = await openWebSocket(accept.address.replace(`:${relayPort}/`, `:${port}/`));
      const opened: WebSocket = await sender;
      const senderPort = (opened as unknown as { _socket: Socket })._socket.localPort;
      assert.deepEqual(accept.remoteEndpoint, { address: '127.0.0.1', port: senderPort }, `haproxy ${version}`);
      leg.terminate();
      opened.terminate();
      listener.close();
    }
  });
});
