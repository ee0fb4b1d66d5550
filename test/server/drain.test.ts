// The drain of one relay (relay.close(), as on SIGTERM; docs/scaling-out.md,
// "Graceful shutdown"): the port stays open while work in flight finishes, so
// new requests hear 503 ShuttingDown and listeners can still dial the
// rendezvous legs of that work; relayed WebSockets left near the end are
// closed 1001, not cut.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { httpRequest } from '../helpers/http.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { until, waitEvent, withTimeout } from '../helpers/wait.ts';

describe('a draining relay', () => {
  it('keeps its port: a response over 64 KB in flight comes through a rendezvous, new requests get 503 ShuttingDown, ready says 503', async (t) => {
    // Bounds far past the checks: before, the listener could not dial and the drain ran to shutdownMs.
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 20000, closeHandshakeMs: 2000 } });
    const big = Buffer.alloc(100000, 7);
    await startHycoHttpsListener(t, relay.url, (req, res) => {
      req.resume();
      // Answered once the drain has begun; hyco-https dials the request's rendezvous for a body over 64 KB.
      setTimeout(() => res.end(big), 400);
    });
    const url = `${relay.url}/echo/slow`;
    const inFlight = httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 8000 });
    await until(() => relay.hybrid.openConnections().http_request === 1, 5000, 'the request to reach the listener');
    const startedAt = Date.now();
    const closed = relay.close();
    const fresh = await httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 3000 });
    assert.equal(fresh.status, 503);
    assert.equal(JSON.parse(String(fresh.body)).code, 'ShuttingDown');
    assert.equal(fresh.headers.connection, 'close');
    assert.equal((await httpRequest(`${relay.url}/$relay/ready`, { timeoutMs: 3000 })).status, 503);
    const answered = await inFlight;
    assert.equal(answered.status, 200);
    assert.ok(answered.body.equals(big));
    await withTimeout(closed, 8000, 'the drain');
    assert.ok(Date.now() - startedAt < 5000, `the drain took ${Date.now() - startedAt} ms`);
  });

  it('lets a listener accept a connect pending when the drain began, and closes relayed WebSockets still open near its end with 1001', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'echo', requiresClientAuthorization: false }], timeouts: { shutdownMs: 1500, closeHandshakeMs: 500 } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const control = await openWebSocket(listenUrl, { headers: { ServiceBusAuthorization: tokenFor(listenUrl) } });
    cleanupFor(t).after(() => control.terminate());
    const legs: WebSocket[] = [];
    let asked = false;
    control.on('message', (data, isBinary) => {
      const accept = !isBinary && (JSON.parse(String(data)) as { accept?: { address: string } }).accept;
      if (!accept) return;
      asked = true;
      // The listener takes a moment (opening its backend, say): the drain begins meanwhile.
      setTimeout(() => {
        const leg = new WebSocket(accept.address);
        cleanupFor(t).after(() => leg.terminate());
        leg.on('message', (d, binary) => leg.send(d, { binary }));
        leg.on('error', () => {});
        legs.push(leg);
      }, 300);
    });
    const sender = new WebSocket(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect'));
    cleanupFor(t).after(() => sender.terminate());
    sender.on('error', () => {});
    await until(() => asked, 5000, 'the listener to be asked to accept');
    const closed = relay.close();
    await waitEvent(sender, 'open', 3000);
    sender.send('through the drain');
    const [echo] = await waitEvent<[Buffer]>(sender, 'message', 3000);
    assert.equal(String(echo), 'through the drain');
    // The relayed WebSocket stays open: near the deadline both ends are told why it closes.
    const [senderCode] = await waitEvent<[number]>(sender, 'close', 4000);
    assert.equal(senderCode, 1001);
    assert.equal(legs.length, 1);
    await withTimeout(closed, 4000, 'the drain');
  });

  it('waits closeHandshakeMs, not ws\'s 30 s, for a listener that never answers its 1001', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 20000, closeHandshakeMs: 1000 } });
    const path = '/$hc/echo?sb-hc-action=listen';
    // A listener that upgrades, then never reads again (so never answers a close frame).
    const listener = await rawUpgrade(t, relay.port, path, { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, path)) });
    assert.equal(listener.status, 101);
    const startedAt = Date.now();
    await withTimeout(relay.close(), 8000, 'the drain');
    assert.ok(Date.now() - startedAt < 4000, `the drain took ${Date.now() - startedAt} ms`);
  });
});

