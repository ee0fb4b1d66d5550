// The bench's HTTP load client: answers read by their length, a status other
// than 200 refused, and a request nobody answers fails instead of stalling the run.
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { LeanHttpConnection } from '../../bench/lib/lean-http.ts';
import { cleanupFor } from '../helpers/cleanup.ts';

/** A TCP server on 127.0.0.1 that hands each request's bytes to `answer` with its socket. */
async function server(t: { after(fn: () => unknown): void }, answer: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const s = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', () => answer(socket));
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => s.close(resolve));
  });
  return (s.address() as { port: number }).port;
}

describe('bench lean HTTP client', () => {
  it('reads answers in pieces by their length, and refuses a status other than 200', async (t) => {
    let status = 200;
    const port = await server(t, (socket) => {
      const answer = Buffer.from(`HTTP/1.1 ${status} X\r\nContent-Length: 5\r\n\r\nhello`);
      socket.write(answer.subarray(0, 20));
      setTimeout(() => socket.write(answer.subarray(20)), 20);
    });
    const client = await LeanHttpConnection.open(port, '/x');
    cleanupFor(t).after(() => client.close());
    assert.ok((await client.get()) > 0);
    status = 503;
    await assert.rejects(client.get(), /HTTP answer: HTTP\/1\.1 503/);
  });

  it('fails a request not answered within its time and ends the connection', async (t) => {
    const port = await server(t, () => {});
    const client = await LeanHttpConnection.open(port, '/x', 300);
    cleanupFor(t).after(() => client.close());
    const started = performance.now();
    await assert.rejects(client.get(), /no answer within 300 ms/);
    const waited = performance.now() - started;
    assert.ok(waited >= 300 && waited < 5000, `failed after ${waited} ms`);
    await assert.rejects(client.get(), /connection closed/);
  });
});
