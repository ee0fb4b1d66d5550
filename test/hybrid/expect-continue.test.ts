// Expect: 100-continue on a relayed request (src/http/expect-continue.ts): the
// relay tells the sender to send its body only once it will take it. A sender
// without a valid token, or naming no entity, is refused at once and never
// sends the body; an authorized one gets 100 Continue, sends, and the
// listener (Microsoft's hyco-https) answers as usual. On a relay alone, a
// request to an entity with no listener is refused at once too.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

/** Sends a request head with Expect: 100-continue; resolves with each status line as it arrives, and the socket. */
function expectContinue(t: Parameters<typeof cleanupFor>[0], port: number, path: string, headers: Record<string, string>, length: number) {
  const socket: Socket = connect(port, '127.0.0.1');
  cleanupFor(t).after(() => socket.destroy());
  socket.on('error', () => {});
  let text = '';
  const waiters: Array<{ lines: number; resolve: (l: string[]) => void }> = [];
  const statusLines = () => [...text.matchAll(/(?:^|\r\n\r\n|\r\n(?=HTTP\/))(HTTP\/1\.1 \d{3}[^\r]*)/g)].map((m) => m[1]);
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    const lines = statusLines();
    for (const w of [...waiters]) if (lines.length >= w.lines) waiters.splice(waiters.indexOf(w), 1), w.resolve(lines);
  });
  const head = Object.entries({ Host: `127.0.0.1:${port}`, 'Content-Length': String(length), Expect: '100-continue', ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
  const lines = (n: number) => withTimeout(new Promise<string[]>((resolve) => waiters.push({ lines: n, resolve })), 5000, `${n} status lines`);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, lines, closed, text: () => text };
}

describe('Expect: 100-continue on relayed requests', () => {
  it('refuses an unauthorized sender or an unknown entity without asking for the body, and asks an authorized one', async (t) => {
    const relay = await startTestRelay(t);
    const bodies: string[] = [];
    await startHycoHttpsListener(t, relay.url, (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c));
      req.on('end', () => {
        bodies.push(body);
        res.end(`got ${body.length}`);
      });
    });
    const port = relay.port;
    // Before, Node answered 100 Continue to each of these before anything was checked, and the body was sent for nothing.
    const noToken = expectContinue(t, port, '/echo/upload', {}, 5);
    assert.match((await noToken.lines(1))[0], /^HTTP\/1\.1 401 /);
    await withTimeout(noToken.closed, 5000, 'the refused connection to close (its body may still come)');
    const unknown = expectContinue(t, port, '/nowhere/upload', {}, 5);
    assert.match((await unknown.lines(1))[0], /^HTTP\/1\.1 404 /);

    const url = `${relay.url}/echo/upload`;
    const allowed = expectContinue(t, port, '/echo/upload', { ServiceBusAuthorization: tokenFor(url) }, 5);
    assert.equal((await allowed.lines(1))[0], 'HTTP/1.1 100 Continue');
    allowed.socket.write('hello');
    const lines = await allowed.lines(2);
    assert.match(lines[1], /^HTTP\/1\.1 200 /);
    assert.deepEqual(bodies, ['hello']);
  });

  it('refuses a request to an entity with no listener without asking for the body, on a relay alone (in-process bus)', async (t) => {
    const relay = await startTestRelay(t);
    const url = `${relay.url}/echo/upload`;
    // Before, 100 Continue and then 404 NoListener: the sender uploaded its body to be refused (found by audit).
    const none = expectContinue(t, relay.port, '/echo/upload', { ServiceBusAuthorization: tokenFor(url) }, 5);
    const [first] = await none.lines(1);
    assert.match(first, /^HTTP\/1\.1 404 /);
    assert.match(none.text(), /NoListener/);
  });
});
