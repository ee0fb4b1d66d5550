// Connections that hold the port without completing a request (issue 18,
// defect 5: with requestTimeout 0 Node also turned off its headers timeout,
// so a connection that never sent a byte, or sent one header line every few
// seconds, stayed forever and counted against no limit). A request head must
// arrive within timeouts.headersMs and a first byte within
// timeouts.firstByteMs (both answered 408 and closed); plain HTTP connections
// count against limits.httpConnectionsPerNode (503 past it); a head over
// 16 KiB is 431. A request whose head arrived streams its body as long as it
// likes, and WebSockets are not bound by either timeout; a REST call refused
// before its body is read is answered at once, the rest of its body bounded.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { httpRequest } from '../helpers/http.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { HUB, HUB_KEY, RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { readToClose, readUntilCloseOr, tcp } from '../helpers/raw-socket.ts';
import { metricValue, startTestRelay } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const HEADERS_MS = 600;
const FIRST_BYTE_MS = 400;
/** Each bound plus its check interval, widened for a loaded machine. */
const CLOSED_WITHIN_MS = 4000;

function slowRelay(t: Parameters<typeof startTestRelay>[0], limits: Record<string, unknown> = {}) {
  return startTestRelay(
    t,
    pubsubOverrides({
      hybridConnections: [{ name: 'open', requiresClientAuthorization: false }],
      timeouts: { headersMs: HEADERS_MS, firstByteMs: FIRST_BYTE_MS },
      limits,
    }),
  );
}

describe('slow and silent connections', () => {
  it('answers 408 and closes a connection whose head trickles in past headersMs', async (t) => {
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    socket.write('GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const trickle = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 150);
    t.after(() => clearInterval(trickle));
    const answer = await readToClose(socket, CLOSED_WITHIN_MS, 'the slow connection closed');
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 408 /);
    assert.match(answer.toString('latin1'), /"code":"RequestTimeout"/);
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'headersMs' }), 1);
  });

  it('answers 408 and closes a kept-alive connection that sends only empty lines after its answer, past headersMs', async (t) => {
    // Node skips CRLFs before a request line without beginning a request, so its headers timeout never started,
    // while each one put off its keep-alive timeout: two bytes every few seconds held the connection for good.
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    socket.write('GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const trickle = setInterval(() => socket.writable && socket.write('\r\n'), 100);
    t.after(() => clearInterval(trickle));
    const started = Date.now();
    const answers = (await readToClose(socket, CLOSED_WITHIN_MS, 'the connection closed')).toString('latin1');
    assert.match(answers, /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 408 [^]*"code":"RequestTimeout"/);
    assert.ok(Date.now() - started >= HEADERS_MS - 50, 'not before its bound');
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'headersMs' }), 1);
  });

  it('keeps a connection between requests that come within headersMs of each other, each answered', async (t) => {
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (text += chunk));
    for (let i = 0; i < 4; i++) {
      socket.write('GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      await new Promise((resolve) => setTimeout(resolve, HEADERS_MS / 2));
    }
    assert.equal((text.match(/HTTP\/1\.1 200 /g) ?? []).length, 4);
    assert.equal(socket.destroyed, false);
  });

  it('answers 408 and closes a connection that never sends a byte within firstByteMs', async (t) => {
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    const started = Date.now();
    const answer = await readToClose(socket, CLOSED_WITHIN_MS, 'the silent connection closed');
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 408 /);
    assert.ok(Date.now() - started >= FIRST_BYTE_MS - 50, 'not before its bound');
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'firstByteMs' }), 1);
  });

  it('refuses plain HTTP connections past httpConnectionsPerNode with 503, and serves again once they close', async (t) => {
    const relay = await slowRelay(t, { httpConnectionsPerNode: 5 });
    const held = await Promise.all(Array.from({ length: 5 }, () => tcp(t, relay.port)));
    const extra = await tcp(t, relay.port);
    const refused = await readToClose(extra, CLOSED_WITHIN_MS, 'the refused connection closed');
    assert.match(refused.toString('latin1'), /^HTTP\/1\.1 503 [\s\S]*"code":"HttpConnectionLimitReached"/);
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'httpConnectionsPerNode' }), 1);
    for (const s of held) s.destroy();
    await withTimeout(
      (async () => {
        for (;;) {
          const res = await httpRequest(`${relay.url}/$relay/health`).catch(() => undefined);
          if (res?.status === 200) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      CLOSED_WITHIN_MS,
      'a request served again',
    );
  });

  it('refuses plain HTTP connections past httpConnectionsPerAddress from one address with 429, serves other addresses meanwhile, and does not count a trusted proxy by address', async (t) => {
    // Before: one address could hold every place of httpConnectionsPerNode (a request every few seconds on each
    // keeps them), and every other client of the node got 503.
    const relay = await startTestRelay(t, { timeouts: { firstByteMs: 20_000, headersMs: 20_000 }, limits: { httpConnectionsPerAddress: 3 } });
    const health = 'GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';
    const served = async (socket: Awaited<ReturnType<typeof tcp>>) => {
      socket.write(health);
      return (await readToClose(socket, CLOSED_WITHIN_MS, 'the answer')).toString('latin1');
    };
    const held = await Promise.all(Array.from({ length: 3 }, () => tcp(t, relay.port)));
    const refused = await readToClose(await tcp(t, relay.port), CLOSED_WITHIN_MS, 'the refused connection closed');
    assert.match(refused.toString('latin1'), /^HTTP\/1\.1 429 [\s\S]*"code":"AddressHttpConnectionLimitReached"/);
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'httpConnectionsPerAddress' }), 1);
    // Another client address (127.0.0.2, also this host's loopback) is served meanwhile.
    assert.match(await served(await tcp(t, relay.port, '127.0.0.2')), /^HTTP\/1\.1 200 /);
    // A place given back is taken again.
    held[0].destroy();
    await withTimeout(
      (async () => {
        for (;;) {
          if (/^HTTP\/1\.1 200 /.test(await served(await tcp(t, relay.port)))) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      CLOSED_WITHIN_MS,
      'a request from the first address served again',
    );
    // From a trusted proxy (a load balancer carrying many clients), connections are not counted by address.
    const behind = await startTestRelay(t, { timeouts: { firstByteMs: 20_000, headersMs: 20_000 }, limits: { httpConnectionsPerAddress: 3 }, listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'] } });
    await Promise.all(Array.from({ length: 5 }, () => tcp(t, behind.port)));
    assert.match(await served(await tcp(t, behind.port)), /^HTTP\/1\.1 200 /);
  });

  it('answers 431 to a request head over 16 KiB', async (t) => {
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    socket.write(`GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`);
    const answer = await readUntilCloseOr(socket, (b) => b.includes('\r\n\r\n'), CLOSED_WITHIN_MS, 'the answer');
    assert.match(answer.bytes.toString('latin1'), /^HTTP\/1\.1 431 /);
  });

  it('lets a relayed request stream its body for longer than headersMs, and leaves WebSockets alone', async (t) => {
    const relay = await slowRelay(t);
    await startHycoHttpsListener(
      t,
      relay.url,
      (req, res) => {
        let bytes = 0;
        req.on('data', (c: Buffer) => (bytes += c.length));
        req.on('end', () => res.end(`got ${bytes}`));
      },
      'open',
    );
    const client = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
    const reply = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const req = request(`${relay.url}/open/upload`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c));
          res.on('end', () => resolve(`${res.statusCode} ${body}`));
        });
        req.on('error', reject);
        let sent = 0;
        const tick = setInterval(() => {
          req.write(Buffer.alloc(100, 0x61));
          if (++sent === 12) {
            clearInterval(tick);
            req.end();
          }
        }, 150);
      }),
      15000,
      'the slow upload',
    );
    assert.equal(reply, '200 got 1200');
    // The WebSocket opened before the upload, idle meanwhile, is still served.
    assert.equal((await client.request({ type: 'joinGroup', group: 'g' })).success, true);
  });

  it('answers 408 to a REST call whose body stops arriving for headersMs, and closes its connection', async (t) => {
    const relay = await slowRelay(t);
    const socket = await tcp(t, relay.port);
    const token = signJwt({ aud: `${relay.url}/api/hubs/${HUB}/:send` }, HUB_KEY, 60);
    socket.write(`POST /api/hubs/${HUB}/:send HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nhalf a body`);
    // Before: the call waited for the rest of the body for good, its connection held.
    const answer = await readToClose(socket, CLOSED_WITHIN_MS, 'the stalled call closed');
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 408 [\s\S]*"code":"RequestTimeout"/);
  });

  for (const [what, path, auth] of [
    ['with a bad token', '/api/hubs/chat/:send', 'Authorization: Bearer not-a-token\r\n'],
    ['to a hub that does not exist', '/api/hubs/nohub/:send', ''],
  ] as const) {
    it(`answers a REST call ${what} at once, and closes its connection when the body trickles on past headersMs`, async (t) => {
      const relay = await slowRelay(t);
      const socket = await tcp(t, relay.port);
      socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n`);
      const trickle = setInterval(() => socket.writable && socket.write('x'), 100);
      t.after(() => clearInterval(trickle));
      // Before: the answer waited for the end of a body that never came, and the connection stayed.
      const answer = await readToClose(socket, CLOSED_WITHIN_MS, 'the refused call closed');
      assert.match(answer.toString('latin1'), what === 'with a bad token' ? /^HTTP\/1\.1 401 / : /^HTTP\/1\.1 404 /);
    });
  }
});
