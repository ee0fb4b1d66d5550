// What a sender's edge asks a listener's edge in hc.alive (src/hybrid/cluster-link.ts): every connect and request it
// has waited on there a while, at every check, at most MAX_IDS_ASKED (1,000) to a question. Each one named has its
// watch on the listener's edge started again; one not named is forgotten there after httpResponseMs and a grace (its
// listener's answer then dropped), and its lost answer is never found. On the memory bus, with a stand-in for the
// listener's edge.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { MemoryBus } from '../../src/bus/memory.ts';
import { decodeEdgeMessage, encodeEdgeMessage } from '../../src/bus/messages.ts';
import { Subjects } from '../../src/bus/subjects.ts';
import { respond } from '../../src/bus/bus.ts';
import { HybridClusterLink } from '../../src/hybrid/cluster-link.ts';
import { newRendezvousId } from '../../src/hybrid/rendezvous-table.ts';
import type { ChannelExchange } from '../../src/hybrid/control-channel.ts';
import type { HybridContext } from '../../src/hybrid/context.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { until } from '../helpers/wait.ts';

const exchange: ChannelExchange = { onControlResponse: () => undefined, badResponse: () => {}, listenerLost: () => {} };

/**
 * A sender's edge on `bus` with `waiting` ids waiting on 'listener-edge' (ids[0] the longest, one a millisecond, the
 * last `young` of them routed just now), and `check()`, which runs one check and resolves with its questions' ids.
 */
function senderEdge(t: TestContext, bus: MemoryBus, waiting: number, young = 0) {
  const subjects = new Subjects('test');
  const questions: { ids: string[]; bytes: number }[] = [];
  bus.subscribe(subjects.nodeHybrid('listener-edge'), (m) => {
    const alive = decodeEdgeMessage(m.data, 'hc.alive')?.message;
    if (alive) questions.push({ ids: alive.ids ?? [], bytes: m.data.length });
    respond(bus, m, encodeEdgeMessage({ op: 'hc.alive' }));
  });
  const link = new HybridClusterLink(bus, subjects, 'sender-edge', {} as HybridContext, createLogger('silent', 'test'), 1000);
  t.after(() => link.close());
  // The edge's clock is set for each call into it; the test's own waits keep the real one.
  let now = Date.now();
  const at = (fn: () => void): void => {
    const realNow = Date.now;
    Date.now = () => now;
    try {
      fn();
    } finally {
      Date.now = realNow;
    }
  };
  const ids = Array.from({ length: waiting }, () => newRendezvousId(0));
  ids.forEach((id, i) => {
    if (i === waiting - young) now += 10_000;
    now += 1;
    at(() => link.watch('listener-edge', id, exchange, true));
  });
  if (young === 0) now += 10_000;
  return {
    ids,
    async check(): Promise<{ ids: string[]; bytes: number }[]> {
      questions.length = 0;
      now += 500;
      at(() => (link as unknown as { checkEdges(): void }).checkEdges());
      await until(() => questions.reduce((n, q) => n + q.ids.length, 0) >= waiting - young, 2000, 'every id due named');
      await new Promise((resolve) => setTimeout(resolve, 20));
      return [...questions];
    },
  };
}

describe('hc.alive: what a sender edge asks about', () => {
  it('names every connect and request waited on 2 s or more at every check, 1,000 to a question, when more wait on one edge', async (t) => {
    // 2,500 waiting a while, and 10 that have not waited 2 s yet.
    const edge = senderEdge(t, new MemoryBus(), 2510, 10);
    for (let check = 0; check < 2; check++) {
      const questions = await edge.check();
      assert.deepEqual(questions.map((q) => q.ids.length), [1000, 1000, 500]);
      const named = questions.flatMap((q) => q.ids);
      // Before: only the 1,000 that had waited longest, the same ones at every check.
      assert.deepEqual(new Set(named), new Set(edge.ids.slice(0, 2500)), `check ${check}: every id due, once`);
      assert.equal(named.length, 2500);
    }
  });

  it("keeps each question within a NATS server's smaller max_payload", async (t) => {
    const maxPayload = 8 * 1024;
    const edge = senderEdge(t, new MemoryBus({ maxPayload }), 1200);
    const questions = await edge.check();
    assert.ok(questions.length > 1, `${questions.length} questions`);
    for (const q of questions) assert.ok(q.bytes <= maxPayload, `a question of ${q.bytes} bytes`);
    assert.deepEqual(new Set(questions.flatMap((q) => q.ids)), new Set(edge.ids));
  });
});
