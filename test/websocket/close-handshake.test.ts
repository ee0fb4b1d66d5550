// The closing handshake every relay-terminated leg shares (RFC 6455 7.1.2).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { CloseHandshake, QUEUE_WAIT_FACTOR } from '../../src/websocket/close-handshake.ts';
import { MessageSocket } from '../../src/websocket/message-socket.ts';
import { OP_CLOSE, encodeClosePayload, encodeFrame } from '../../src/websocket/frames.ts';
import { until, withTimeout } from '../helpers/wait.ts';

let server: Server;
let port: number;
const accepted: Socket[] = [];

before(async () => {
  server = createServer((s) => accepted.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});

after(() => {
  for (const s of accepted) s.destroy();
  server.close();
});

/** A connected pair: the relay's side and the peer's. */
async function pair(): Promise<{ relay: Socket; peer: Socket; received: () => Buffer }> {
  const peer = connect(port, '127.0.0.1');
  await once(peer, 'connect');
  await until(() => accepted.length > 0, 2000, 'the relay side to be accepted');
  const relay = accepted.shift()!;
  const chunks: Buffer[] = [];
  peer.on('data', (c: Buffer) => chunks.push(c));
  peer.on('error', () => {});
  return { relay, peer, received: () => Buffer.concat(chunks) };
}

describe('closing handshake', () => {
  it('sends the close frame once and drops a peer that never answers', async () => {
    const { relay, received } = await pair();
    const handshake = new CloseHandshake(relay, 100);
    handshake.send(1008, 'policy');
    handshake.send(1000, 'again');
    await withTimeout(once(relay, 'close'), 2000, 'relay side dropped');
    assert.deepEqual(received(), encodeFrame(true, OP_CLOSE, encodeClosePayload(1008, 'policy')));
  });

  it('answers the peer close with its code and ends the relay side', async () => {
    const { relay, peer, received } = await pair();
    const handshake = new CloseHandshake(relay, 2000);
    const said = handshake.receive(encodeClosePayload(4001, 'bye'));
    assert.deepEqual(said, { code: 4001, reason: 'bye' });
    await withTimeout(once(peer, 'end'), 2000, 'relay ended its side');
    assert.deepEqual(received(), encodeFrame(true, OP_CLOSE, encodeClosePayload(4001)));
    peer.end();
  });

  it('answers a close without status with none, and a code that may not be echoed with none', async () => {
    for (const payload of [Buffer.alloc(0), encodeClosePayload(1006)]) {
      const { relay, peer, received } = await pair();
      new CloseHandshake(relay, 2000).receive(payload);
      await withTimeout(once(peer, 'end'), 2000, 'relay ended its side');
      assert.deepEqual(received(), encodeFrame(true, OP_CLOSE, Buffer.alloc(0)));
      peer.end();
    }
  });

  it('reads the peer\'s answer although its owner had stopped reading (backpressure, a held client)', async () => {
    const { relay, peer } = await pair();
    const seen: Buffer[] = [];
    relay.on('data', (c: Buffer) => seen.push(c));
    relay.pause();
    // Far longer than the bound below: only reading the answer ends the socket in time.
    new CloseHandshake(relay, 30000).send(1000);
    peer.write(encodeFrame(true, OP_CLOSE, encodeClosePayload(1000)));
    peer.end();
    await withTimeout(once(relay, 'close'), 3000, 'the relay side to see the peer end');
    assert.deepEqual(Buffer.concat(seen), encodeFrame(true, OP_CLOSE, encodeClosePayload(1000)));
  });

  for (const afterQueue of [true, false]) {
    it(`with 16 MiB queued before the close to a slow reader: ${afterQueue ? 'all of it reaches it, the bound counting from when the close is written (a relayed WebSocket)' : 'dropped closeHandshakeMs after the send, the rest of the queue with it (a pub/sub socket that does not keep up)'}`, async () => {
      const { relay, peer, received } = await pair();
      // More than the kernel's buffers on both sides hold: most of it waits in the relay's own queue, in writes of
      // 64 KiB as a splice makes them (one socket read each).
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let i = 0; i < 256; i++) relay.write(chunk);
      // A slow reader, taking a few MB a second: all of it takes seconds, many times closeHandshakeMs.
      peer.on('data', () => {
        peer.pause();
        setTimeout(() => peer.resume(), 20);
      });
      // A bound of 1 s: the queue takes several to read (within QUEUE_WAIT_FACTOR of them).
      new CloseHandshake(relay, 1000, afterQueue).send(1000);
      await withTimeout(new Promise((r) => peer.once('close', r)), 30000, 'the connection to end');
      const bytes = received();
      if (!afterQueue) {
        assert.ok(bytes.length < 256 * chunk.length, `${bytes.length} bytes: the queue was not dropped`);
        return;
      }
      // Before: as a pub/sub socket, dropped 1 s after the send with megabytes still queued.
      assert.equal(bytes.length, 256 * chunk.length + 4);
      assert.deepEqual([...bytes.subarray(-4)], [0x88, 2, 0x03, 0xe8]);
    });
  }

  it('with a queue before the close, drops a peer that reads none of it within QUEUE_WAIT_FACTOR bounds (a closed TCP window holds nothing for good)', async () => {
    const { relay, peer } = await pair();
    peer.pause();
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 32; i++) relay.write(chunk);
    const sentAt = Date.now();
    new CloseHandshake(relay, 100, true).send(1000);
    // A wide bound: what is checked is that the leg goes, not when (before: never, the close frame never written).
    await withTimeout(once(relay, 'close'), 100 * QUEUE_WAIT_FACTOR + 5000, 'the leg to be dropped');
    assert.ok(Date.now() - sentAt >= 100 * QUEUE_WAIT_FACTOR - 50, 'not before its bound');
  });

  it('resets a pub/sub peer that does not answer within the bound: the kernel lets go of what it held for it, not sent behind a FIN', async () => {
    const { relay, peer, received } = await pair();
    // Not reading from the start: its receive window stays small (128 KiB here), and the relay's kernel holds
    // megabytes more for it (4 MiB here) when the bound ends.
    peer.pause();
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 16; i++) relay.write(chunk);
    new CloseHandshake(relay, 100).send(1000);
    await withTimeout(once(relay, 'close'), 5000, 'the relay side to be dropped');
    const ended = new Promise((resolve) => {
      peer.on('close', resolve);
    });
    peer.resume();
    await withTimeout(ended, 10000, 'the peer to see the end');
    // Before (a FIN): the peer still got what the relay's kernel held, 4 MiB here.
    assert.ok(received().length < chunk.length, `${received().length} bytes reached the peer after it was dropped`);
  });

  it('does not answer the peer close that answers its own', async () => {
    const { relay, peer, received } = await pair();
    const handshake = new CloseHandshake(relay, 2000);
    handshake.send(1000);
    handshake.receive(encodeClosePayload(1000));
    await withTimeout(once(peer, 'end'), 2000, 'relay ended its side');
    assert.deepEqual(received(), encodeFrame(true, OP_CLOSE, encodeClosePayload(1000)));
    peer.end();
  });
});

describe('a pub/sub socket closing', () => {
  it('reads the client\'s answer when held after its close frame went out', async () => {
    const { relay, peer } = await pair();
    const closed = once(relay, 'close');
    const socket = new MessageSocket(relay, null, { onMessage() {}, onClosed() {}, onDrain() {} }, { maxMessageBytes: 1024, closeHandshakeMs: 30000, outboundHighWaterMark: 1 << 20 });
    socket.close(1000);
    // The owner got busy with the messages it had (a slow event handler) just after.
    socket.hold();
    // The client's close frame (1000, masked with a zero key), then its end.
    peer.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]));
    peer.end();
    await withTimeout(closed, 3000, 'the relay side to see the client end');
  });
});
