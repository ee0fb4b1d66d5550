// limits.groupsPerConnection on a durable (JetStream) hub: a join takes effect
// where the stream applies it, so the limit is decided there, in the stream's
// order, and the client's ack says what happened (src/pubsub/hub-cluster.ts
// join, stream-events.ts joinTookEffect). Before (found by review): joins
// sent back to back past the limit were all acked success, the last one never
// joined; a leave and a join sent back to back at the limit were refused.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import { startEdge, type Edge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

describe('a durable hub holds limits.groupsPerConnection in the order its stream applies joins and leaves', () => {
  const cleanup = new Cleanup();
  let edge: Edge;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    edge = await startEdge(cleanup, 'limit-edge', [nats.url], { limits: { groupsPerConnection: 2 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, durable: true }] } });
  });
  after(() => cleanup.run());

  async function client(t: Parameters<typeof RawPubSubClient.connect>[2], userId: string) {
    const c = await RawPubSubClient.connect(accessUrl(edge.url, { userId, roles: ['webpubsub.joinLeaveGroup'] }), PLAIN, t);
    await c.waitFor((m) => m.type === 'system' && m.event === 'connected');
    return c;
  }

  it('refuses (Forbidden) a join sent back to back past the limit, and it is not joined', async (t) => {
    const c = await client(t, 'eager');
    ['l1', 'l2', 'l3'].forEach((group, i) => c.send({ type: 'joinGroup', group, ackId: i + 1 }));
    const acks = await Promise.all([1, 2, 3].map((id) => c.waitFor((m) => m.type === 'ack' && m.ackId === id, 10000)));
    assert.deepEqual(acks.map((a) => a.success), [true, true, false]);
    assert.equal(acks[2].error.name, 'Forbidden');
    const rest = serviceClient(edge);
    assert.deepEqual(await Promise.all(['l1', 'l2', 'l3'].map((g) => rest.groupExists(g))), [true, true, false]);
    // A retry of the refused request (the SDK retries it with the same ackId) is refused again, not a Duplicate,
    // which the SDK would take for success.
    c.send({ type: 'joinGroup', group: 'l3', ackId: 3 });
    const retried = await c.waitFor((m) => m.type === 'ack' && m.ackId === 3 && m !== acks[2], 10000);
    assert.equal(retried.error?.name, 'Forbidden');
    assert.equal(await rest.groupExists('l3'), false);
  });

  it('takes a join sent right after a leave at the limit: the leave counts first', async (t) => {
    const c = await client(t, 'mover');
    assert.equal((await c.request({ type: 'joinGroup', group: 'm1' }, 10000)).success, true);
    assert.equal((await c.request({ type: 'joinGroup', group: 'm2' }, 10000)).success, true);
    c.send({ type: 'leaveGroup', group: 'm1', ackId: 10 });
    c.send({ type: 'joinGroup', group: 'm3', ackId: 11 });
    const acks = await Promise.all([10, 11].map((id) => c.waitFor((m) => m.type === 'ack' && m.ackId === id, 10000)));
    assert.deepEqual(acks.map((a) => a.success), [true, true], JSON.stringify(acks));
    const rest = serviceClient(edge);
    assert.deepEqual(await Promise.all(['m1', 'm2', 'm3'].map((g) => rest.groupExists(g))), [false, true, true]);
  });
});
