// An edge slow to answer /$relay/stats and /$relay/status questions
// (src/ops/other-edges.ts): its answer, later than bus.gatherStallMs after the
// asker's own, misses the question, which does not wait for an edge it has not
// heard from; but it is read when it comes (within bus.requestTimeoutMs), and
// the next question waits for that edge. Before, an answer after the gather
// ended was dropped unread, so an edge always that slow (busy, or with many
// hubs and entities to count) was never learnt and missing from every other
// edge's stats, status and dashboard for good. Here the slow answer is real:
// edge-b is stopped (SIGSTOP) for 500 ms when it is asked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CORE_NATS, startEdge, whilePaused, type Edge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { tokenFor } from '../helpers/relay.ts';

/** How long edge-b is stopped at each question: past bus.gatherStallMs (50 ms), well within bus.requestTimeoutMs (2 s). */
const PAUSE_MS = 500;
/** bus.requestTimeoutMs of the edges (test/helpers/cluster.ts): a late answer is read until then. */
const REQUEST_TIMEOUT_MS = 2000;

/** The node ids `path` of `asker` lists, when it was asked, and how long the question took. */
async function listed(asker: Edge, path: string): Promise<{ nodes: string[]; started: number; ms: number }> {
  const started = Date.now();
  const res = await httpRequest(`${asker.url}${path}`, { headers: { authorization: tokenFor(asker.url) }, timeoutMs: 10_000 });
  const ms = Date.now() - started;
  assert.equal(res.status, 200, String(res.body));
  return { nodes: (JSON.parse(String(res.body)) as { nodes: { nodeId: string }[] }).nodes.map((n) => n.nodeId), started, ms };
}

describe('an edge that answers after the gather ended', () => {
  for (const path of ['/$relay/stats', '/$relay/status']) {
    it(`is missing from the first ${path} that misses it, then waited for (before: never listed)`, { timeout: 60_000 }, async (t) => {
      const nats = await startNatsServer(t, 'n1');
      const a = await startEdge(t, 'edge-a', [nats.url], CORE_NATS);
      const b = await startEdge(t, 'edge-b', [nats.url], CORE_NATS);
      const first = await whilePaused(t, b, PAUSE_MS, () => listed(a, path));
      assert.deepEqual(first.nodes, ['edge-a'], 'edge-b, stopped, misses the first question');
      // Not slowed down by the edge it had not heard from: it ends gatherStallMs after its own answer.
      assert.ok(first.ms < REQUEST_TIMEOUT_MS - 500, `the first question took ${first.ms} ms`);
      // edge-b answers once it runs again; its answer is read until requestTimeoutMs after the question.
      await new Promise((r) => setTimeout(r, Math.max(0, first.started + REQUEST_TIMEOUT_MS + 200 - Date.now())));
      const second = await whilePaused(t, b, PAUSE_MS, () => listed(a, path));
      assert.deepEqual(second.nodes, ['edge-a', 'edge-b'], 'the next question waits for edge-b, as slow again');
    });
  }
});

// A question that keeps listening for late answers does so for up to bus.requestTimeoutMs after it was asked; that
// wait must not keep a stopped edge's process alive (before: it was held until the CLI's 2 s exit grace ended it).
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
    // Held, it took the grace (2,052 ms); a stop with nothing held takes a few hundred, more on a loaded machine.
    assert.ok(ms < 1800, `the edge took ${ms} ms to exit`);
  });
});
