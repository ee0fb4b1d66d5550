// limits.pendingPerEntity across edges: requests waiting for an entity's
// listeners are counted on the listener's edge, whichever edge their senders
// came through. Before: each sender's edge counted only its own senders, so
// a listener's edge held the limit once from every edge (with three edges,
// three times what the config allows). Two edges in this process on one
// nats-server; the listener is Microsoft's hyco-https, holding every request
// until the test lets it answer.
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { describe, it } from 'node:test';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

describe('limits.pendingPerEntity on a cluster', () => {
  it("counts requests routed from another edge on the listener's edge: past the limit the sender hears 503 TooManyPending", async (t) => {
    const nats = await startNatsServer(t);
    const overrides = (name: string) => edgeOverrides(name, [nats.url], { limits: { pendingPerEntity: 2 }, timeouts: { httpResponseMs: 20000, shutdownMs: 500 } });
    const a = await startTestRelay(t, overrides('edge-a'));
    const b = await startTestRelay(t, overrides('edge-b'));
    const held: ServerResponse[] = [];
    await startHycoHttpsListener(t, a.url, (_req, res) => void held.push(res), 'held');
    const get = (base: string, n: number) => {
      const url = `${base}/held/${n}`;
      return httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 15000 });
    };
    // One through the listener's edge, one through B: the limit, both at the listener.
    const first = get(a.url, 1);
    await until(() => held.length === 1, 5000, 'the first request at the listener');
    const second = get(b.url, 2);
    await until(() => held.length === 2, 5000, 'the second request at the listener');
    // Before: B counted one of its own and routed this one too (held.length 3); A would have refused only its own third.
    const third = await get(b.url, 3);
    assert.equal(third.status, 503, third.body.toString());
    assert.match(third.body.toString(), /TooManyPending|pending/i);
    assert.equal(held.length, 2);
    const local = await get(a.url, 4);
    assert.equal(local.status, 503, 'the listener edge refuses its own sender too');
    // Answered: the count goes down and B's next request reaches the listener again.
    for (const res of held.splice(0)) res.end('done');
    assert.deepEqual([(await first).status, (await second).status], [200, 200]);
    const again = get(b.url, 5);
    await until(() => held.length === 1, 5000, 'a request after the others were answered');
    held[0].end('done');
    assert.equal((await again).status, 200);
  });
});
