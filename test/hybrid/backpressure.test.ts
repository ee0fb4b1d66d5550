// A slow reader slows the writer: 128 MiB through a relayed WebSocket to a
// listener that reads in short bursts. The relay (a separate process) must
// keep its memory growth under 64 MiB and deliver every byte in order. (With
// 64 MiB the bound could not tell: with backpressure disabled the relay grew
// about 60 MiB, part of the excess sitting in kernel socket buffers.)
import assert from 'node:assert/strict';
import { getDefaultHighWaterMark, setDefaultHighWaterMark } from 'node:stream';
import { after, before, describe, it, type TestContext } from 'node:test';
import type WebSocket from 'ws';
import { Cleanup } from '../helpers/cleanup.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { startRelayProcess, startTestRelay, tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const MESSAGES = 128;
const SIZE = 1 << 20;

function message(i: number): Buffer {
  const b = Buffer.alloc(SIZE, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

/** A sender's WebSocket relayed to a listener's accepted leg on entity "echo"; both end with the test. */
async function relayedPair(t: TestContext, relayUrl: string): Promise<{ leg: WebSocket; sender: WebSocket }> {
  const listenUrl = wsUrl(relayUrl, '/$hc/echo?sb-hc-action=listen');
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => listener.close());
  const senderUrl = wsUrl(relayUrl, '/$hc/echo?sb-hc-action=connect');
  const opening = openWebSocket(senderUrl, { headers: { ServiceBusAuthorization: tokenFor(senderUrl) } });
  const { accept } = await withTimeout(listener.next(), 10000, 'the accept notice');
  const leg: WebSocket = await withTimeout(openWebSocket(accept.address), 10000, 'the listener leg');
  const sender = await withTimeout(opening, 10000, 'the sender');
  t.after(() => {
    leg.terminate();
    sender.terminate();
  });
  return { leg, sender };
}

describe('backpressure on a relayed WebSocket', () => {
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    relay = await startRelayProcess(cleanup);
  });
  after(() => cleanup.run());

  it('keeps relay memory growth under 64 MiB while 128 MiB go to a slow reader, in order', async (t) => {
    const { leg, sender } = await relayedPair(t, relay.url);
    leg.pause();
    const baseline = relay.rss();
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, relay.rss())), 20);
    t.after(() => clearInterval(sampler));

    let received = 0;
    let inOrder = true;
    const done = new Promise<void>((resolve) => {
      leg.on('message', (data: Buffer) => {
        if (data.length !== SIZE || !data.equals(message(received))) inOrder = false;
        received++;
        // Read one message, then stop reading for a while: a slow consumer.
        leg.pause();
        if (received === MESSAGES) resolve();
        else setTimeout(() => leg.resume(), 20);
      });
    });
    for (let i = 0; i < MESSAGES; i++) sender.send(message(i), { binary: true });
    // Let the sender fill every buffer on the way before the reader starts.
    await new Promise((r) => setTimeout(r, 500));
    leg.resume();
    await withTimeout(done, 90000, 'all 128 MiB to arrive');
    clearInterval(sampler);
    const growth = peak - baseline;
    t.diagnostic(`relay RSS baseline ${(baseline / 2 ** 20).toFixed(1)} MiB, peak growth ${(growth / 2 ** 20).toFixed(1)} MiB`);
    assert.equal(received, MESSAGES);
    assert.ok(inOrder, 'every byte arrived, in order');
    assert.ok(growth < 64 * 2 ** 20, `relay grew ${growth} bytes while 128 MiB passed`);
  });

  it('keeps a relayed WebSocket flowing when spliceBufferBytes is below the sockets\' high-water mark', async (t) => {
    // Node 22 gives sockets a 64 KiB high-water mark (Node 20: 16 KiB); a
    // queue between spliceBufferBytes and that mark draws no 'drain', so a
    // relay that paused the source there never read it again. Set here for
    // this relay's sockets (it runs in this process).
    const before = getDefaultHighWaterMark(false);
    setDefaultHighWaterMark(false, 65536);
    t.after(() => setDefaultHighWaterMark(false, before));
    const relay = await startTestRelay(t, { limits: { spliceBufferBytes: 16384 } });
    const { leg, sender } = await relayedPair(t, relay.url);
    const count = 3000;
    let received = 0;
    let inOrder = true;
    const done = new Promise<void>((resolve) => {
      leg.on('message', (data: Buffer) => {
        if (data.readUInt32BE(0) !== received) inOrder = false;
        if (++received === count) resolve();
      });
    });
    // Small messages: the relay's queue to the listener grows past 16 KiB in small steps.
    for (let i = 0; i < count; i++) {
      const m = Buffer.alloc(1024, 0x61);
      m.writeUInt32BE(i, 0);
      sender.send(m, { binary: true });
    }
    await withTimeout(done, 15000, `all ${count} messages (${received} so far)`);
    assert.ok(inOrder);
  });
});
