// A reliable client of a durable hub at the relay's shutdown (docs/protocols/web-pubsub.md, close codes;
// docs/scaling-out.md, graceful shutdown): it gets `disconnected` and a close frame 1012 ShuttingDown, so it
// recovers its session on another edge, and its socket is ended within timeouts.closeHandshakeMs of that frame
// when it never answers the close (stream-sessions.ts letGo leaves a socket already closing 1012 to its
// handshake: the bound, not the drain's timeouts.shutdownMs, ends it). A client by hand that reads and never
// answers a close frame; a real nats-server with JetStream.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, RELIABLE, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { parseServerFrames, rawUpgrade } from '../helpers/raw-socket.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

describe('a durable hub at shutdown', () => {
  it('closes a reliable client 1012 ShuttingDown and ends its socket within closeHandshakeMs when the client never answers the close', async (t) => {
    const closeHandshakeMs = 300;
    const shutdownMs = 8000;
    const nats = await startNatsServer(t);
    const overrides = pubsubOverrides({
      bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: { storage: 'memory' } },
      timeouts: { closeHandshakeMs, shutdownMs },
    }) as { pubsub: { hubs: object[] } };
    overrides.pubsub.hubs = overrides.pubsub.hubs.map((h) => ({ ...h, durable: true }));
    const relay = await startTestRelay(t, overrides);
    await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hubs to read their streams');

    const url = new URL(accessUrl(relay.url));
    const client = await rawUpgrade(t, relay.port, url.pathname + url.search, { 'Sec-WebSocket-Protocol': RELIABLE });
    assert.equal(client.status, 101);
    let bytes = client.rest;
    let closeFrameAt: number | undefined;
    let endedAt: number | undefined;
    const ended = new Promise<void>((resolve) =>
      client.socket.once('close', () => {
        endedAt = performance.now();
        resolve();
      }),
    );
    client.socket.on('data', (chunk: Buffer) => {
      bytes = Buffer.concat([bytes, chunk]);
      if (closeFrameAt === undefined && parseServerFrames(bytes).frames.some((f) => f.opcode === 0x8)) closeFrameAt = performance.now();
    });
    client.socket.resume();
    const frames = () => parseServerFrames(bytes).frames;
    await until(() => frames().some((f) => f.payload.includes('"connected"')), 5000, 'connected');
    // Its session has its first checkpoint: the shutdown lets it go (letGo), for another edge to take.
    const connection = () => [...relay.pubsub.hub(HUB)!.local.connections.values()][0];
    await until(() => connection()?.session?.checkpoint !== undefined, 5000, 'the session\'s first checkpoint');

    const started = performance.now();
    const stopping = relay.close();
    await withTimeout(ended, closeHandshakeMs + 3000, 'the socket to be ended');
    assert.ok(closeFrameAt !== undefined, 'a close frame came before the end');
    const all = frames();
    const closeAt = all.findIndex((f) => f.opcode === 0x8);
    const close = all[closeAt];
    assert.deepEqual([close.payload.readUInt16BE(0), close.payload.subarray(2).toString()], [1012, 'ShuttingDown']);
    assert.equal(closeAt, all.length - 1, 'nothing after the close frame');
    const disconnected = all.slice(0, closeAt).map((f) => JSON.parse(f.payload.toString())).filter((m) => m.event === 'disconnected');
    assert.equal(disconnected.length, 1, 'one disconnected message before the close');
    // Ended by the handshake's bound: not at once (the relay waited for the client's answer), not at the drain's end.
    const waited = endedAt! - closeFrameAt;
    assert.ok(waited >= closeHandshakeMs * 0.8, `ended ${Math.round(waited)} ms after the close frame, before the handshake's bound`);
    assert.ok(waited < closeHandshakeMs + 2000, `ended ${Math.round(waited)} ms after the close frame`);
    assert.ok(endedAt! - started < shutdownMs / 2, 'ended well before the drain\'s deadline');
    await withTimeout(stopping, shutdownMs, 'the relay to stop');
  });
});
