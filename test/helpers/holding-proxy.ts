// A TCP proxy on 127.0.0.1 in front of nats-server that, once its client asks a JetStream pull consumer for
// messages, holds what the server sends for a while: a loaded edge that reads the server's answers long after they
// were sent, past the wait of the pull that asked for them (test/bus/stream-read-lost-pull.test.ts).
import { createConnection, createServer, type Socket } from 'node:net';
import { cleanupFor } from './cleanup.ts';

/**
 * A proxy on 127.0.0.1 to `port` that, once the client has sent a JetStream pull request, holds everything the
 * server sends for `holdMs`, then passes it on in order; with `passFirst`, the first that many deliveries of a pull
 * (`$JS.ACK` replies) pass at once, and the hold begins at the line of the next. Says when it began holding.
 */
export async function startHoldingProxy(
  t: Parameters<typeof cleanupFor>[0],
  port: number,
  holdMs: number,
  passFirst = 0,
): Promise<{ port: number; heldSince: () => number | undefined }> {
  const sockets = new Set<Socket>();
  let heldSince: number | undefined;
  const server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    const held: Buffer[] = [];
    let holding = false;
    client.on('data', (chunk: Buffer) => {
      if (heldSince === undefined && chunk.includes('CONSUMER.MSG.NEXT')) {
        heldSince = performance.now();
        holding = true;
        setTimeout(() => {
          holding = false;
          for (const c of held.splice(0)) client.write(c);
        }, holdMs);
      }
      upstream.write(chunk);
    });
    // With passFirst: what the server sends once the hold began, until the line of the delivery after those passed.
    let looking = Buffer.alloc(0);
    let split = passFirst === 0;
    upstream.on('data', (chunk: Buffer) => {
      if (!holding) return void client.write(chunk);
      if (split) return void held.push(chunk);
      looking = Buffer.concat([looking, chunk]);
      let at = -1;
      for (let n = 0; n <= passFirst; n++) {
        at = looking.indexOf('$JS.ACK.', at + 1);
        if (at < 0) return;
      }
      const lineStart = looking.lastIndexOf('\r\n', at) + 2;
      split = true;
      client.write(looking.subarray(0, lineStart));
      held.push(looking.subarray(lineStart));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as { port: number }).port, heldSince: () => heldSince };
}
