// The bridge's pipe between a local TCP connection and a relayed WebSocket
// (src/bridge/pipe.ts): when the local side ends while the WebSocket was not
// being read (the local side had stopped reading), the relay's answer to the
// close is still read, so the leg ends at once and not after ws's 30 s.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { LegKeepAlive } from '../../src/bridge/leg-keep-alive.ts';
import { HALF_CLOSE_HELLO, pipeSocketToWebSocket, type HalfClose, type PipeResult } from '../../src/bridge/pipe.ts';
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
  async function pipedPair(t: Parameters<typeof cleanupFor>[0], halfClose: HalfClose = 'off', keepAlive?: LegKeepAlive, autoPong = true) {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong });
    await once(wss, 'listening');
    cleanupFor(t).after(() => new Promise((r) => wss.close(r)));
    // Half-open allowed, as the bridge's own sockets are.
    const server = createServer({ allowHalfOpen: true });
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
    keepAlive?.prepare(ws);
    await once(ws, 'open');
    const [relaySide] = await withTimeout(relaySideP, 5000, 'relay side');
    let ended: PipeResult | undefined;
    // When the pipe ended and when its socket closed, taken as each happens (a test polling for them on a loaded
    // machine saw the end tens of milliseconds late, and a reset 200 ms after it as 105 ms).
    let endedAt = 0;
    let closedAt = 0;
    tcp.once('close', () => (closedAt = Date.now()));
    pipeSocketToWebSocket(tcp, ws, 1 << 20, (r) => ((ended = r), (endedAt = Date.now())), halfClose, keepAlive);
    return { peer, tcp, ws, relaySide, ended: () => ended, msFromEndToClose: () => (closedAt > 0 ? closedAt - endedAt : undefined) };
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

  /**
   * Sends the pair's local peer (which must not read) more than the kernels' buffers hold, and less than the pipe's
   * --buffer, so that the pipe still reads its leg: some of it waits in the pipe's socket. Returns the bytes sent.
   */
  async function fillKernelBuffers(pair: { tcp: Socket; relaySide: WebSocket }): Promise<number> {
    const chunk = Buffer.alloc(256 * 1024, 1);
    let sent = 0;
    while (pair.tcp.writableLength === 0) {
      if (sent > 256 << 20) throw new Error('the kernels took 256 MiB and asked for more');
      pair.relaySide.send(chunk);
      sent += chunk.length;
      await until(() => pair.tcp.bytesWritten >= sent, 5000, 'the pipe to write what came');
    }
    return sent;
  }

  it('resets the local socket that takes nothing of what is left for it for two keep-alive periods after the leg ended, where a clean end waited for it for good; a slow reader still gets all', async (t) => {
    // Before: a clean end (1000) left the socket to destroySoon(), which waits for everything queued to be written:
    // a local peer that stopped reading (hung, frozen) held the socket, and what was queued for it, for good.
    for (const [mode, end] of [['off', 'the relay side closes 1000'], ['off', 'the local side ends'], ['on', 'both sides end']] as const) {
      const keepAlive = new LegKeepAlive(100);
      const stuck = await pipedPair(t, mode, keepAlive);
      stuck.peer.pause();
      stuck.peer.on('error', () => undefined);
      await fillKernelBuffers(stuck);
      if (end === 'the relay side closes 1000') stuck.relaySide.close(1000, 'done');
      else if (end === 'the local side ends') stuck.peer.end();
      else {
        stuck.relaySide.send(Buffer.alloc(0));
        stuck.peer.end();
      }
      await until(() => stuck.ended() !== undefined, 3000, `the pipe to end (${end})`);
      await until(() => stuck.msFromEndToClose() !== undefined, 3000, `the socket whose peer reads nothing to go (${end})`);
      assert.ok(stuck.msFromEndToClose()! >= 150, `reset ${stuck.msFromEndToClose()} ms after the end: two periods of 100 ms (${end})`);
    }
    // A peer that reads, if slowly (one read of its socket every 40 ms), gets every byte and the end. (Longer periods:
    // Node sees what the kernel took only as whole writes are done, here after a few hundred ms.)
    const keepAlive = new LegKeepAlive(1000);
    const slow = await pipedPair(t, 'off', keepAlive);
    slow.peer.pause();
    const sent = await fillKernelBuffers(slow);
    slow.relaySide.close(1000, 'done');
    let got = 0;
    const peerEnded = once(slow.peer, 'end');
    const reader = setInterval(() => {
      let chunk: Buffer | null;
      for (let read = 0; read < 1 << 20 && (chunk = slow.peer.read() as Buffer | null) !== null; read += chunk.length) got += chunk.length;
    }, 40);
    cleanupFor(t).after(() => clearInterval(reader));
    await withTimeout(peerEnded, 20000, 'the slow peer to read everything and the end');
    assert.equal(got, sent);
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

  it('asking for half-close (-L) with a peer that never says it speaks it (an older -R): an end still ends the leg, at once once bytes came first', async (t) => {
    for (const bytesFirst of [true, false]) {
      const { peer, relaySide } = await pipedPair(t, 'ask');
      if (bytesFirst) {
        relaySide.send(Buffer.from('answer'));
        await withTimeout(once(peer, 'data'), 3000, 'the bytes');
      }
      const closed = once(relaySide, 'close') as Promise<[number, Buffer]>;
      const startedAt = Date.now();
      peer.end();
      const [code] = await withTimeout(closed, 5000, 'the relay leg to close');
      assert.equal(code, 1000);
      // Without bytes first, the end waits for a hello that does not come (2 s), then ends both ways.
      assert.ok(bytesFirst ? Date.now() - startedAt < 1000 : Date.now() - startedAt >= 1500, `closed after ${Date.now() - startedAt} ms`);
    }
  });

  it('with half-close spoken (the hello came first): an end goes as an empty message and the leg stays open the other way', async (t) => {
    const { peer, relaySide } = await pipedPair(t, 'ask');
    const messages: Buffer[] = [];
    relaySide.on('message', (d: Buffer) => messages.push(d));
    // The end may reach the pipe before the hello does: it waits for it, then goes as the empty message.
    relaySide.send(HALF_CLOSE_HELLO);
    peer.write('request');
    peer.end();
    await until(() => messages.length === 2, 3000, 'the bytes and the end');
    assert.deepEqual(messages.map((m) => m.toString()), ['request', '']);
    // The answer still reaches the peer, then the far end's end: the peer sees a clean end and the leg closes 1000.
    const got: Buffer[] = [];
    peer.on('data', (d: Buffer) => got.push(d));
    const peerEnded = once(peer, 'end');
    const closed = once(relaySide, 'close') as Promise<[number, Buffer]>;
    relaySide.send(Buffer.from('answer'));
    relaySide.send(Buffer.alloc(0));
    await withTimeout(peerEnded, 3000, 'the end');
    assert.equal(Buffer.concat(got).toString(), 'answer');
    assert.equal((await withTimeout(closed, 3000, 'the leg to close'))[0], 1000);
  });

  it('reads the leg again after the peer\'s end arrived while it was paused for a slow local reader, so a later cut is seen (before: paused for good)', async (t) => {
    const { peer, tcp, relaySide, ended } = await pipedPair(t, 'on');
    peer.pause();
    let got = 0;
    peer.on('data', (d: Buffer) => (got += d.length));
    const peerEnded = once(peer, 'end');
    // One message larger than --buffer, the end right behind it: the pipe pauses the leg, then ends its socket.
    relaySide.send(Buffer.alloc(4 << 20, 1));
    relaySide.send(Buffer.alloc(0));
    await until(() => tcp.writableEnded, 3000, 'the end to reach the local socket');
    peer.resume();
    await withTimeout(peerEnded, 10000, 'the peer to read everything and the end');
    assert.equal(got, 4 << 20);
    // The far side cuts the leg: the pipe must read the close and end.
    relaySide.close(1011, 'far side cut');
    await until(() => ended() !== undefined, 3000, 'the pipe to see the cut');
    assert.equal(ended()!.reason, 'relay side closed (1011)');
  });

  it('pauses the relay-to-TCP direction at --buffer bytes queued for the local socket, and resumes once it drains (before: at write()\'s 16 KiB mark)', async (t) => {
    const { peer, tcp, ws, relaySide } = await pipedPair(t);
    peer.pause();
    let got = 0;
    peer.on('data', (d: Buffer) => (got += d.length));
    const chunk = Buffer.alloc(64 * 1024, 7);
    const total = 24 << 20;
    let sent = 0;
    let pumping = true;
    cleanupFor(t).after(() => (pumping = false));
    const pump = () => {
      while (pumping && sent < total && relaySide.bufferedAmount < 1 << 20) {
        relaySide.send(chunk);
        sent += chunk.length;
      }
      if (pumping && sent < total) setTimeout(pump, 5);
    };
    pump();
    // The peer does not read: once the kernel's buffers are full, the pipe's queue grows until it pauses the leg.
    await until(() => ws.isPaused, 10000, 'the pipe to pause the leg');
    const queued = tcp.writableLength;
    assert.ok(queued >= 1 << 20, `paused with ${queued} bytes queued`);
    // Bounded too: what one read of the leg brings on top of --buffer.
    assert.ok(queued < 2 << 20, `paused with ${queued} bytes queued`);
    peer.resume();
    await until(() => got === total, 15000, 'every byte to reach the peer');
    assert.equal(ws.isPaused, false);
  });

  it('keeps a leg whose relay stops reading after bytes it was sent (a far end not reading), however long; one silent with nothing sent is cut', async (t) => {
    // Before: the few bytes went into the kernels' buffers (bufferedAmount 0), so the pings stuck behind them went
    // unanswered and the leg was cut after two periods, a healthy connection whose far end was merely slow.
    const keepAlive = new LegKeepAlive(100);
    const sending = await pipedPair(t, 'off', keepAlive);
    const idle = await pipedPair(t, 'off', keepAlive);
    // A cut leg's local socket is reset.
    for (const pair of [sending, idle]) pair.peer.on('error', () => undefined);
    const pings: number[] = [];
    sending.relaySide.on('ping', () => pings.push(Date.now()));
    let got = '';
    sending.relaySide.on('message', (d: Buffer) => (got += String(d)));
    // A relay side that does not read would hold the test server's close: cut at the end whatever happens.
    cleanupFor(t).after(() => (sending.relaySide.terminate(), idle.relaySide.terminate()));
    // Both relay sides stop reading (ws answers pings as it reads them), before the bytes go out on one of them: a
    // relay that read them with the ping after them is the case the keep-alive cannot tell from a dead path.
    sending.relaySide.pause();
    idle.relaySide.pause();
    sending.peer.write('a request the far end is slow to take');
    await until(() => sending.tcp.bytesRead > 0 && sending.ws.bufferedAmount === 0, 3000, 'the bytes to be sent');
    const pingsBefore = pings.length;
    await until(() => idle.ended() !== undefined, 5000, 'the silent leg with nothing sent to be cut');
    assert.match(idle.ended()!.reason, /^no answer from the relay for 0\.2 s/);
    idle.relaySide.terminate();
    // Several more periods: the leg with bytes unread is still open. Its relay reads again: every ping it
    // missed is there, answered, and the bytes arrive.
    await new Promise((r) => setTimeout(r, 600));
    sending.relaySide.resume();
    await until(() => got === 'a request the far end is slow to take', 3000, 'the bytes');
    await until(() => pings.length - pingsBefore >= 4, 3000, 'the pings sent while it was silent');
    assert.equal(sending.ended(), undefined);
    assert.equal(sending.ws.readyState, sending.ws.OPEN);
  });

  it('keeps a leg whose relay answered the ping after the bytes, then stopped reading; cuts it once a later ping was answered and silence follows', async (t) => {
    // Found by review: the relay read the bytes and the ping after them together, answered it, then held the leg back
    // for a far end not reading. Before, that one pong counted the silence again and the healthy leg was cut.
    const keepAlive = new LegKeepAlive(100);
    const { peer, relaySide, ended } = await pipedPair(t, 'off', keepAlive);
    peer.on('error', () => undefined);
    cleanupFor(t).after(() => relaySide.terminate());
    let got = '';
    let holdAtPing = false;
    relaySide.on('message', (d: Buffer) => {
      got += String(d);
      holdAtPing = true;
    });
    // ws answers a ping as it reads it, then emits 'ping': the pong is out when the relay side stops reading.
    relaySide.on('ping', () => {
      if (!holdAtPing) return;
      holdAtPing = false;
      relaySide.pause();
    });
    peer.write('a request the far end is slow to take');
    await until(() => relaySide.isPaused, 3000, 'the relay side to answer the ping after the bytes and stop reading');
    assert.equal(got, 'a request the far end is slow to take');
    // Eight periods, four times the silence that cuts a leg.
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(ended(), undefined);
    // It reads again (the far end took the bytes): the pings it held are answered, then it goes silent for good.
    let answered = 0;
    relaySide.on('ping', () => answered++);
    relaySide.resume();
    await until(() => answered >= 2, 3000, 'the held pings and one more to be answered');
    relaySide.pause();
    await until(() => ended() !== undefined, 5000, 'the leg silent with nothing sent since to be cut');
    assert.match(ended()!.reason, /^no answer from the relay for 0\.2 s/);
  });

  it('tells which ping a pong answers: a relay answering only some of them still gets a dead path after bytes cut (found by review)', async (t) => {
    // RFC 6455 5.5.3 lets a relay answer only the latest of several pings (ours does while a frame to the bridge
    // is half sent). Before, pongs were counted: here one per two pings, so the count fell further behind at every
    // ping, and once bytes were sent, a pong count the relay would never reach kept the silence from counting.
    const keepAlive = new LegKeepAlive(100);
    const { peer, relaySide, ended } = await pipedPair(t, 'off', keepAlive, false);
    peer.on('error', () => undefined);
    cleanupFor(t).after(() => relaySide.terminate());
    let pings = 0;
    let answering = true;
    relaySide.on('ping', (data: Buffer) => {
      if (++pings % 2 === 0 && answering) relaySide.pong(data);
    });
    await until(() => pings >= 20, 5000, 'twenty pings');
    peer.write('some bytes');
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(ended(), undefined);
    // The path dies: nothing answers any more.
    answering = false;
    await until(() => ended() !== undefined, 3000, 'the leg to be cut');
    assert.match(ended()!.reason, /^no answer from the relay for 0\.2 s/);
  });

  it('keeps a leg on which one large frame arrives slowly, its pongs held until the frame ends (found by review: cut before)', async (t) => {
    const keepAlive = new LegKeepAlive(100);
    // The relay holds a pong back until the frame it is forwarding to the bridge is whole: here, none comes.
    const { peer, relaySide, ended } = await pipedPair(t, 'off', keepAlive, false);
    peer.on('error', () => undefined);
    cleanupFor(t).after(() => relaySide.terminate());
    let got = 0;
    peer.on('data', (d: Buffer) => (got += d.length));
    const raw = (relaySide as unknown as { _socket: Socket })._socket;
    const size = 60_000;
    // One binary frame (server frames are unmasked), in 12 pieces 60 ms apart: 720 ms, over seven periods.
    raw.write(Buffer.from([0x82, 0x7e, size >> 8, size & 0xff]));
    for (let i = 0; i < 12; i++) {
      await new Promise((r) => setTimeout(r, 60));
      raw.write(Buffer.alloc(size / 12, 0x61));
    }
    await until(() => got === size, 3000, 'the frame to reach the local socket');
    assert.equal(ended(), undefined);
    // Silence after it (no pong, no byte) still ends the leg.
    await until(() => ended() !== undefined, 5000, 'the leg silent after the frame to be cut');
    assert.match(ended()!.reason, /^no answer from the relay for 0\.2 s/);
  });
});
