// Event handlers across edges (docs/event-handlers.md): two edge processes on
// one nats-server, on JetStream (durable hub) and on core NATS, one Express
// handler running @azure/web-pubsub-express. Events from clients on either
// edge reach the handler once; what connect decided on edge A (userId,
// groups, roles) holds when the client's reliable session moves to edge B;
// REST filters apply on both edges.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CORE_NATS, startEdge } from '../helpers/cluster.ts';
import { eventHandlerApp, serveApp } from '../helpers/event-handler-app.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, HUB, HUB_KEY, accessUrl } from '../helpers/pubsub.ts';
import { FAST_RETRY, serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until } from '../helpers/wait.ts';

for (const [label, busExtra] of [
  ['JetStream', {}],
  ['core NATS', CORE_NATS],
] as const) {
  describe(`event handlers across edges (${label})`, () => {
    it('delivers events from clients on either edge once; a connect decision holds when the session moves; filters apply on both', async (t) => {
      const { app, record } = eventHandlerApp(HUB, HUB_KEY, {
        connect: (req, res) => {
          res.setState('decidedFor', req.context.userId ?? 'nobody');
          res.success({
            userId: `decided-${req.context.userId}`,
            groups: ['decided'],
            roles: ['webpubsub.sendToGroup.decided'],
          });
        },
      });
      const served = await serveApp(t, app);
      const hubs = {
        pubsub: {
          hubs: [
            {
              name: HUB,
              accessKey: HUB_KEY,
              eventHandlers: [{ urlTemplate: `${served.url}/api/webpubsub/hubs/{hub}/{event}`, userEventPattern: '*', systemEvents: ['connect', 'connected', 'disconnected'] }],
            },
          ],
        },
      };
      const nats = await startNatsServer(t);
      const a = await startEdge(t, 'edge-a', [nats.url], { ...hubs, ...busExtra });
      const b = await startEdge(t, 'edge-b', [nats.url], { ...hubs, ...busExtra });

      // One client per edge, each sending events: every one reaches the handler once.
      const onA = await startClient(t, accessUrl(a.url, { userId: 'x', roles: [] }));
      const onB = await startClient(t, accessUrl(b.url, { userId: 'y', roles: [] }));
      for (let i = 0; i < 5; i++) {
        await onA.client.sendEvent('count', `a${i}`, 'text');
        await onB.client.sendEvent('count', `b${i}`, 'text');
      }
      await until(() => record.user.length === 10 && record.connected.length === 2, 5000, 'events');
      assert.deepEqual(record.user.map((u) => u.data).sort(), ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1', 'b2', 'b3', 'b4']);
      assert.equal(record.connect.length, 2);
      assert.ok(record.signatures.every(Boolean));

      // A reliable client on A moves to B: what connect decided goes with it, and connect is not sent again.
      const proxy = await CuttableProxy.start(a.port, t);
      const roamer = await startClient(t, accessUrl(proxy.url, { userId: 'roamer', roles: [] }), { messageRetryOptions: FAST_RETRY });
      const id = roamer.connectionIds[0];
      await until(() => record.connect.length === 3, 5000, 'connect');
      // The decided group works on A; and, on JetStream, the session's first checkpoint (written within
      // bus.jetstream.checkpointIntervalMs) is stored before it moves: a session without one cannot.
      for (let i = 0; i < 200 && !roamer.groupData.some((m) => m.data === 'before the move'); i++) {
        await serviceClient(a).group('decided').sendToAll('before the move', { contentType: 'text/plain' });
        await new Promise((r) => setTimeout(r, 25));
      }
      await new Promise((r) => setTimeout(r, 1500));
      proxy.retarget(b.port);
      proxy.cut();
      const svc = serviceClient(b);
      for (let i = 0; i < 200 && !roamer.groupData.some((m) => m.data === 'after the move'); i++) {
        await svc.group('decided').sendToAll('after the move', { contentType: 'text/plain', filter: "userId eq 'decided-roamer'" });
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.ok(roamer.groupData.some((m) => m.data === 'after the move'), 'the group connect gave, and the userId, on edge B');
      assert.deepEqual(roamer.connectionIds, [id], 'the session moved, not replaced');
      // The role connect gave: sendToGroup to `decided` is allowed, elsewhere Forbidden.
      await roamer.client.sendToGroup('decided', 'from the roamer', 'text');
      await assert.rejects(roamer.client.sendToGroup('other', 'no', 'text', { ackId: 999 }), (e: any) => e.errorDetail?.name === 'Forbidden');
      assert.equal(record.connect.length, 3, 'no connect for the moved session');
      // The connection state handleConnect set (ce-connectionState) moved with the session.
      await roamer.client.sendEvent('whoami', 'x', 'text');
      assert.deepEqual(record.user.at(-1).context.states, { decidedFor: 'roamer' });
      assert.deepEqual(record.user[0].context.states.decidedFor, record.user[0].context.userId.replace('decided-', ''));
      // The filter on a REST send applies on both edges: only x (on A) and y (on B) match.
      await svc.sendToAll('x and y', { contentType: 'text/plain', filter: "userId in ('decided-x', 'decided-y')" });
      await until(() => onA.serverData.some((m) => m.data === 'x and y') && onB.serverData.some((m) => m.data === 'x and y'), 5000, 'filtered send on both edges');
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(!roamer.serverData.some((m) => m.data === 'x and y'));
    });
  });
}
