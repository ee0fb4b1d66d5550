import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { RelayAccess, masksHidden } from '../../src/bridge/relay-access.ts';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A raw TCP server that answers one WebSocket handshake and hands on the mask key of the first frame that follows. */
function captureFirstMask(): Promise<{ server: Server; sockets: Set<Socket>; port: number; mask: Promise<Buffer> }> {
  return new Promise((resolve) => {
    let gotMask: (mask: Buffer) => void;
    const mask = new Promise<Buffer>((r) => (gotMask = r));
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      let buffered = Buffer.alloc(0);
      let upgraded = false;
      socket.on('data', (chunk) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (!upgraded) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) return;
          const key = /sec-websocket-key: *(\S+)/i.exec(buffered.subarray(0, end).toString())![1];
          const accept = createHash('sha1').update(key + GUID).digest('base64');
          socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
          upgraded = true;
          buffered = buffered.subarray(end + 4);
        }
        // A short frame: 2 header bytes, then the 4-byte key.
        if (buffered.length >= 6) gotMask(Buffer.from(buffered.subarray(2, 6)));
      });
      socket.on('close', () => sockets.delete(socket));
    });
    server.listen(0, '127.0.0.1', () => resolve({ server, sockets, port: (server.address() as { port: number }).port, mask }));
  });
}

describe('bridge masking keys', () => {
  const cleanup: (() => void)[] = [];
  after(() => cleanup.forEach((c) => c()));

  it('are zero only where nothing between bridge and relay reads the frames (TLS, loopback)', () => {
    for (const url of ['wss://relay.example.com/$hc/x', 'https://relay.example.com', 'ws://127.0.0.1:9400/$hc/x', 'ws://localhost:1/', 'ws://[::1]:9400/']) {
      assert.equal(masksHidden(url), true, url);
    }
    for (const url of ['ws://relay.example.com/$hc/x', 'ws://10.0.0.5:9400/', 'ws://127.example.com/', 'not a url']) {
      assert.equal(masksHidden(url), false, url);
    }
    const access = new RelayAccess({ url: 'http://relay.example.com', tokenTtlSeconds: 60 });
    assert.equal(access.socketOptions('ws://relay.example.com/$hc/x').generateMask, undefined);
    assert.equal(access.socketOptions('ws://relay.example.com/$hc/x').perMessageDeflate, false);
  });

  it('go out as zero on the wire to a loopback relay', async () => {
    const { server, sockets, port, mask } = await captureFirstMask();
    cleanup.push(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const url = `ws://127.0.0.1:${port}/$hc/x`;
    const ws = new WebSocket(url, new RelayAccess({ url: `http://127.0.0.1:${port}`, tokenTtlSeconds: 60 }).socketOptions(url));
    cleanup.push(() => ws.terminate());
    ws.on('error', () => {});
    ws.once('open', () => ws.send(Buffer.from('hello'), { binary: true }));
    const key = await Promise.race([mask, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no frame in 5 s')), 5000).unref())]);
    assert.deepEqual([...key], [0, 0, 0, 0]);
  });
});
