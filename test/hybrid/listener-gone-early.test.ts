// A relayed HTTP request whose listener leaves before it could act on it
// (the body was still being read, or the listener had only been asked to
// dial for it) goes on to another listener of the entity, when one is there:
// before, it failed 502 ListenerGone while others were online, so a rolling
// restart of listeners failed the uploads in flight. With no other listener,
// the sender is told the listener left (502 ListenerGone), not that there
// was never one.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { RawListener, staleLeg, upgradeRefusal, upgradeStatus } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade, readUntil } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

type Notice = { request: { id: string; address: string; requestTarget?: string; body?: boolean } };

/** A listener that answers every request it gets, on its control channel or by dialing, with the body's length. */
async function answeringListener(t: { after(fn: () => void): void }, relayUrl: string, name: string, seen: string[]): Promise<RawListener> {
  const url = wsUrl(relayUrl, '/$hc/echo?sb-hc-action=listen');
  const listener = await RawListener.connect(url, tokenFor(url));
  t.after(() => listener.close());
  let waitingForBody: Notice | undefined;
  const answer = (send: (data: string | Buffer, binary: boolean) => void, body: Buffer, id: string) => {
    send(JSON.stringify({ response: { requestId: id, statusCode: 200, responseHeaders: { 'x-listener': name, 'x-got': String(body.length) }, body: false } }), false);
  };
  listener.ws.removeAllListeners('message');
  listener.ws.on('message', (data: Buffer, binary: boolean) => {
    if (binary && waitingForBody) {
      const notice = waitingForBody;
      waitingForBody = undefined;
      return answer((d) => listener.ws.send(d), data, notice.request.id);
    }
    const notice = JSON.parse(String(data)) as Notice;
    if (!notice.request) return;
    seen.push(`${name}:${notice.request.requestTarget === undefined ? 'dial' : 'request'}`);
    if (notice.request.requestTarget !== undefined) {
      if (notice.request.body) waitingForBody = notice;
      else answer((d) => listener.ws.send(d), Buffer.alloc(0), notice.request.id);
      return;
    }
    // Asked to dial: the request and its body come on the leg; the answer goes back on it.
    const leg = new WebSocket(notice.request.address);
    t.after(() => leg.terminate());
    leg.on('error', () => undefined);
    let request: Notice | undefined;
    leg.on('message', (d: Buffer, isBinary: boolean) => {
      if (!isBinary) request = JSON.parse(String(d)) as Notice;
      else if (request) answer((x, b) => leg.send(x, { binary: b }), d, request.request.id);
    });
  });
  return listener;
}

async function sender(t: { after(fn: () => void): void }, port: number): Promise<{ socket: Socket; text(): string }> {
  const socket = connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  await withTimeout(new Promise((r) => socket.once('connect', r)), 5000, 'the sender connection');
  return { socket, text: () => text };
}

/**
 * A relay (listenerBufferBytes 64 KiB, controlMessageBytes 1 MiB) with one listener on `echo` that never reads,
 * its control channel filled past that buffer by requests whose 512 KiB bodies go down it whole.
 */
async function relayWithStuckListener(t: { after(fn: () => void): void }) {
  const relay = await startTestRelay(t, { limits: { listenerBufferBytes: 65536, controlMessageBytes: 1048576 } });
  const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
  const stuck = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => stuck.close());
  stuck.ws.pause();
  const stuckChannel = [...relay.hybrid.listeners.all()][0];
  const queued = () => stuckChannel.queuedBytes;
  // What the relay wrote down the channel so far, taken by the kernel or queued.
  const written = () => (stuckChannel.socket as Socket).bytesWritten;
  const body = Buffer.alloc(512 * 1024, 0x78);
  const token = tokenFor(`${relay.url}/echo`);
  // One request at a time, each until its body went down the channel: a second one sent down after the queue passed
  // the buffer would drop the channel (before: a sleep of 50 ms, which a busy machine outran, and the fill ended
  // with the listener dropped and nothing queued).
  for (let i = 0; i < 100 && queued() < 65536; i++) {
    const before = written();
    const s = await sender(t, relay.port);
    s.socket.write(`POST /echo/fill HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${token}\r\nContent-Length: ${body.length}\r\n\r\n`);
    s.socket.write(body);
    await until(() => written() >= before + body.length, 5000, `request ${i + 1}'s body down the channel`);
  }
  assert.ok(queued() >= 65536, `only ${queued()} bytes queued`);
  return { relay, listenUrl, stuckChannel };
}

const answered = (s: { text(): string }) => until(() => /\r\n\r\n/.test(s.text()), 10000, 'the answer').catch(() => {
  throw new Error(`no answer: ${JSON.stringify(s.text())}`);
});

describe('a relayed request whose listener left before acting on it', () => {
  it('goes on to another listener while its body is still being read (control channel path)', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: 10000 } });
    const seen: string[] = [];
    const listeners = [await answeringListener(t, relay.url, 'a', seen), await answeringListener(t, relay.url, 'b', seen), await answeringListener(t, relay.url, 'c', seen)];
    const token = tokenFor(`${relay.url}/echo`);
    // Two requests routed round robin to two different listeners; their bodies not sent yet.
    const senders = [await sender(t, relay.port), await sender(t, relay.port)];
    for (const s of senders) s.socket.write(`POST /echo/up HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${token}\r\nContent-Length: 10\r\n\r\n`);
    await until(() => relay.hybrid.openConnections().http_request === 2, 5000, 'both requests to be taken');
    // Two of the three listeners leave: at least one of the requests was routed to one of them.
    listeners[0].close();
    listeners[1].close();
    await until(() => relay.hybrid.openConnections().listener === 1, 5000, 'two listeners to be gone');
    for (const s of senders) s.socket.write('0123456789');
    for (const s of senders) {
      await answered(s);
      assert.match(s.text(), /^HTTP\/1\.1 200 /, s.text());
      assert.match(s.text(), /\r\nx-listener: c\r\n/i);
      assert.match(s.text(), /\r\nx-got: 10\r\n/i);
    }
    assert.deepEqual(seen, ['c:request', 'c:request']);
  });

  it('goes on to another listener when the one asked to dial for it leaves without dialing (rendezvous path)', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: 10000 } });
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    // Two listeners that note what they are asked and do nothing: the one asked leaves.
    const first = await RawListener.connect(url, tokenFor(url));
    t.after(() => first.close());
    const second = await RawListener.connect(url, tokenFor(url));
    t.after(() => second.close());
    const s = await sender(t, relay.port);
    s.socket.write(`POST /echo/big HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(`${relay.url}/echo`)}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
    const notices = new Map<RawListener, Notice[]>([[first, []], [second, []]]);
    for (const [l, list] of notices) l.ws.on('message', (d: Buffer, binary: boolean) => void (binary || list.push(JSON.parse(String(d)) as Notice)));
    await until(() => notices.get(first)!.length + notices.get(second)!.length === 1, 5000, 'one listener to be asked to dial');
    const [who, other] = notices.get(first)!.length === 1 ? [first, second] : [second, first];
    const asked = notices.get(who)![0];
    assert.equal(asked.request.requestTarget, undefined);
    who.close();
    // The other is asked to dial an address of its own: the one the first was given no longer serves the request
    // (before, the same address: the listener that left could still dial it and take the request, body and all).
    await until(() => notices.get(other)!.length === 1, 5000, 'the other listener to be asked');
    const again = notices.get(other)![0];
    assert.notEqual(again.request.id, asked.request.id);
    assert.notEqual(again.request.address, asked.request.address);
    const stale = await staleLeg(asked.request.address);
    assert.deepEqual(stale.messages, [], 'the request went to the listener that left');
    assert.ok(stale.outcome === 'closed 1000' || stale.outcome === 'refused 404', stale.outcome);
    const leg = new WebSocket(again.request.address);
    t.after(() => leg.terminate());
    leg.on('error', () => undefined);
    const messages: (string | Buffer)[] = [];
    leg.on('message', (d: Buffer, binary: boolean) => {
      messages.push(binary ? d : String(d));
      if (binary) leg.send(JSON.stringify({ response: { requestId: again.request.id, statusCode: 201, responseHeaders: {}, body: false } }));
    });
    await answered(s);
    assert.match(s.text(), /^HTTP\/1\.1 201 /, s.text());
    assert.equal(String(messages[1]), 'hello');
  });

  it('with no other listener: 502 ListenerGone at once, not 404 NoListener', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: 30000 } });
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const lone = await RawListener.connect(url, tokenFor(url));
    t.after(() => lone.close());
    const s = await sender(t, relay.port);
    s.socket.write(`POST /echo/big HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(`${relay.url}/echo`)}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
    const asked = await lone.next<Notice>();
    assert.equal(asked.request.requestTarget, undefined);
    lone.close();
    // Bounded far below httpResponseMs: the answer comes when the listener is seen gone.
    await answered(s);
    assert.match(s.text(), /^HTTP\/1\.1 502 /, s.text());
    assert.match(s.text(), /"code":"ListenerGone"/);
  });

  it('goes on to another listener when the one it was routed to closes its channel before the request is sent (control channel path)', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: 10000 } });
    const seen: string[] = [];
    // A listener that sends its close frame and then reads nothing and never ends its side: its channel is over
    // (listener-close-frame.test.ts) though the relay's end of the connection waits for this side's.
    const path = '/$hc/echo?sb-hc-action=listen';
    const closing = await rawUpgrade(t, relay.port, path, { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, path)) });
    assert.equal(closing.status, 101, closing.head);
    await answeringListener(t, relay.url, 'open', seen);
    const token = tokenFor(`${relay.url}/echo`);
    // Two requests routed round robin, one to each listener; their bodies not sent yet.
    const senders = [await sender(t, relay.port), await sender(t, relay.port)];
    for (const s of senders) s.socket.write(`POST /echo/up HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${token}\r\nContent-Length: 10\r\n\r\n`);
    await until(() => relay.hybrid.openConnections().http_request === 2, 5000, 'both requests to be taken');
    const status = Buffer.alloc(2);
    status.writeUInt16BE(1000);
    // This side never ends the connection: the relay's close frame and end are read, its own end not sent.
    closing.socket.allowHalfOpen = true;
    closing.socket.write(maskedFrame(0x8, status));
    await readUntil(closing.socket, (b) => b.includes(0x88), 5000, "the relay's close frame");
    for (const s of senders) s.socket.write('0123456789');
    for (const s of senders) {
      await answered(s);
      assert.match(s.text(), /^HTTP\/1\.1 200 /, s.text());
      assert.match(s.text(), /\r\nx-listener: open\r\n/i);
    }
    assert.deepEqual(seen, ['open:request', 'open:request']);
    // Before, the closing listener stayed on the relay until its connection closed (timeouts.closeHandshakeMs), and
    // each request went on only when its body came and could not be sent to it.
    assert.equal(relay.hybrid.openConnections().listener, 1, 'the closing listener left the relay at its close frame');
    assert.equal(closing.socket.destroyed, false, 'though its connection was still open');
  });

  it('a connect whose listener could not be told (dropped, its buffer full) goes on to another listener of the edge', async (t) => {
    // One listener never reads (filled past its buffer); the other dials every accept.
    const { relay, listenUrl, stuckChannel } = await relayWithStuckListener(t);
    const open = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => open.close());
    open.ws.removeAllListeners('message');
    open.ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) return;
      const { accept } = JSON.parse(String(data)) as { accept?: { address: string } };
      if (!accept) return;
      const leg = new WebSocket(accept.address);
      leg.on('error', () => undefined);
      t.after(() => leg.terminate());
    });
    // Connects round robin until one is routed to the stuck listener, which is then dropped.
    const statuses: number[] = [];
    const connectUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    for (let i = 0; i < 4 && stuckChannel.isOpen; i++) statuses.push(await upgradeStatus(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl) } }));
    assert.equal(stuckChannel.isOpen, false, 'no connect was routed to the stuck listener');
    // Before: the connect routed to it failed 502 ListenerGone while the other listener was there.
    assert.deepEqual(statuses, statuses.map(() => 101));
  });

  it('a connect whose only listener could not be told (dropped, its buffer full) fails 502 ListenerGone, not 404', async (t) => {
    const { relay, stuckChannel } = await relayWithStuckListener(t);
    const connectUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const answer = await upgradeRefusal(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl) } });
    assert.equal(stuckChannel.isOpen, false);
    // The connect was asked again elsewhere (nobody took it): the listener left, it was not that there was none.
    assert.deepEqual(answer, { status: 502, code: 'ListenerGone' });
  });
});
