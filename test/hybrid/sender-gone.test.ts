// A sender that hangs up while its requests wait for the listener: every
// exchange it started ends at once (its pending slot, its rendezvous address
// and the open-request count freed), not when a timer fires or never.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { RawListener, upgradeStatus } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

describe('a sender gone while its HTTP requests wait', () => {
  it('ends the request being answered, and the ones it pipelined behind it never reach a listener', async (t) => {
    // A long response timeout: nothing here may rest on it.
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: 30000 } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const sender = connect(relay.port, '127.0.0.1');
    t.after(() => sender.destroy());
    sender.on('error', () => undefined);
    await withTimeout(new Promise((r) => sender.once('connect', r)), 5000, 'the sender connection');
    const token = tokenFor(`${relay.url}/echo`);
    const get = (path: string) => `GET /echo/${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${token}\r\n\r\n`;
    // A body of unknown length goes by rendezvous: the request then has an address the listener would dial.
    const post = (path: string) => `POST /echo/${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${token}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n`;
    sender.write(post('b') + get('a') + get('c'));
    const notices = [await listener.next()];
    // The two behind it wait their turn (connection-close.ts, whenItsTurn).
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(relay.hybrid.openConnections().http_request, 1);
    sender.destroy();
    // Before (when pipelined requests were relayed at once): only the one whose response owned the socket ended;
    // the two queued behind it waited for httpResponseMs, and for good once the listener began to answer one.
    await until(() => relay.hybrid.openConnections().http_request === 0, 5000, `the requests to end (${relay.hybrid.openConnections().http_request} open)`);
    await assert.rejects(listener.next(500), 'a request of a sender that had gone reached the listener');
    const address = notices.find((n) => n.request.address && n.request.requestTarget === undefined)?.request.address as string;
    assert.ok(address, JSON.stringify(notices));
    // The listener's dial for a request whose sender left: opened and closed at once, 1000 (refused, 404, it ended
    // an unmodified hyco-https listener's process: test/compat/hyco-https.test.ts).
    const late = new WebSocket(address);
    late.on('error', () => undefined);
    const closed = await withTimeout(new Promise<number>((r) => late.once('close', (code: number) => r(code))), 5000, 'the late leg closed');
    assert.equal(closed, 1000);
    // Once: a second dial for the same address is refused.
    assert.equal(await upgradeStatus(address), 404);
  });
});
