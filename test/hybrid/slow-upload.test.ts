// A relayed request's body the sender uploads slowly: timeouts.httpResponseMs
// bounds a pause in it, not the whole upload (before, an upload longer than
// it failed 504 while its bytes still flowed). A sender that stops mid-body
// gets 408 RequestTimeout and its connection closed; a body cut on its way to
// the listener (sender gone or stopped) reaches the listener's rendezvous as a
// cut connection, not a close frame, which Microsoft.Azure.Relay's listener
// stream would read as the end of a whole body.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const RESPONSE_MS = 1500;

/** A raw sender connection to the relay; everything it reads is kept. */
async function openSender(t: { after(fn: () => void): void }, port: number): Promise<{ socket: Socket; text(): string; ended: Promise<void> }> {
  const socket = connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await withTimeout(new Promise((r) => socket.once('connect', r)), 5000, 'the sender connection');
  return { socket, text: () => text, ended };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function head(relayUrl: string, length: number): string {
  return `POST /echo/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(`${relayUrl}/echo`)}\r\nContent-Length: ${length}\r\n\r\n`;
}

/**
 * A request of 200,000 bytes whose sender has sent its head and 50,000 of them, and the listener's rendezvous leg
 * for it, open. `closed` gives the leg's close code; `messages`, what came on it.
 */
async function legMidUpload(t: { after(fn: () => void): void }) {
  const relay = await startTestRelay(t, { timeouts: { httpResponseMs: RESPONSE_MS } });
  const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => listener.close());
  const sender = await openSender(t, relay.port);
  sender.socket.write(head(relay.url, 200_000));
  sender.socket.write(Buffer.alloc(50_000, 1));
  const notice = await listener.next();
  const leg = new WebSocket(notice.request.address);
  t.after(() => leg.terminate());
  leg.on('error', () => undefined);
  const messages: { binary: boolean; bytes: number }[] = [];
  leg.on('message', (data: Buffer, binary: boolean) => messages.push({ binary, bytes: data.length }));
  const closed = new Promise<number>((resolve) => leg.once('close', (code: number) => resolve(code)));
  await withTimeout(new Promise((r) => leg.once('open', r)), 5000, 'the rendezvous leg');
  return { relay, sender, leg, closed, messages, requestId: String(notice.request.id) };
}

describe('a slow or stopped upload of a relayed HTTP request', () => {
  it('is answered when its bytes keep coming, however long it takes in all (control channel and rendezvous)', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: RESPONSE_MS } });
    await startHycoHttpsListener(t, relay.url, (req, res) => {
      let got = 0;
      req.on('data', (c: Buffer) => (got += c.length));
      req.on('end', () => {
        res.setHeader('x-got', String(got));
        res.end('ok');
      });
    });
    // 1,000 bytes go with the notice on the control channel; 100,000 by rendezvous.
    for (const total of [1000, 100_000]) {
      const sender = await openSender(t, relay.port);
      sender.socket.write(head(relay.url, total));
      // Six pieces 400 ms apart: 2.4 s in all, past httpResponseMs, never a pause as long.
      for (let i = 0; i < 6; i++) {
        await sleep(400);
        sender.socket.write(Buffer.alloc(i < 5 ? Math.floor(total / 6) : total - 5 * Math.floor(total / 6), 97));
      }
      await withTimeout(
        (async () => {
          // The whole answer: `ok`, with a length or in chunks.
          while (!/\r\n\r\n(ok|2\r\nok\r\n0\r\n\r\n)$/.test(sender.text())) await sleep(20);
        })(),
        10000,
        `the answer to a ${total}-byte upload (got ${JSON.stringify(sender.text().slice(0, 80))})`,
      ).catch((err) => {
        throw new Error(`${err.message}: ${JSON.stringify(sender.text().split('\r\n')[0])}`);
      });
      assert.match(sender.text(), /^HTTP\/1\.1 200 /, `${total} bytes`);
      assert.match(sender.text(), new RegExp(`x-got: ${total}\\r\\n`, 'i'));
      sender.socket.destroy();
    }
  });

  it('stopped mid-body on the control channel path: 408 RequestTimeout, the connection closed, the listener told nothing', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { httpResponseMs: RESPONSE_MS } });
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const sender = await openSender(t, relay.port);
    sender.socket.write(head(relay.url, 1000) + 'x'.repeat(500));
    await withTimeout(sender.ended, 10000, 'the stalled sender to be answered and closed');
    assert.match(sender.text(), /^HTTP\/1\.1 408 /);
    assert.match(sender.text(), /\r\nconnection: close\r\n/i);
    assert.match(sender.text(), /RequestTimeout/);
    // Nothing reached the listener: the request needed its whole body first.
    await assert.rejects(listener.next(300), /timed out/);
    assert.equal(relay.hybrid.openConnections().http_request, 0);
  });

  for (const how of ['stops sending', 'goes away'] as const) {
    it(`whose sender ${how} mid-body on the rendezvous path: the listener's leg is cut, not closed with a close frame`, async (t) => {
      const { relay, sender, closed, messages } = await legMidUpload(t);
      if (how === 'goes away') {
        await until(() => messages.length === 1, 5000, 'the request head on the leg');
        sender.socket.destroy();
      }
      // 1006: no close frame came. Before: 1000, which ends the body message for a .NET listener.
      assert.equal(await withTimeout(closed, 10000, 'the leg to end'), 1006);
      // The request head came whole; the body, a message never ended, never did.
      assert.deepEqual(messages, [{ binary: false, bytes: messages[0]?.bytes }]);
      if (how === 'stops sending') {
        await withTimeout(sender.ended, 10000, 'the stalled sender to be answered and closed');
        assert.match(sender.text(), /^HTTP\/1\.1 408 /);
      }
      assert.equal(relay.hybrid.openConnections().http_request, 0);
    });
  }

  // Found by review: the cut above was at first applied to every failure with the body open, the listener's own.
  for (const how of ['closes it', 'sends a frame with a reserved opcode on it'] as const) {
    it(`whose listener ${how} mid-body: the leg gets the close handshake with its code, not a cut`, async (t) => {
      const { relay, sender, leg, closed, messages } = await legMidUpload(t);
      // The request head has come: the body message is begun on the leg.
      await until(() => messages.length === 1, 5000, 'the request head on the leg');
      if (how === 'closes it') leg.close(1000);
      // Opcode 0xB, masked, empty: no such frame in RFC 6455.
      else (leg as unknown as { _socket: Socket })._socket.write(Buffer.from([0x8b, 0x80, 0, 0, 0, 0]));
      // Before: 1006, the leg destroyed as for a sender gone.
      assert.equal(await withTimeout(closed, 10000, 'the leg to end'), how === 'closes it' ? 1000 : 1002);
      await withTimeout(sender.ended, 10000, 'the sender to be answered and closed');
      assert.match(sender.text(), /^HTTP\/1\.1 502 /);
      assert.equal(relay.hybrid.openConnections().http_request, 0);
    });
  }

  it('whose listener sends a response head that is not JSON mid-body: 502, and its leg is cut (its read fails; no close frame ends the body for it)', async (t) => {
    const { relay, sender, leg, closed } = await legMidUpload(t);
    leg.send('{"response": not json');
    assert.equal(await withTimeout(closed, 10000, 'the leg to end'), 1006);
    await withTimeout(sender.ended, 10000, 'the sender to be answered and closed');
    assert.match(sender.text(), /^HTTP\/1\.1 502 /);
    assert.equal(relay.hybrid.openConnections().http_request, 0);
  });

  it('whose listener closes its leg after the response head and part of its body: the sender\'s response is cut short, the leg gets its close answered', async (t) => {
    const { relay, sender, leg, closed, requestId } = await legMidUpload(t);
    leg.send(JSON.stringify({ response: { requestId, statusCode: 200, statusDescription: 'OK', body: true } }));
    // The body is one binary message: this first fragment of it leaves it open.
    leg.send(Buffer.from('part of the answer'), { fin: false });
    const head = () => /^HTTP\/1\.1 200 [\s\S]*part of the answer/.test(sender.text());
    await withTimeout((async () => { while (!head()) await sleep(20); })(), 10000, 'the head and the first piece');
    leg.close(1000);
    assert.equal(await withTimeout(closed, 10000, 'the leg to end'), 1000);
    await withTimeout(sender.ended, 10000, 'the sender connection to be closed');
    // Chunked, and no last chunk: the sender cannot take it for a whole answer.
    assert.match(sender.text(), /transfer-encoding: chunked/i);
    assert.doesNotMatch(sender.text(), /\r\n0\r\n\r\n$/);
    assert.equal(relay.hybrid.openConnections().http_request, 0);
  });
});
