// /$relay/status: this node and, through the bus, the whole cluster.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startEdge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoWsListener } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB_KEY, RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { startTestRelay, tokenFor } from '../helpers/relay.ts';

async function status(relayUrl: string, token?: string): Promise<{ status: number; body: any }> {
  const r = await httpRequest(`${relayUrl}/$relay/status`, { headers: token ? { authorization: token } : {} });
  return { status: r.status, body: JSON.parse(r.body.toString()) };
}

describe('/$relay/status', () => {
  it('needs the Manage right and describes this node', async (t) => {
    const relay = await startTestRelay(t, pubsubOverrides({ hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }] }));
    assert.equal((await status(relay.url)).status, 401);
    await startHycoWsListener(t, relay.url, () => {});
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroup'] }), undefined, t);
    assert.equal((await client.request({ type: 'joinGroup', group: 'room' })).success, true);
    const r = await status(relay.url, tokenFor(`${relay.url}/`));
    assert.equal(r.status, 200);
    assert.equal(r.body.complete, true);
    assert.equal(r.body.nodes.length, 1);
    const [node] = r.body.nodes;
    assert.equal(node.bus.kind, 'memory');
    assert.deepEqual(node.entities, [{ name: 'echo', listeners: 1 }]);
    assert.deepEqual(node.hubs.find((h: any) => h.name === 'chat'), { name: 'chat', connections: 1, groups: 1, sessionsRetained: 0 });
    assert.deepEqual(r.body.cluster.entities, [{ name: 'echo', listeners: 1, nodes: [node.nodeId] }]);
  });

  it('lists every edge through the bus, and says when it cannot, naming the edges it could not ask', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startEdge(t, 'edge-a', [nats.url]);
    // The same hub spelt otherwise in edge B's config: one hub (they are found by their lower-case name).
    const b = await startEdge(t, 'edge-b', [nats.url], { pubsub: { hubs: [{ name: 'Chat', accessKey: HUB_KEY }] } });
    await startHycoWsListener(t, a.url, () => {});
    const client = await RawPubSubClient.connect(accessUrl(b.url, { roles: ['webpubsub.joinLeaveGroup'] }), undefined, t);
    assert.equal((await client.request({ type: 'joinGroup', group: 'room' })).success, true);

    const r = await status(a.url, tokenFor(`${a.url}/`));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.node, 'edge-a');
    assert.equal(r.body.complete, true);
    assert.deepEqual(r.body.nodes.map((n: any) => n.nodeId), ['edge-a', 'edge-b']);
    assert.deepEqual(r.body.cluster.entities, [{ name: 'echo', listeners: 1, nodes: ['edge-a'] }]);
    // Before, the cluster's totals listed `chat` (0 connections) and `Chat` (1) as two hubs.
    assert.deepEqual(r.body.cluster.hubs.filter((h: any) => h.name.toLowerCase() === 'chat').map((h: any) => h.connections), [1]);
    assert.equal(r.body.nodes[1].hubs.find((h: any) => h.name === 'Chat').groups, 1);

    await nats.kill();
    let seen: any;
    for (let i = 0; i < 100; i++) {
      seen = (await status(a.url, tokenFor(`${a.url}/`))).body;
      if (!seen.complete) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(seen.complete, false);
    assert.match(seen.problem, /nats bus is unreachable/);
    assert.deepEqual(seen.nodes.map((n: any) => n.nodeId), ['edge-a']);
    // The edge it could not ask is named, as /$relay/stats lists it under `silent` (before: missing was empty).
    assert.deepEqual(seen.missing, ['edge-b']);
  });

  it('answers at once on a lone edge on NATS, waits for the edges it heard from lately, and names one that went missing', async (t) => {
    const nats = await startNatsServer(t);
    // A long bus.requestTimeoutMs: before, a lone edge waited all of it on every /status and /stats.
    const slowBus = { bus: { requestTimeoutMs: 8000 } };
    const a = await startEdge(t, 'edge-a', [nats.url], slowBus);
    const timed = async (path: string) => {
      const started = Date.now();
      const r = await httpRequest(`${a.url}/$relay/${path}`, { headers: { authorization: tokenFor(`${a.url}/`) } });
      return { ms: Date.now() - started, body: JSON.parse(r.body.toString()) };
    };
    for (const path of ['status', 'stats']) {
      const alone = await timed(path);
      assert.ok(alone.ms < 4000, `/${path} alone took ${alone.ms} ms`);
      assert.deepEqual(alone.body.nodes.map((n: any) => n.nodeId), ['edge-a']);
    }
    const b = await startEdge(t, 'edge-b', [nats.url], slowBus);
    const both = await timed('status');
    assert.deepEqual(both.body.nodes.map((n: any) => n.nodeId), ['edge-a', 'edge-b']);
    assert.deepEqual(both.body.missing, []);
    // Gone without a word: waited for once (up to requestTimeoutMs), then named, and not waited for again.
    await b.kill();
    const after = await timed('status');
    assert.deepEqual(after.body.nodes.map((n: any) => n.nodeId), ['edge-a']);
    assert.deepEqual(after.body.missing, ['edge-b']);
    assert.equal(after.body.complete, true);
    // Before: every question for 10 minutes waited all of requestTimeoutMs for it.
    const later = await timed('status');
    assert.ok(later.ms < 4000, `the next /status took ${later.ms} ms`);
    assert.deepEqual(later.body.missing, ['edge-b']);
  });
});
