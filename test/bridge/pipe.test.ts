// The bridge's pipe between a local TCP connection and a relayed WebSocket
// (src/bridge/pipe.ts): when the local side ends while the WebSocket was not
// being read (the local side had stopped reading), the relay's answer to the
// close is still read, so the leg ends at once and not after ws's 30 s.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { pipeSocketToWebSocket, type PipeResult } from '../../src/bridge/pipe.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { tcpPair } from '../helpers/raw-socket.ts';
import { until } from '../helpers/wait.ts';

describe('bridge pipe', () => {
  it('ends the relayed leg at once when the local side hangs up after it stopped reading', async (t) => {
    // The relay's side: sends until told to stop, answers the close as ws does.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    cleanupFor(t).after(() => new Promise((r) => wss.close(r)));
    const relaySide: WebSocket[] = [];
    wss.on('connection', (ws) => {
      relaySide.push(ws);
      const chunk = Buffer.alloc(65536, 1);
      const send = () => {
        for (let i = 0; i < 16 && ws.readyState === ws.OPEN; i++) ws.send(chunk);
        if (ws.readyState === ws.OPEN) setTimeout(send, 5);
      };
      send();
    });
    // The local side: a TCP pair whose client end never reads.
    const { client, accepted: tcp } = await tcpPair(t);
    client.pause();
    const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
    cleanupFor(t).after(() => ws.terminate());
    await once(ws, 'open');
    let ended: PipeResult | undefined;
    pipeSocketToWebSocket(tcp, ws, 1 << 20, (r) => (ended = r));
    // The local client does not read: the pipe stops reading the WebSocket.
    await until(() => ws.isPaused, 10000, 'the pipe to pause the WebSocket');
    client.destroy();
    await until(() => ended !== undefined, 3000, 'the pipe to end');
    await until(() => ws.readyState === ws.CLOSED, 3000, 'the relayed leg to close (ws alone would wait 30 s)');
    assert.ok(relaySide.length === 1);
  });
});
