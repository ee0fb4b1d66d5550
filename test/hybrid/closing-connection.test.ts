// A request that comes on a connection after the answer that closes it is not
// acted on (RFC 9112 9.6): node:http still parses and emits it, and before,
// the relay sent it to the listener, whose answer could never reach the sender
// (which, seeing its connection close unanswered, may send it again). The
// answer that closes the connection says so (`Connection: close`); the close
// lingers as before (src/http/connection-close.ts). Cases: an upload its
// listener answered early (413) or left mid-body (502), and an Expect:
// 100-continue request refused at once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RawListener } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade, readUntil, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

const MOVES = {
  // The listener refuses it at once, without reading the body.
  'answered 413 early': (id: string) => maskedFrame(0x1, JSON.stringify({ response: { requestId: id, statusCode: 413, statusDescription: 'Too Large', body: false } })),
  // The listener closes its leg mid-body: the relay answers 502 ListenerGone itself.
  'closed its leg mid-body (502 ListenerGone)': () => maskedFrame(0x8, Buffer.from([0x03, 0xe8])),
};

describe('a request pipelined after an upload its listener did not read whole', () => {
  for (const [move, frame] of Object.entries(MOVES)) it(`is not relayed to the listener, and the answer says Connection: close: ${move}`, async (t) => {
    const relay = await startTestRelay(t, {
      hybridConnections: [{ name: 'open', requiresClientAuthorization: false }],
      timeouts: { httpResponseMs: 5000, closeHandshakeMs: 3000 },
    });
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const targets: string[] = [];
    listener.ws.removeAllListeners('message');
    let first: ((r: { id: string; address: string }) => void) | undefined;
    listener.ws.on('message', (data, binary) => {
      if (binary) return;
      const { request } = JSON.parse(String(data)) as { request?: { id: string; address: string; requestTarget?: string } };
      if (!request) return;
      targets.push(request.requestTarget ?? `(dial ${request.id})`);
      first?.(request);
      first = undefined;
    });
    const noticed = new Promise<{ id: string; address: string }>((resolve) => (first = resolve));

    // An upload over limits.controlMessageBytes: it goes through a rendezvous; only part of its body is sent yet.
    const size = 200_000;
    const sender = await tcp(t, relay.port);
    sender.write(`POST /open/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${size}\r\n\r\n`);
    sender.write(Buffer.alloc(1000, 0x61));
    const notice = await noticed;
    const address = new URL(notice.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    assert.equal(leg.status, 101);
    leg.socket.write(frame(notice.id));
    const answer = (await readUntil(sender, (b) => b.includes('\r\n\r\n'), 5000, 'the answer')).toString('latin1');
    assert.match(answer, /^HTTP\/1\.1 (413|502) /);

    // The sender goes on: the rest of its body, then another request on the same connection.
    sender.write(Buffer.alloc(size - 1000, 0x61));
    sender.write('DELETE /open/pipelined HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await new Promise((r) => setTimeout(r, 1500));

    assert.deepEqual(
      targets.filter((x) => x === '/open/pipelined'),
      [],
      'the relay ran a request received on a connection it was closing (its answer can never reach the sender)',
    );
    assert.match(answer, /\r\nconnection: close\r\n/i, `the answer before the relay closes the connection invites its reuse:\n${answer}`);
  });
});

describe('a request pipelined after an Expect: 100-continue request the relay refused', () => {
  it('is not relayed: the refusal said Connection: close (RFC 9112 9.6: no further request on it is processed)', async (t) => {
    const relay = await startTestRelay(t, {
      hybridConnections: [{ name: 'open', requiresClientAuthorization: false }, { name: 'echo', requiresClientAuthorization: true }],
    });
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    listener.ws.removeAllListeners('message');
    const targets: string[] = [];
    listener.ws.on('message', (data, binary) => {
      if (!binary) targets.push((JSON.parse(String(data)) as { request?: { requestTarget?: string } }).request?.requestTarget ?? '');
    });
    const sender = await tcp(t, relay.port);
    // No token for `echo`: refused 401 without 100 Continue, so the connection closes after the answer (documented).
    // The client sent its body without waiting (RFC 9110 10.1.1 allows it), and a request after it.
    sender.write('POST /echo/a HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello');
    sender.write('POST /open/pipelined HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n');
    const answer = (await readUntil(sender, (b) => b.includes('\r\n\r\n'), 5000, 'the 401')).toString('latin1');
    assert.match(answer, /^HTTP\/1\.1 401 [^]*\r\nConnection: close\r\n/i);
    await new Promise((r) => setTimeout(r, 800));
    assert.deepEqual(targets, [], 'the relay ran a request received after the answer that closed the connection');
  });
});
