// A REST membership change for a reliable connection while its session moves
// between edges on core NATS (src/pubsub/session-handover.ts): the holder has
// sent the session's groups (begin) and not let go yet (commit). A change the
// holder applies then must reach the edge taking the session. Edge B, the
// taker, reaches NATS through a proxy that holds what it sends 300 ms, so the
// move takes long enough to make the change in the middle of it.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { CORE_NATS, edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, HUB, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

/** Edges A and B on one NATS server (B through a proxy that can hold what it sends), and a reliable client on A. */
async function reliableClientOnA(t: TestContext) {
  const nats = await startNatsServer(t);
  const proxy = await CuttableProxy.start(nats.port, t);
  const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], CORE_NATS));
  const b = await startTestRelay(t, edgeOverrides('edge-b', [`nats://127.0.0.1:${proxy.port}`], CORE_NATS));
  await Promise.all([waitReady(a), waitReady(b)]);
  const first = await RawPubSubClient.connect(accessUrl(a.url), RELIABLE, t);
  const { connectionId, reconnectionToken } = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
  return { proxy, a, b, first, connectionId: connectionId as string, reconnectionToken: reconnectionToken as string };
}

describe('a REST change for a connection whose session is moving between edges (core NATS)', () => {
  it('made through the holder after it sent the session, is kept by the edge taking it (before: lost, though answered 200)', async (t) => {
    const { proxy, a, b, first, connectionId, reconnectionToken } = await reliableClientOnA(t);
    assert.equal((await first.request({ type: 'joinGroup', group: 'before' })).success, true);
    const heldOnA = () => a.pubsub.hubs.get(HUB)!.local.connections.get(connectionId);

    proxy.hold(300);
    first.ws.terminate();
    const moving = RawPubSubClient.connect(accessUrl(b.url) + recoveryQuery(connectionId, reconnectionToken), RELIABLE, t);
    // A has answered the move's first step: the client's socket there is gone and the session is being given.
    await until(() => heldOnA()?.handover !== undefined, 5000, 'A giving the session');
    const viaA = serviceClient(a);
    await viaA.group('during').addConnection(connectionId);
    await viaA.grantPermission(connectionId, 'sendToGroup', { targetName: 'granted' });
    const client = await moving;
    const system = await client.waitFor((m) => m.type === 'system', 10000, 'the session on B');
    assert.equal(system.event, 'connected', JSON.stringify(system));
    proxy.hold(0);
    await until(() => heldOnA() === undefined, 5000, 'A letting the session go');

    const onB = b.pubsub.hubs.get(HUB)!.local.connections.get(connectionId)!;
    assert.deepEqual([...onB.groups].sort(), ['before', 'during']);
    assert.equal(onB.permissions.allows('sendToGroup', 'granted'), true, 'the permission granted through A');
    await viaA.group('during').sendToAll('after the move', { contentType: 'text/plain' });
    await client.waitFor((m) => m.type === 'message' && m.data === 'after the move', 5000, 'the group send after the move');
  });

  it('a close through the edge taking it, before the holder let go, ends the session on the holder too (before: it lived on there, and the client recovered it)', async (t) => {
    const { proxy, a, b, first, connectionId, reconnectionToken } = await reliableClientOnA(t);
    const recovery = recoveryQuery(connectionId, reconnectionToken);
    const heldOnA = () => a.pubsub.hubs.get(HUB)!.local.connections.get(connectionId);
    const takenOnB = () => b.pubsub.hubs.get(HUB)!.local.connections.get(connectionId);

    proxy.hold(300);
    first.ws.terminate();
    const moving = RawPubSubClient.connect(accessUrl(b.url) + recovery, RELIABLE, t).catch((err: Error) => err);
    // B has the session's identity from A and waits for its subscriptions to reach NATS before it asks A to let go.
    await until(() => takenOnB()?.handover?.taking !== undefined, 5000, 'B taking the session');
    await serviceClient(b).closeConnection(connectionId, { reason: 'closed during the move' });
    await moving;
    proxy.hold(0);
    await until(() => heldOnA() === undefined || heldOnA()!.ended, 5000, 'the session ended on A too');
    const again = await RawPubSubClient.connect(accessUrl(a.url) + recovery, RELIABLE, t).catch((err: Error) => err);
    if (again instanceof RawPubSubClient) {
      const system = await again.waitFor((m) => m.type === 'system', 5000, 'the answer to a recovery on A').catch(() => ({ event: 'closed' }));
      assert.notEqual(system.event, 'connected', 'the closed connection was recovered on A');
    }
  });
});
