// A client that heard `connected` can be reached through any edge at once,
// on a durable hub too: a REST call through another edge about the new
// connection (a permission, a close) finds it. Before: on a durable hub
// `connected` went out before the connection's subject reached the NATS
// server (sends are ordered by the stream, but these calls cross core NATS),
// so a call right after it answered 404 now and then (seen in a full suite).
// Two edges in this process on one nats-server; A's link to NATS slowed so
// its subscriptions arrive 300 ms late.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { edgeOverrides } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

describe("a connection's subject on a durable hub", () => {
  it('is on the NATS server before its client hears connected: a permission granted through another edge at once finds it', async (t) => {
    const nats = await startNatsServer(t);
    const aLink = await CuttableProxy.start(nats.port, t);
    const a = await startTestRelay(t, edgeOverrides('edge-a', [`nats://127.0.0.1:${aLink.port}`]));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url]));
    await until(() => a.bus.connected && b.bus.connected && a.jetstream?.state === 'ready' && b.jetstream?.state === 'ready', 20000, 'both edges on NATS with JetStream');
    assert.ok(a.pubsub.hub('chat')?.durable, 'the hub is durable');
    // What A sends NATS (its SUB for the new connection among it) waits 300 ms.
    aLink.hold(300);
    t.after(() => aLink.hold(0));
    const client = await RawPubSubClient.connect(accessUrl(a.url, { roles: [] }), PLAIN, t);
    const { connectionId } = await client.waitFor((m) => m.type === 'system' && m.event === 'connected', 10000);
    // Before: 404 Not found (B asked the connection's subject before A's subscription was there).
    await serviceClient(b).grantPermission(connectionId, 'sendToGroup', { targetName: 'g' });
    assert.equal(await serviceClient(b).hasPermission(connectionId, 'sendToGroup', { targetName: 'g' }), true);
  });
});
