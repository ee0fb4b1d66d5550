// A REST close of a durable hub's connection whose edge was killed (SIGKILL):
// no edge holds its reliable session, which lives on only as its checkpoint,
// for any edge to take. Azure ends a closed connection; so does the relay when
// an edge holds it (its checkpoint is written `ended`). Before (found by
// review): the close was answered 204, no edge acted on it, and the client's
// recovery on another edge got `connected`, its groups and all (an app that
// closed a banned user's connection while that user's edge was down let them
// back in). A REST grant or revoke there is 503 SessionUnavailable until the
// client recovers the session (before: a revoke was 204, and the recovered
// session kept the permission).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import { startEdge, waitOnRoster, type Edge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

describe('a REST close of a durable session whose edge was killed', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    const hubs = { timeouts: { sessionRetainMs: 5000 }, bus: { requestTimeoutMs: 1000 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
    [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(cleanup, name, [nats.url], hubs)));
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
  });
  after(() => cleanup.run());

  it('ends the session: its recovery on another edge is refused 1008 SessionNotFound (before: connected, in its groups)', async (t) => {
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'banned', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    const token = connected.reconnectionToken as string;
    assert.equal((await client.request({ type: 'joinGroup', group: 'private', ackId: 1 })).success, true);
    await a.kill();
    client.ws.terminate();
    await serviceClient(b).closeConnection(id, { reason: 'banned' });
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(token)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    const system = await recovering.waitFor((m) => m.type === 'system', 15000);
    assert.equal(system.event, 'disconnected', 'the closed session was recovered');
    assert.equal((await recovering.closed).code, 1008);
  });
});

describe('a REST permission change of a durable session whose edge was killed', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    const hubs = { timeouts: { sessionRetainMs: 5000 }, bus: { requestTimeoutMs: 1000 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
    [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(cleanup, name, [nats.url], hubs)));
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
  });
  after(() => cleanup.run());

  it('is answered 503 SessionUnavailable until its client recovers the session, then made (before: a revoke was 204, and the recovered session kept the permission)', async (t) => {
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'mallory', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    const token = connected.reconnectionToken as string;
    await a.kill();
    client.ws.terminate();
    const unavailable = (err: { statusCode?: number; code?: string }) => err.statusCode === 503 && err.code === 'SessionUnavailable';
    const once = serviceClient(b, { maxRetries: 0 });
    await assert.rejects(once.revokePermission(id, 'joinLeaveGroup'), unavailable, 'a revoke no edge could make');
    await assert.rejects(once.grantPermission(id, 'sendToGroup', { targetName: 'x' }), unavailable, 'a grant no edge could make (before: 404)');
    // Its check says what the session held as its edge left: asked again once it is recovered.
    assert.equal(await once.hasPermission(id, 'joinLeaveGroup'), false);
    // The SDK tries a 503 again (three times by default): the revoke lands once the client is back.
    const revoking = serviceClient(b).revokePermission(id, 'joinLeaveGroup');
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(token)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    assert.equal((await recovering.waitFor((m) => m.type === 'system', 15000)).event, 'connected');
    await revoking;
    assert.equal((await recovering.request({ type: 'joinGroup', group: 'private', ackId: 1 })).error?.name, 'Forbidden', 'the revoked permission came back with the session');
  });
});
