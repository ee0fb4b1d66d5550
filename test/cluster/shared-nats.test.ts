// Two relay deployments on one NATS cluster (docs/configuration.md: each its
// own bus.subjectPrefix and bus.jetstream.streamPrefix). One that gets the
// stream prefix wrong finds the other's streams under its hubs' names: it
// must leave them as they are and say so, not make them its own (before, it
// changed their subjects to its own, and the other deployment's edges then
// delivered its events to their clients as if they were their own).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { edgeOverrides, readiness, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, accessUrl } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until } from '../helpers/wait.ts';

const HUBS = { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };

describe('two deployments sharing one NATS server', () => {
  it('a deployment whose streams are named like another deployment\'s leaves them alone and says why its durable hubs are not served', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startTestRelay(t, edgeOverrides('a-1', [nats.url], { ...HUBS, bus: { subjectPrefix: 'deploy_a' } }));
    await waitReady(a);
    const sub = await startClient(t, accessUrl(a.url, { userId: 'a-user', roles: ['webpubsub.joinLeaveGroup'] }));
    await sub.client.joinGroup('g');

    // Another deployment: its own subject prefix, but the default stream prefix, as deployment a's.
    const logger = captureLogger();
    const b = await startTestRelay(t, edgeOverrides('b-1', [nats.url], { ...HUBS, bus: { subjectPrefix: 'deploy_b', jetstream: { publishTimeoutMs: 1000 } } }), { log: logger.log });
    await until(() => logger.events().includes('jetstream.stream_taken'), 10000, 'deployment b to find the stream taken');
    const ready = await readiness(b);
    assert.equal(ready.status, 503);
    assert.match(JSON.stringify(ready.body), /stream RELAY_chat exists and holds other subjects \(deploy_a\.ev\.chat\.>\).*streamPrefix/);
    // b's send is refused (nowhere to store it), not stored in a's stream.
    await assert.rejects(serviceClient(b, { maxRetries: 0 }).group('g').sendToAll('from b'), (err: { statusCode?: number }) => err.statusCode === 503);
    // Each refused write leaves nothing behind (before: its wait for the stream to be read, ~1 KB, for good).
    await Promise.all(Array.from({ length: 20 }, () => assert.rejects(serviceClient(b, { maxRetries: 0 }).group('g').sendToAll('again'))));
    const durable = b.pubsub.hub(HUB)!.durable as unknown as { startWaiters: { size: number } };
    assert.equal(durable.startWaiters.size, 0);

    // Deployment a goes on as before, with nothing of b's.
    await serviceClient(a).group('g').sendToAll('from a');
    const received = () => sub.groupData.map((m) => m.data);
    await until(() => received().includes('from a'), 5000, 'a\'s event to its client');
    assert.deepEqual(received(), ['from a']);
  });
});
