// Requests whose framing a server cannot trust (RFC 9112 6.1): an HTTP/1.0
// message with Transfer-Encoding. HTTP/1.0 has no chunked coding, so a proxy in
// front may frame such a request otherwise (by its Content-Length, or with no
// body) and read what the relay took for a body as a request of its own, or
// the other way round. The RFC has the server process the message and close
// the connection after it: nothing that came after it on the connection is
// acted on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startTestRelay } from '../helpers/relay.ts';
import type { Socket } from 'node:net';
import { readToClose, tcp } from '../helpers/raw-socket.ts';

/** What `socket` receives within `ms` (well under the keep-alive timeout, 5 s), and whether it closed by then. */
function receivedWithin(socket: Socket, ms: number): Promise<{ bytes: Buffer; closed: boolean }> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ bytes: Buffer.concat(chunks), closed: false }), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(chunks), closed: true });
    });
  });
}

/** The status lines of the answers in `bytes`, in order. */
function statusLines(bytes: Buffer): string[] {
  return bytes.toString('latin1').match(/HTTP\/1\.1 \d{3}[^\r]*/g) ?? [];
}

describe('an HTTP/1.0 request with Transfer-Encoding (RFC 9112 6.1)', () => {
  for (const [what, target] of [
    ['an ops endpoint', '/$relay/health'],
    ['a relayed request', '/echo'],
  ] as const) {
    it(`is answered, and closes its kept-alive connection: ${what}`, async (t) => {
      const relay = await startTestRelay(t);
      const socket = await tcp(t, relay.port);
      socket.write(
        `POST ${target} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n` +
          'GET /$relay/smuggled HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n',
      );
      const { bytes, closed } = await receivedWithin(socket, 2000);
      const answers = statusLines(bytes);
      assert.equal(answers.length, 1, `one answer, none for the request after it: ${answers.join(' | ')}`);
      assert.ok(closed, 'the connection closed after the answer');
    });
  }

  it('leaves an HTTP/1.0 keep-alive connection without Transfer-Encoding open for the next request', async (t) => {
    const relay = await startTestRelay(t);
    const socket = await tcp(t, relay.port);
    socket.write(
      'POST /$relay/health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc' +
        'GET /$relay/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n',
    );
    const answers = statusLines(await readToClose(socket, 5000, 'the connection to close'));
    assert.equal(answers.length, 2, answers.join(' | '));
  });
});
