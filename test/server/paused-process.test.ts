// A relay whose process was paused (SIGSTOP, a VM stall, a blocked event
// loop) for longer than timeouts.idleMs keeps its live listeners and pub/sub
// clients (src/websocket/sweep-clock.ts). Its keep-alive timer fires first
// after the pause, before the pongs that arrived meanwhile are read; before,
// that sweep dropped every listener and client as idle. Likewise a connection
// whose first bytes came during the pause is read, not answered 408
// (firstByteMs). Here the relay and its peers share this process, and the
// pause is a busy loop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { blockEventLoop } from '../helpers/busy-pause.ts';
import { RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { readUntil, tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

const timeouts = { keepAliveIntervalMs: 100, idleMs: 300 };

describe('a relay paused for longer than idleMs', () => {
  it('keeps the listeners and clients that answered all along', async (t) => {
    const relay = await startPubSubRelay(t, { timeouts, hybridConnections: [{ name: 'paused', requiresClientAuthorization: false }] });
    const listenUrl = wsUrl(relay.url, '/$hc/paused?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const client = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    // Both answer the relay's pings (ws does): a few sweeps without a pause drop neither.
    await new Promise((r) => setTimeout(r, 200));
    blockEventLoop(800);
    // Several sweeps after the pause: the first runs late, the next ones judge with the pongs read since.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(listener.ws.readyState, WebSocket.OPEN, 'the listener');
    assert.equal(client.ws.readyState, WebSocket.OPEN, 'the pub/sub client');
    assert.equal([...relay.hybrid.listeners.all()].length, 1);
  });

  it('answers a connection whose first bytes came during the pause, past firstByteMs (before: 408)', async (t) => {
    const relay = await startTestRelay(t, { timeouts: { firstByteMs: 200 } });
    const socket = await tcp(t, relay.port);
    // Accepted and counted silent by the relay before the pause.
    await new Promise((r) => setTimeout(r, 100));
    socket.write(`GET /$relay/health HTTP/1.1\r\nHost: 127.0.0.1:${relay.port}\r\n\r\n`);
    blockEventLoop(800);
    const answer = await readUntil(socket, (b) => b.includes('\r\n\r\n'), 5000, 'the answer');
    assert.match(answer.toString('latin1'), /^HTTP\/1\.1 200 /);
  });
});
