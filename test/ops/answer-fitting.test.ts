// What an edge answers another's /$relay/status and /$relay/stats with must
// fit the NATS server's max_payload (docs/endpoints.md). Found by review:
// stats carried each hub's largest groups, names of the clients' choosing, and
// an answer over max_payload was thrown inside a promise: the edge ended (exit
// 70) whenever anyone looked at the dashboard on another edge; and status,
// with a max_payload under its 4 KiB headroom, fitted its answer in a loop
// that never ended (the edge stopped answering anything).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fittedStats } from '../../src/ops/cluster-stats.ts';
import { decodeEdgeMessage } from '../../src/bus/messages.ts';
import type { EdgeStats } from '../../src/bus/messages.ts';
import { CORE_NATS, startEdge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';

/** Group names of control characters: 300 of each kept, 6 bytes each in JSON (\u0001). */
const HOSTILE_NAME = '\u0001'.repeat(1000);

function statsWith(hubs: number, groupsPerHub: number, entities: number): EdgeStats {
  return {
    nodeId: 'edge-b', publicUrl: 'http://127.0.0.1:1', startedAt: new Date(0).toISOString(), at: 0, shuttingDown: false,
    bus: { kind: 'nats', connected: true }, rss: 1,
    connections: { listener: 0, relayed_websocket: 0, http_request: 0, pubsub: 0 },
    hybrid: {
      requests: 0, connects: 0, bytes: 0, failures: {}, entityCount: entities,
      entities: Array.from({ length: entities }, (_, i) => ({ name: `entity-${i}`, listeners: entities - i, senders: 0, requests: 0, connects: 0, failures: 0, bytes: 0 })),
    },
    hubs: Array.from({ length: hubs }, (_, i) => ({
      name: `h${i}`, plain: hubs - i, reliable: 0, retained: 0, groups: groupsPerHub,
      topGroups: Array.from({ length: groupsPerHub }, (_, g) => ({ name: `${g}${HOSTILE_NAME.slice(0, 299)}`, members: 1 })),
      published: 0, received: 0, deliveries: 0, slowConsumerCloses: 0,
    })),
    limitRefusals: 0, traceDropped: 0,
  };
}

describe('an edge\'s stats answer on the bus', () => {
  it('is whole when it fits, and is cut to fit (largest groups first, then the least busy hubs and entities), saying so', () => {
    const small = fittedStats(statsWith(2, 2, 2), 1 << 20);
    assert.equal(decodeEdgeMessage(small, 'ops.edge')!.message.trimmed, undefined);
    for (const limit of [1 << 20, 64 << 10, 8 << 10, 1000, 0]) {
      const data = fittedStats(statsWith(100, 10, 50), limit);
      const answer = decodeEdgeMessage(data, 'ops.edge')?.message;
      assert.ok(answer, `the cut answer passes the schema (limit ${limit})`);
      assert.equal(answer.trimmed, true);
      if (limit > 1000) assert.ok(data.length <= limit, `${data.length} bytes over ${limit}`);
      assert.ok(answer.hubs.every((h) => h.topGroups.length === 0));
      // The busiest are kept.
      if (answer.hubs.length > 0) assert.equal(answer.hubs[0].name, 'h0');
    }
  });

  it("over a NATS server's max_payload (64 KiB here; about 57 such hubs at the default 1 MiB): another edge lists it trimmed, and it stays up (before: it ended, exit 70)", { timeout: 90_000 }, async (t) => {
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'max_payload: 65536\n' });
    const hubs = Array.from({ length: 4 }, (_, i) => ({ name: `h${i}`, accessKey: `hub-${i}-access-key-0123456789` }));
    const extra = { ...CORE_NATS, pubsub: { hubs } };
    const a = await startEdge(t, 'edge-a', [nats.url], extra);
    const b = await startEdge(t, 'edge-b', [nats.url], extra);
    for (const hub of hubs) {
      const client = await RawPubSubClient.connect(accessUrl(b.url, { hub: hub.name, key: hub.accessKey }), undefined, t);
      await Promise.all(Array.from({ length: 10 }, (_, g) => client.request({ type: 'joinGroup', group: `${g}${HOSTILE_NAME}` })));
    }
    // A first question waits for no edge it has not heard from (bus.gatherStallMs, 50 ms, after its own answer):
    // edge-b, fitting its answer on a loaded machine, may come later (seen in a full suite), and is waited for once
    // it answered (src/ops/other-edges.ts). Asked again until it is listed.
    let listed: (EdgeStats & { trimmed?: boolean }) | undefined;
    let body = '';
    const deadline = Date.now() + 15_000;
    while (!listed && Date.now() < deadline) {
      const stats = await httpRequest(`${a.url}/$relay/stats`, { headers: { authorization: tokenFor(a.url) }, timeoutMs: 10_000 });
      assert.equal(stats.status, 200);
      body = String(stats.body);
      listed = (JSON.parse(body) as { nodes: (EdgeStats & { trimmed?: boolean })[] }).nodes.find((n) => n.nodeId === 'edge-b');
      if (!listed) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(listed, `edge-b is not listed: ${body.slice(0, 300)}`);
    assert.equal(listed.trimmed, true);
    assert.equal(listed.hubs.length, 4);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(b.child.exitCode, null, `edge-b ended: ${b.stderr().split('\n').filter((l) => /crash|fatal/.test(l)).join('\n').slice(0, 500)}`);
    assert.equal((await httpRequest(`${b.url}/$relay/health`, { timeoutMs: 3000 })).status, 200);
  });
});

describe('an edge\'s status answer with a max_payload under the 4 KiB headroom', () => {
  it('is sent cut to its least, and the edge goes on answering (before: its fitting loop never ended)', { timeout: 60_000 }, async (t) => {
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'max_payload: 2048\n' });
    const a = await startEdge(t, 'edge-a', [nats.url], CORE_NATS);
    const b = await startEdge(t, 'edge-b', [nats.url], CORE_NATS);
    const listenUrl = wsUrl(b.url, '/$hc/sock?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const status = await httpRequest(`${a.url}/$relay/status`, { headers: { authorization: tokenFor(a.url) }, timeoutMs: 10_000 });
    assert.equal(status.status, 200);
    const health = await httpRequest(`${b.url}/$relay/health`, { timeoutMs: 3000 }).catch((err: Error) => ({ status: err.message }));
    // A spinning edge answers nothing: killed here so that the test's clean-up does not wait on it.
    if (health.status !== 200) b.child.kill('SIGKILL');
    assert.equal(health.status, 200);
  });
});
