// The bridge's pipe between a local TCP connection and a relayed WebSocket
// (src/bridge/pipe.ts): when the local side ends while the WebSocket was not
// being read (the local side had stopped reading), the relay's answer to the
// close is still read, so the leg ends at once and not after ws's 30 s.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { pipeSocketToWebSocket, type PipeResult } from '../../src/bridge/pipe.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { tcpPair } from '../helpers/raw-socket.ts';
import { until, withTimeout } from '../helpers/wait.ts';

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

  /**
   * A pipe between a TCP pair and a WebSocket to a server standing for the relay: `peer` is the
   * local client (half-open allowed, so it closes nothing unless told), `relaySide` the server's end.
   */
  async function pipedPair(t: Parameters<typeof cleanupFor>[0]) {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    cleanupFor(t).after(() => new Promise((r) => wss.close(r)));
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanupFor(t).after(() => new Promise((r) => server.close(r)));
    const accepting = once(server, 'connection') as Promise<[Socket]>;
    const peer = connect({ port: (server.address() as { port: number }).port, host: '127.0.0.1', allowHalfOpen: true });
    cleanupFor(t).after(() => peer.destroy());
    const [tcp] = await withTimeout(accepting, 5000, 'TCP accept');
    cleanupFor(t).after(() => tcp.destroy());
    const relaySideP = once(wss, 'connection') as Promise<[WebSocket]>;
    const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
    cleanupFor(t).after(() => ws.terminate());
    await once(ws, 'open');
    const [relaySide] = await withTimeout(relaySideP, 5000, 'relay side');
    let ended: PipeResult | undefined;
    pipeSocketToWebSocket(tcp, ws, 1 << 20, (r) => (ended = r));
    return { peer, tcp, relaySide, ended: () => ended };
  }

  it('closes the local socket once the relay leg closes cleanly, though its peer keeps its own side open (before: half-open for good)', async (t) => {
    const { peer, tcp, relaySide } = await pipedPair(t);
    const received: Buffer[] = [];
    peer.on('data', (d: Buffer) => received.push(d));
    const peerEnded = once(peer, 'end');
    relaySide.send(Buffer.from('bye'));
    relaySide.close(1000, 'done');
    await withTimeout(peerEnded, 3000, 'the peer to get the end');
    assert.equal(Buffer.concat(received).toString(), 'bye');
    // The peer never ends its side; the pipe's socket closes anyway.
    await until(() => tcp.destroyed, 3000, 'the local socket to close');
  });

  it('resets the local socket when the relay leg is cut (any close but 1000), so the peer cannot take it for a clean end', async (t) => {
    const { peer, relaySide } = await pipedPair(t);
    const outcome = new Promise<string>((resolve) => {
      peer.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      peer.once('end', () => resolve('end'));
    });
    relaySide.close(1011, 'the far side was reset');
    assert.equal(await withTimeout(outcome, 3000, 'the peer to hear'), 'ECONNRESET');
  });

  it('closes the relay leg with 1011 when the local socket is reset, and 1000 when it ends', async (t) => {
    for (const [cut, code] of [[true, 1011], [false, 1000]] as const) {
      const { peer, relaySide } = await pipedPair(t);
      const closed = once(relaySide, 'close') as Promise<[number, Buffer]>;
      if (cut) peer.resetAndDestroy();
      else peer.end();
      const [got] = await withTimeout(closed, 3000, 'the relay leg to close');
      assert.equal(got, code, cut ? 'reset' : 'end');
    }
  });
});
