// A TCP echo server on 127.0.0.1 (port 0) for the bridge tests: it sends back
// what it reads and counts the connections it took; its sockets and the
// server are closed in the test's clean-up.
import { createServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';

export async function startTcpEcho(t: Pick<TestContext, 'after'>): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as { port: number }).port, connections: () => connections };
}
