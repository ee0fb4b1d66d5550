// A sender that asks for a streamed response and never reads it: once its
// connection takes nothing for timeouts.senderStallMs, the relay cuts it, so
// it holds neither the connection nor the listener's rendezvous (as nginx's
// send_timeout does).
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';
import { kernelStates } from '../helpers/raw-socket.ts';
import { gc } from '../helpers/gc.ts';

/**
 * A relay with `senderStallMs`, a hyco-https listener answering /echo/stream with an endless stream (over 64 KB, so
 * through a rendezvous), and a raw sender that asked for it and does not read; resolves once the request is relayed.
 */
async function senderOfEndlessStream(t: TestContext, senderStallMs: number): Promise<{ relay: RunningRelay; sender: Socket }> {
  const relay = await startTestRelay(t, { timeouts: { senderStallMs } });
  await startHycoHttpsListener(t, relay.url, (req, res) => {
    req.resume();
    res.setHeader('content-type', 'application/octet-stream');
    const piece = Buffer.alloc(65536, 3);
    const timer = setInterval(() => res.write(piece), 5);
    res.on('error', () => clearInterval(timer));
    res.on('close', () => clearInterval(timer));
    cleanupFor(t).after(() => clearInterval(timer));
  });
  const url = `${relay.url}/echo/stream`;
  const sender = connect(relay.port, '127.0.0.1');
  cleanupFor(t).after(() => sender.destroy());
  sender.on('error', () => {});
  sender.write(`GET /echo/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nServiceBusAuthorization: ${tokenFor(url)}\r\n\r\n`);
  // It does not read.
  sender.pause();
  await until(() => relay.hybrid.openConnections().http_request === 1, 5000, 'the request to be relayed');
  return { relay, sender };
}

describe('a sender that never reads its response', () => {
  it('is cut after senderStallMs, with the exchange that streamed to it', async (t) => {
    const { relay, sender } = await senderOfEndlessStream(t, 1000);
    // Bounds far past senderStallMs: before, the exchange stayed open for as long as the sender did.
    await until(() => relay.hybrid.openConnections().http_request === 0, 10000, 'the stalled exchange to be cut');
    // Cut with a reset: the relay's end of the connection is gone from the kernel at once. Closed with a FIN, it
    // stayed in FIN-WAIT-1 behind what was queued for the sender, for as long as TCP tries (minutes).
    assert.deepEqual(kernelStates(relay.port, sender.localPort!), [], 'no socket of the relay left for it in the kernel');
    // Its connection is closed too: reading now finds the end.
    let closed = false;
    sender.on('close', () => (closed = true));
    sender.resume();
    await until(() => closed, 5000, 'the sender connection to close');
  });
});

describe('a sender that read slowly and hung up', () => {
  it('leaves nothing held by the stall watch: its exchange is collectable at once, not after senderStallMs', async (t) => {
    const { relay, sender } = await senderOfEndlessStream(t, 60000);
    const table = (relay.hybrid as unknown as { ctx: { rendezvous: { entries: { values(): object[] } } } }).ctx.rendezvous;
    const exchange = new WeakRef(table.entries.values()[0]);
    // Its writes back up (the relay watches for a stall), then it hangs up.
    await until(() => (exchange.deref() as { senderStall?: unknown } | undefined)?.senderStall !== undefined, 10000, 'the stall watch to start');
    sender.destroy();
    await until(() => relay.hybrid.openConnections().http_request === 0, 10000, 'the exchange to end');
    // Before: the stall timer held it (its sockets, route and channel) for the rest of the 60 s.
    await until(() => {
      gc();
      return exchange.deref() === undefined;
    }, 10000, 'the exchange to be collected');
  });
});
