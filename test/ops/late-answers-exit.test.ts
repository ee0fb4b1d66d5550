// A question that keeps listening for late answers (src/ops/other-edges.ts,
// bus.gather's `late`) does so for up to bus.requestTimeoutMs after it was
// asked; that wait must not keep a stopped edge's process alive.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CORE_NATS, startEdge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { tokenFor } from '../helpers/relay.ts';

describe('an edge stopped while a question listens for late answers', () => {
  it('exits without waiting for the question to stop listening', { timeout: 60_000 }, async (t) => {
    const nats = await startNatsServer(t, 'n1');
    const a = await startEdge(t, 'edge-a', [nats.url], { ...CORE_NATS, bus: { ...CORE_NATS.bus, requestTimeoutMs: 30_000 } });
    const res = await httpRequest(`${a.url}/$relay/stats`, { headers: { authorization: tokenFor(a.url) }, timeoutMs: 10_000 });
    assert.equal(res.status, 200, String(res.body));
    const exited = new Promise((r) => a.child.once('exit', r));
    const stopping = Date.now();
    a.child.kill('SIGTERM');
    await exited;
    const ms = Date.now() - stopping;
    assert.ok(ms < 1500, `the edge took ${ms} ms to exit`);
  });
});
