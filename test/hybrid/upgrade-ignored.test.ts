// A request that offers an upgrade to another protocol than WebSocket
// (`Upgrade: h2c` from curl --http2 and Java's HttpClient on http://) is
// served as HTTP/1.1, its upgrade ignored, as node:http and most servers do
// (RFC 9110 7.8); the connection closes after the answer. Before: 404 for
// every such request, whatever its path (with a body, until 2026-12-03).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { readToClose, readUntil, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const H2C = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n';

describe('an upgrade offered to another protocol than WebSocket', () => {
  it('is ignored: the request is relayed as HTTP/1.1 and the connection closes after the answer', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] });
    let seen: Record<string, unknown> = {};
    await startHycoHttpsListener(t, relay.url, (req, res) => void ((seen = req.headers), res.end('ok')), 'web');
    const socket = await tcp(t, relay.port);
    socket.write(`GET /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}\r\n`);
    const answer = (await readToClose(socket, 10000, 'the answer')).toString('latin1');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.ok(answer.includes('ok'), answer);
    // Hop-by-hop, and named in Connection: none of the upgrade's headers reach the listener.
    assert.deepEqual([seen.upgrade, seen['http2-settings'], seen.connection], [undefined, undefined, undefined]);
    // The relay's own endpoints too.
    const health = await tcp(t, relay.port);
    health.write(`GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}\r\n`);
    assert.match((await readToClose(health, 10000, 'the health answer')).toString('latin1'), /^HTTP\/1\.1 200 [^]*"up"/);
  });

  it('with a body of known length (curl --http2 -d): the body is relayed whole, bytes after it dropped; chunked is refused 411', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] });
    await startHycoHttpsListener(
      t,
      relay.url,
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
        req.on('end', () => res.end(`got ${Buffer.concat(chunks).toString('latin1')} (${req.headers['content-length']})`));
      },
      'web',
    );
    // In the same packet as the head, and in pieces after it.
    const socket = await tcp(t, relay.port);
    socket.write(`POST /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}Content-Length: 11\r\n\r\nhello`);
    await new Promise((r) => setTimeout(r, 50));
    socket.write(' world');
    socket.write('GET /web/next HTTP/1.1\r\n\r\n');
    const answer = (await readToClose(socket, 10000, 'the answer')).toString('latin1');
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.ok(answer.includes('got hello world (11)'), answer);
    assert.equal(answer.match(/HTTP\/1\.1/g)?.length, 1, 'one answer: the bytes after the body are no second request');
    const big = Buffer.alloc(300_000, 'x');
    const large = await tcp(t, relay.port);
    large.write(`PUT /web/big HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}Content-Length: ${big.length}\r\n\r\n`);
    large.write(big);
    assert.ok((await readToClose(large, 10000, 'the large answer')).toString('latin1').includes(`(${big.length})`));
    const chunked = await tcp(t, relay.port);
    chunked.write(`POST /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
    assert.match((await readToClose(chunked, 10000, 'the chunked answer')).toString('latin1'), /^HTTP\/1\.1 411 [^]*LengthRequired/);
  });

  it('with a body: counted as a plain connection, 100 Continue when asked for, and aborted when the sender ends early', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }], limits: { httpConnectionsPerNode: 2 } });
    await startHycoHttpsListener(
      t,
      relay.url,
      (req, res) => {
        let n = 0;
        req.on('data', (c: Buffer) => (n += c.length));
        req.on('end', () => res.end(`got ${n}`));
      },
      'web',
    );
    // A client that waits for 100 Continue before its body (Node answers it on the path it parses itself).
    const expecting = await tcp(t, relay.port);
    expecting.write(`POST /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n`);
    assert.match((await readUntil(expecting, (b) => b.includes('\r\n\r\n'), 5000, 'the 100 Continue')).toString('latin1'), /^HTTP\/1\.1 100 Continue\r\n\r\n/);
    expecting.write('hello');
    assert.ok((await readToClose(expecting, 10000, 'the answer')).toString('latin1').includes('got 5'));
    // Two requests whose bodies do not come (yet) hold the two plain connections the node allows:
    // before, an h2c request left that count at the upgrade and counted against no limit at all.
    const held = await Promise.all([0, 1].map(() => tcp(t, relay.port)));
    for (const socket of held) socket.write(`POST /web/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}Content-Length: 100\r\n\r\nx`);
    await new Promise((r) => setTimeout(r, 200));
    const third = await tcp(t, relay.port);
    assert.match((await readToClose(third, 5000, 'the third connection refused')).toString('latin1'), /^HTTP\/1\.1 503 [^]*HttpConnectionLimitReached/);
    // A sender that ends its side before the whole body (a half-close): the request is aborted and the connection
    // closed (before, both were held for good).
    held[0].end();
    await readToClose(held[0], 5000, 'the half-closed connection to be closed');
    held[1].destroy();
  });

  it('without a body, and the answer not yet given: ended by the sender, the exchange ends and the connection closes, as Node does', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] });
    let asked = 0;
    await startHycoHttpsListener(t, relay.url, () => void asked++, 'web');
    // A relayed request its listener does not answer, and a live trace (a stream that never ends): before, each was
    // held until a write failed or the answer's timeout (a trace viewer kept one of the 10 places ~30 s).
    const waiting = await tcp(t, relay.port);
    waiting.write(`GET /web/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n${H2C}\r\n`);
    await until(() => asked === 1, 5000, 'the listener asked');
    waiting.end();
    await readToClose(waiting, 5000, 'the half-closed connection to be closed');
    const token = tokenFor(`${relay.url}/`);
    const viewers = await Promise.all(Array.from({ length: 10 }, () => tcp(t, relay.port)));
    for (const viewer of viewers) viewer.write(`GET /$relay/trace HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${token}\r\n${H2C}\r\n`);
    for (const viewer of viewers) assert.match((await readUntil(viewer, (b) => b.includes('\r\n\r\n'), 5000, 'a viewer')).toString('latin1'), /^HTTP\/1\.1 200 /);
    for (const viewer of viewers) viewer.end();
    await Promise.all(viewers.map((v) => readToClose(v, 5000, 'a viewer closed')));
    const next = await tcp(t, relay.port);
    next.write(`GET /$relay/trace HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${token}\r\n\r\n`);
    assert.match((await readUntil(next, (b) => b.includes('\r\n\r\n'), 5000, 'the next viewer')).toString('latin1'), /^HTTP\/1\.1 200 /);
    next.destroy();
  });
});
