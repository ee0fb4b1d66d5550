// A `serve --workers 2` primary (src/server/worker-cluster.ts, as it is) with
// two stand-in workers that speak its messages, for worker-supervision.test.ts.
// While the primary's event loop is busy for a moment (a pause, a loaded
// machine), worker 1 says `listening` (as a worker started again does) and
// worker 2 dies: the primary then writes the peer table to worker 2, whose
// channel is gone but not yet seen closed (EPIPE). Prints `survived` and
// exits 0 if the primary lived through it.
import cluster from 'node:cluster';
import type { RestartOnlyValues } from '../../src/server/reload.ts';
import { startWorkers } from '../../src/server/worker-cluster.ts';

if (cluster.isPrimary) {
  // The stand-ins read no config.
  const workers = startWorkers(2, 'fixture', {} as RestartOnlyValues);
  await workers.ready;
  const at = Date.now() + 300;
  for (const worker of Object.values(cluster.workers ?? {})) worker?.send({ kind: 'fixture.go', at });
  setTimeout(() => {
    const end = Date.now() + 600;
    while (Date.now() < end);
  }, 150);
  setTimeout(() => {
    process.stdout.write('survived\n');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
    process.exit(0);
  }, 3000);
} else {
  const index = Number(process.env.EDGE_RELAY_WORKER);
  process.on('message', (m: { kind?: string; at?: number }) => {
    if (m?.kind !== 'fixture.go') return;
    const delay = m.at! - Date.now() + (index === 1 ? 0 : 50);
    setTimeout(() => {
      if (index === 1) process.send!({ kind: 'edge-relay.listening', privateSocket: '/nonexistent/w1.sock' });
      else process.kill(process.pid, 'SIGKILL');
    }, delay);
  });
  // Without a primary (it exited) a stand-in has nothing left to do.
  process.on('disconnect', () => process.exit(0));
  process.send!({ kind: 'edge-relay.listening', privateSocket: `/nonexistent/w${index}.sock` });
  process.send!({ kind: 'edge-relay.ready', url: 'http://127.0.0.1:1' });
}
