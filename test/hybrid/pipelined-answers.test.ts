// Requests pipelined on one connection are taken up one after the other, each
// once the answer before it is out, as nginx and haproxy do (whenItsTurn,
// src/http/connection-close.ts). Before, each went to its listener as soon as
// node:http parsed it: an answer ready early waited its turn in memory (and
// its sender-stall bound had to tell that wait from a sender that reads
// nothing), and a close decided later, say an answer cut mid-body, was not
// seen: the request behind it ran, and its answer was lost with the connection.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { RawListener } from '../helpers/raw-listener.ts';
import { WS_KEY, maskedFrame, rawUpgrade, readUntilCloseOr, tcp } from '../helpers/raw-socket.ts';
import { MAX_REQUESTS_WAITING } from '../../src/http/connection-close.ts';
import { until } from '../helpers/wait.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

interface Notice {
  id: string;
  address: string;
  method: string;
  requestTarget: string;
}

/** A relay with a listener of `open` that notes each request notice, and a raw sender connection. */
async function relayAndListener(t: TestContext, timeouts: Record<string, number>) {
  const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], timeouts });
  const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => listener.close());
  listener.ws.removeAllListeners('message');
  const notices = new Map<string, Notice>();
  listener.ws.on('message', (data, binary) => {
    if (binary) return;
    const { request } = JSON.parse(String(data)) as { request?: Notice };
    if (request) notices.set(`${request.method} ${request.requestTarget}`, request);
  });
  /** The notice of `request` ("METHOD target"), once it comes (bounded). */
  const noticeOf = (request: string, ms: number) =>
    withTimeout((async () => { while (!notices.has(request)) await new Promise((r) => setTimeout(r, 10)); return notices.get(request)!; })(), ms, `the notice of ${request}`);
  const sender = await tcp(t, relay.port);
  return { relay, listener, notices, noticeOf, sender };
}

describe('requests pipelined on one connection', () => {
  it('are taken up one after the other, and a first answer slower than senderStallMs is no stall of a sender that reads everything', async (t) => {
    const { relay, listener, notices, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 10000, senderStallMs: 1000 });
    let got = Buffer.alloc(0);
    let closed = false;
    sender.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
    sender.on('close', () => (closed = true));
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /open/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const slow = await noticeOf('GET /open/slow', 5000);
    // The first is answered after 2.5 s (a slow query, well within httpResponseMs); meanwhile the second waits.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(notices.has('GET /open/big'), false, 'the second request reached its listener while the first was still unanswered');
    listener.ws.send(JSON.stringify({ response: { requestId: slow.id, statusCode: 200, responseHeaders: { 'content-length': '4' }, body: true } }));
    listener.ws.send(Buffer.from('slow'));
    // Then the second, over its rendezvous, with 256 KiB (more than a response buffers).
    const big = await noticeOf('GET /open/big', 5000);
    const address = new URL(big.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    leg.socket.resume();
    const body = Buffer.alloc(256 * 1024, 0x62);
    leg.socket.write(maskedFrame(0x1, JSON.stringify({ response: { requestId: big.id, statusCode: 200, responseHeaders: { 'content-length': String(body.length) }, body: true } })));
    leg.socket.write(maskedFrame(0x2, body));
    await withTimeout((async () => { while (!closed && got.length < body.length + 200) await new Promise((r) => setTimeout(r, 20)); })(), 8000, 'both answers or the connection closed');
    const text = got.toString('latin1');
    assert.equal(closed, false, `the connection of a sender that read everything was cut; it got: ${JSON.stringify(text.slice(0, 200))}`);
    assert.equal(text.match(/HTTP\/1\.1 200 /g)?.length, 2);
    assert.ok(text.includes('slow'));
  });

  it('behind an answer cut mid-body: the next is never relayed (before: it ran, and its answer was lost with the connection)', async (t) => {
    const { relay, notices, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 10000 });
    const cut = readUntilCloseOr(sender, () => false, 8000, 'the cut answer');
    sender.write('GET /open/file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nDELETE /open/file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const first = await noticeOf('GET /open/file', 5000);
    // The listener answers on its rendezvous, promises 1,000 bytes, sends 10 (the body message left open) and goes.
    const address = new URL(first.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    leg.socket.resume();
    leg.socket.write(maskedFrame(0x1, JSON.stringify({ response: { requestId: first.id, statusCode: 200, responseHeaders: { 'content-length': '1000' }, body: true } })));
    leg.socket.write(maskedFrame(0x2, Buffer.alloc(10, 0x61), false));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(notices.has('DELETE /open/file'), false, 'the DELETE reached the listener while the answer before it was still coming');
    leg.socket.write(maskedFrame(0x8, Buffer.from([0x03, 0xe8])));
    const seen = await cut;
    assert.equal(seen.closed, true, 'the sender of a cut answer kept its connection');
    assert.match(seen.bytes.toString('latin1'), /^HTTP\/1\.1 200 /, 'the answer began before it was cut (setup)');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(notices.has('DELETE /open/file'), false, 'the DELETE pipelined behind the cut answer reached the listener');
  });

  it('a sender that hangs up while its second request waits: that request is never relayed', async (t) => {
    const { notices, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 10000 });
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPOST /open/order HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi');
    await noticeOf('GET /open/slow', 5000);
    sender.destroy();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(notices.has('POST /open/order'), false, 'a request of a sender that had gone reached the listener');
  });
});

// Found by review of the change above: what node:http does not bound, and upgrades it hands over at once.
describe('requests pipelined behind an answer still awaited', () => {
  it('a flood of them is not read past a few (before: each held ~2 KB, 1.1 GB for 23 MB of requests), and reading goes on once the answer is out', async (t) => {
    const { listener, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 60000 });
    let answers = 0;
    let tail = '';
    sender.on('data', (d: Buffer) => {
      const text = tail + d.toString('latin1');
      answers += text.match(/HTTP\/1\.1 404 /g)?.length ?? 0;
      tail = text.slice(-20);
    });
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const slow = await noticeOf('GET /open/slow', 5000);
    const one = Buffer.from('GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const chunk = Buffer.concat(Array.from({ length: 1000 }, () => one));
    const heapBefore = process.memoryUsage().heapUsed;
    let written = 0;
    const until5s = Date.now() + 5000;
    // 10 MB of requests (about 230,000), written as fast as the relay takes them.
    while (written < 10e6 && Date.now() < until5s) {
      if (!sender.write(chunk)) await new Promise((r) => { const timer = setTimeout(r, 200); sender.once('drain', () => { clearTimeout(timer); r(undefined); }); });
      written += chunk.length;
    }
    const grown = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(grown < 150e6, `the heap grew ${(grown / 1e6).toFixed(0)} MB for ${(written / 1e6).toFixed(1)} MB of requests waiting their turn`);
    // The answer comes: the requests behind it are taken up, and the connection is read again past the hold.
    listener.ws.send(JSON.stringify({ response: { requestId: slow.id, statusCode: 200, responseHeaders: { 'content-length': '2' }, body: true } }));
    listener.ws.send(Buffer.from('ok'));
    await until(() => answers > 4 * MAX_REQUESTS_WAITING, 10000, `the requests behind it answered (${answers})`);
  });

  it('an Expect: 100-continue and a HEAD request are taken up in turn, 100 Continue sent when it is the POST\'s', async (t) => {
    const { listener, sender } = await relayAndListener(t, { httpResponseMs: 10000 });
    const methods: string[] = [];
    listener.ws.removeAllListeners('message');
    listener.ws.on('message', (data, binary) => {
      if (binary) return;
      const { request } = JSON.parse(String(data)) as { request?: Notice };
      if (!request) return;
      methods.push(request.method);
      setTimeout(() => {
        listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, responseHeaders: { 'content-length': '2' }, body: true } }));
        listener.ws.send(Buffer.from('ok'));
      }, request.method === 'GET' ? 700 : 0);
    });
    let got = '';
    let bodySent = false;
    sender.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('100 Continue') && !bodySent) {
        bodySent = true;
        sender.write('hello');
      }
    });
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nHEAD /open/h HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPOST /open/up HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    await until(() => (got.match(/HTTP\/1\.1 200/g)?.length ?? 0) >= 3, 8000, `three answers (${JSON.stringify(got)})`);
    assert.deepEqual(methods, ['GET', 'HEAD', 'POST']);
  });

  it('an h2c upgrade served as a plain request waits its turn (before: the relay ended, ERR_HTTP_SOCKET_ASSIGNED)', async (t) => {
    const { sender } = await relayAndListener(t, { httpResponseMs: 1500 });
    const errors: unknown[] = [];
    const onError = (err: unknown) => errors.push(err);
    process.on('uncaughtException', onError);
    t.after(() => process.off('uncaughtException', onError));
    const got = readUntilCloseOr(sender, () => false, 6000, 'both answers');
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n');
    const text = (await got).bytes.toString('latin1');
    assert.deepEqual(errors.map(String), []);
    assert.match(text, /^HTTP\/1\.1 504 [\s\S]*\r\n\r\n\{"code":"ResponseTimeout"[^\n]*\nHTTP\/1\.1 200 /, JSON.stringify(text));
  });

  it('a WebSocket upgrade waits its turn: its 101 comes after the answer before it (before: first, that answer then written into the WebSocket)', async (t) => {
    const { relay, sender } = await relayAndListener(t, { httpResponseMs: 1500 });
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const path = `/$hc/open?sb-hc-action=listen&sb-hc-token=${encodeURIComponent(tokenFor(listenUrl))}`;
    let got = '';
    sender.on('data', (d: Buffer) => (got += d.toString('latin1')));
    sender.write(`GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\n\r\n`);
    await until(() => got.includes('101 Switching Protocols'), 6000, `the 101 (${JSON.stringify(got.slice(0, 300))})`);
    assert.match(got, /^HTTP\/1\.1 504 [\s\S]*\r\n\r\n\{"code":"ResponseTimeout"[^\n]*\nHTTP\/1\.1 101 /, JSON.stringify(got.slice(0, 500)));
  });

  // Found by the sender-side review: node:http hands the socket over with the upgrade and reads it no more, so a
  // sender that hung up behind its upgrade was not seen until the answer before it came.
  for (const [kind, upgrade] of [
    ['a WebSocket connect', `GET /$hc/open?sb-hc-action=connect HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\n\r\n`],
    ['an h2c upgrade', 'GET /open/h2c HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n'],
  ]) {
    it(`a sender that hangs up while ${kind} waits its turn ends the request before it at once, and its listener is told of nothing more (before: both waited for httpResponseMs, then the listener got an accept for the gone sender, held acceptMs)`, async (t) => {
      const { relay, listener, notices, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 2500, acceptMs: 30000 });
      const others: string[] = [];
      listener.ws.on('message', (data, binary) => {
        if (!binary && !String(data).startsWith('{"request"')) others.push(String(data).slice(0, 40));
      });
      const ctx = (relay.hybrid as unknown as { ctx: { rendezvous: { size: number }; open: { httpRequests: number } } }).ctx;
      sender.write(`GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n${upgrade}`);
      await noticeOf('GET /open/slow', 5000);
      sender.end();
      await until(() => ctx.rendezvous.size === 0 && ctx.open.httpRequests === 0, 1500, `the request to end with its sender (pending ${ctx.rendezvous.size})`);
      // Past httpResponseMs: nothing of the gone sender reached the listener, and nothing waits.
      await new Promise((r) => setTimeout(r, 3000));
      assert.deepEqual(others, []);
      assert.deepEqual([...notices.keys()], ['GET /open/slow']);
      assert.equal(ctx.rendezvous.size, 0);
    });
  }

  it('bytes a sender sends after its upgrade while it waits its turn reach its listener once spliced', async (t) => {
    const { relay, listener, noticeOf, sender } = await relayAndListener(t, { httpResponseMs: 10000 });
    listener.ws.on('message', (data, binary) => {
      if (binary) return;
      const { accept } = JSON.parse(String(data)) as { accept?: { address: string } };
      if (accept) void rawUpgrade(t, relay.port, new URL(accept.address).pathname + new URL(accept.address).search).then((leg) => {
        onLeg += leg.rest.toString('latin1');
        leg.socket.on('data', (d: Buffer) => (onLeg += d.toString('latin1')));
      });
    });
    let onLeg = '';
    sender.write(`GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /$hc/open?sb-hc-action=connect HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\n\r\n`);
    const slow = await noticeOf('GET /open/slow', 5000);
    await new Promise((r) => setTimeout(r, 200));
    sender.write(maskedFrame(1, 'sent-while-waiting'));
    await new Promise((r) => setTimeout(r, 200));
    listener.ws.send(JSON.stringify({ response: { requestId: slow.id, statusCode: 200, responseHeaders: { 'content-length': '2' }, body: true } }));
    listener.ws.send(Buffer.from('ok'));
    await until(() => onLeg.includes('sent-while-waiting'), 5000, `the early frame at the listener's leg (${JSON.stringify(onLeg.slice(0, 200))})`);
  });
});
