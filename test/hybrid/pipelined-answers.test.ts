// timeouts.senderStallMs cuts a sender "that takes none of the response" (docs/configuration.md: the bound runs while
// the relay's queue to the sender is full). On a keep-alive connection with pipelined requests, Node writes the
// answers in order: an answer that is ready while an earlier one is still awaited from its listener waits in
// memory, and its writes report a full queue although the sender reads everything it is sent. That wait is the
// earlier listener's (bounded by timeouts.httpResponseMs), not a stall of the sender: the sender gets both
// answers (before: its connection was cut when senderStallMs ran out, the earlier answer lost with it).
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { describe, it, type TestContext } from 'node:test';
import { RawListener } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

/**
 * A relay with a listener of `open` that notes each request notice, and a sender that pipelines `GET /open/slow`
 * and `GET /open/big` in one write; `answerBig` answers the second at once over its rendezvous with 256 KiB, more
 * than a response buffers, so that answer waits its turn behind the first.
 */
async function slowThenBig(t: TestContext, timeouts: Record<string, number>) {
  const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], timeouts });
  const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => listener.close());
  listener.ws.removeAllListeners('message');
  const requests = new Map<string, { id: string; address: string }>();
  listener.ws.on('message', (data, binary) => {
    if (binary) return;
    const { request } = JSON.parse(String(data)) as { request?: { id: string; address: string; requestTarget: string } };
    if (request) requests.set(request.requestTarget, request);
  });
  const sender = await tcp(t, relay.port);
  const pipeline = async () => {
    sender.write('GET /open/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /open/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await withTimeout((async () => { while (requests.size < 2) await new Promise((r) => setTimeout(r, 10)); })(), 5000, 'both notices');
  };
  const answerBig = async () => {
    const big = requests.get('/open/big')!;
    const address = new URL(big.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    leg.socket.resume();
    const body = Buffer.alloc(256 * 1024, 0x62);
    leg.socket.write(maskedFrame(0x1, JSON.stringify({ response: { requestId: big.id, statusCode: 200, responseHeaders: { 'content-length': String(body.length) }, body: true } })));
    leg.socket.write(maskedFrame(0x2, body));
    return body;
  };
  return { listener, requests, sender, pipeline, answerBig };
}

describe('pipelined requests whose first answer takes longer than senderStallMs', () => {
  it('reach a sender that reads everything: the second answer waiting its turn is no stall of the sender', async (t) => {
    const { listener, requests, sender, pipeline, answerBig } = await slowThenBig(t, { httpResponseMs: 10000, senderStallMs: 1000 });
    let got = Buffer.alloc(0);
    let closedAt = 0;
    sender.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
    sender.on('close', () => (closedAt = Date.now()));
    const started = Date.now();
    // Two requests in one write (pipelining); the sender reads all the time.
    await pipeline();
    // The second is answered at once, over its rendezvous, with 256 KiB (more than a response buffers).
    const body = await answerBig();

    // The first is answered after 2.5 s (a slow query; well within httpResponseMs).
    await new Promise((r) => setTimeout(r, 2500));
    const slow = requests.get('/open/slow')!;
    listener.ws.send(JSON.stringify({ response: { requestId: slow.id, statusCode: 200, responseHeaders: { 'content-length': '4' }, body: true } }));
    listener.ws.send(Buffer.from('slow'));

    const text = () => got.toString('latin1');
    await withTimeout(
      (async () => { while (!closedAt && got.length < body.length + 200) await new Promise((r) => setTimeout(r, 20)); })(),
      8000,
      'both answers or the connection closed',
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(closedAt, 0, `the connection of a sender that read everything was cut ${closedAt - started} ms in; it got: ${JSON.stringify(text().slice(0, 200))}`);
    assert.equal(text().match(/HTTP\/1\.1 200 /g)?.length, 2);
    assert.ok(text().includes('slow'));
  });
});

const STALL_MS = 777;

describe('a pipelined answer waiting its turn when its sender hangs up', () => {
  it('leaves no sender-stall timer running after the connection is gone (before: it re-armed for good, holding the exchange and its buffered answer; found by review)', async (t) => {
    // Timeouts of STALL_MS, by async id, until destroyed (fired without being re-armed, or cleared).
    const live = new Map<number, { _idleTimeout?: number }>();
    const hook = createHook({
      init(id, type, _trigger, resource) {
        if (type === 'Timeout' && (resource as { _idleTimeout?: number })._idleTimeout === STALL_MS) live.set(id, resource as { _idleTimeout?: number });
      },
      destroy(id) {
        live.delete(id);
      },
    }).enable();
    t.after(() => hook.disable());
    const { sender, pipeline, answerBig } = await slowThenBig(t, { httpResponseMs: 20000, senderStallMs: STALL_MS });
    sender.resume();
    await pipeline();
    // The second is answered at once over its rendezvous: it waits its turn.
    await answerBig();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(live.size > 0, 'the queued answer armed its sender-stall timer (setup)');
    // The sender gives up before the first answer comes.
    sender.destroy();
    await new Promise((r) => setTimeout(r, 6 * STALL_MS));
    assert.equal(live.size, 0, `sender-stall timer(s) still re-arming ${6 * STALL_MS} ms after the sender's connection closed (the exchange and its buffered answer are held for good)`);
  });
});
