// What a sender's edge asks a listener's edge in hc.alive (src/hybrid/cluster-link.ts): the connects and requests it
// has waited on there a while, at most MAX_IDS_ASKED (1,000) of them, the longest waiting first. Each one named has
// its watch on the listener's edge started again; one never named is forgotten there after httpResponseMs and a
// grace, and its listener's answer then dropped. On the memory bus, with a stand-in for the listener's edge.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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

describe('hc.alive: what a sender edge asks about', () => {
  it('names the 1,000 connects and requests that have waited longest, when more wait on one edge', async (t) => {
    const bus = new MemoryBus();
    const subjects = new Subjects('test');
    const asked: string[][] = [];
    bus.subscribe(subjects.nodeHybrid('listener-edge'), (m) => {
      const alive = decodeEdgeMessage(m.data, 'hc.alive')?.message;
      if (alive) asked.push(alive.ids ?? []);
      respond(bus, m, encodeEdgeMessage({ op: 'hc.alive' }));
    });
    const link = new HybridClusterLink(bus, subjects, 'sender-edge', {} as HybridContext, createLogger('silent', 'test'), 1000);
    t.after(() => link.close());
    const exchange: ChannelExchange = { onControlResponse: () => undefined, badResponse: () => {}, listenerLost: () => {} };
    const realNow = Date.now;
    let now = realNow();
    Date.now = () => now;
    t.after(() => (Date.now = realNow));
    // 1,500 waiting, one a millisecond: ids[0] the longest.
    const ids = Array.from({ length: 1500 }, () => newRendezvousId(0));
    for (const id of ids) {
      now += 1;
      link.watch('listener-edge', id, exchange, true);
    }
    now += 10_000;
    (link as unknown as { checkEdges(): void }).checkEdges();
    Date.now = realNow;
    await until(() => asked.length > 0, 2000, 'the check');
    const named = new Set(asked[0]);
    assert.equal(named.size, 1000);
    const skipped = ids.slice(0, 1000).filter((id) => !named.has(id));
    // Before: the first 1,000 in the table's hash order, whichever they were (the same ones at every check).
    assert.deepEqual(skipped, [], 'the longest waiting are named');
  });
});
