// The published @azure/web-pubsub-client, unmodified, against the relay on
// 127.0.0.1: the behaviours protocols/web-pubsub.md 1.10 lists as MUST.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { WebPubSubJsonProtocol } from '@azure/web-pubsub-client';
import { ALL_ROLES, CuttableProxy, HUB, HUB_KEY, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { FAST_RETRY, serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { metricValue } from '../helpers/relay.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

describe('@azure/web-pubsub-client against the relay', () => {
  it('connects with either subprotocol and exchanges json, text and binary through a group', async (t) => {
    const relay = await startPubSubRelay(t);
    for (const protocol of [undefined, WebPubSubJsonProtocol()]) {
      const a = await startClient(t, accessUrl(relay.url, { userId: 'alice' }), { protocol });
      const b = await startClient(t, accessUrl(relay.url, { userId: 'bob' }), { protocol });
      await a.client.joinGroup('room');
      await b.client.joinGroup('room');
      await a.client.sendToGroup('room', { n: 1, nested: [true, null] }, 'json');
      await a.client.sendToGroup('room', 'plain text ü', 'text');
      await a.client.sendToGroup('room', new Uint8Array([0, 1, 254, 255]).buffer, 'binary');
      await until(() => b.groupData.length === 3, 5000, 'three group messages');
      assert.deepEqual(b.groupData[0].data, { n: 1, nested: [true, null] });
      assert.equal(b.groupData[0].fromUserId, 'alice');
      assert.equal(b.groupData[0].group, 'room');
      assert.equal(b.groupData[1].dataType, 'text');
      assert.equal(b.groupData[1].data, 'plain text ü');
      assert.equal(b.groupData[2].dataType, 'binary');
      assert.deepEqual([...new Uint8Array(b.groupData[2].data as ArrayBuffer)], [0, 1, 254, 255]);
      // Without noEcho the sender gets its own messages too.
      await until(() => a.groupData.length === 3, 5000, 'echo to sender');
    }
  });

  it('receives binary group message sent by service (the case of Microsoft\'s own integration suite)', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url));
    await c.client.joinGroup('bin');
    await serviceClient(relay).group('bin').sendToAll(new Uint8Array([1, 2, 3]));
    await until(() => c.groupData.length === 1, 5000, 'group-message');
    assert.equal(c.groupData[0].group, 'bin');
    assert.equal(c.groupData[0].fromUserId, null);
    assert.equal(c.groupData[0].dataType, 'binary');
    assert.deepEqual([...new Uint8Array(c.groupData[0].data as ArrayBuffer)], [1, 2, 3]);
    assert.equal(c.serverData.length, 0, 'no server-message');
  });

  it('honours noEcho', async (t) => {
    const relay = await startPubSubRelay(t);
    const a = await startClient(t, accessUrl(relay.url, { userId: 'a' }));
    const b = await startClient(t, accessUrl(relay.url, { userId: 'b' }));
    await a.client.joinGroup('g');
    await b.client.joinGroup('g');
    await a.client.sendToGroup('g', 'quiet', 'text', { noEcho: true });
    await a.client.sendToGroup('g', 'loud', 'text');
    await until(() => b.groupData.length === 2 && a.groupData.length === 1, 5000, 'deliveries');
    assert.deepEqual(a.groupData.map((m) => m.data), ['loud']);
  });

  it('answers a repeated ackId with Duplicate and does not deliver twice', async (t) => {
    const relay = await startPubSubRelay(t);
    const a = await startClient(t, accessUrl(relay.url));
    const b = await startClient(t, accessUrl(relay.url));
    await b.client.joinGroup('g');
    const first = await a.client.sendToGroup('g', 'once', 'text', { ackId: 77 });
    const second = await a.client.sendToGroup('g', 'once', 'text', { ackId: 77 });
    assert.equal(first.isDuplicated, false);
    assert.equal(second.isDuplicated, true);
    await a.client.sendToGroup('g', 'after', 'text');
    await until(() => b.groupData.length === 2, 5000, 'messages');
    assert.deepEqual(b.groupData.map((m) => m.data), ['once', 'after']);
  });

  it('refuses group operations with Forbidden without the role, and honours per-group roles and webpubsub.group', async (t) => {
    const relay = await startPubSubRelay(t);
    const none = await startClient(t, accessUrl(relay.url, { roles: [] }), { messageRetryOptions: FAST_RETRY });
    await assert.rejects(none.client.joinGroup('g'), (err: any) => err.errorDetail?.name === 'Forbidden');
    await assert.rejects(none.client.sendToGroup('g', 'x', 'text'), (err: any) => err.errorDetail?.name === 'Forbidden');

    const scoped = await startClient(
      t,
      accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroup.a.b', 'webpubsub.sendToGroup.a.b'], groups: ['preset'] }),
      { messageRetryOptions: FAST_RETRY },
    );
    await scoped.client.joinGroup('a.b');
    await assert.rejects(scoped.client.joinGroup('a.c'), (err: any) => err.errorDetail?.name === 'Forbidden');
    await assert.rejects(scoped.client.sendToGroup('a', 'x', 'text'), (err: any) => err.errorDetail?.name === 'Forbidden');
    // The token's webpubsub.group claim joined "preset" at connect.
    await serviceClient(relay).group('preset').sendToAll('welcome', { contentType: 'text/plain' });
    await until(() => scoped.groupData.length === 1, 5000, 'message to preset group');
    // A REST send to a group is a group message from nobody, as Azure delivers it.
    assert.deepEqual([scoped.groupData[0].group, scoped.groupData[0].fromUserId, scoped.groupData[0].data], ['preset', null, 'welcome']);
    assert.equal(scoped.serverData.length, 0);
  });

  it('rejoins its groups on a fresh connection after the relay ends the old one', async (t) => {
    const relay = await startPubSubRelay(t);
    const sub = await startClient(t, accessUrl(relay.url), {
      protocol: WebPubSubJsonProtocol(),
      reconnectRetryOptions: { retryDelayInMs: 100 },
    });
    await sub.client.joinGroup('g');
    const svc = serviceClient(relay);
    await svc.closeConnection(sub.connectionIds[0], { reason: 'test' });
    await until(() => sub.connectionIds.length === 2, 10000, 'second connected event');
    assert.notEqual(sub.connectionIds[1], sub.connectionIds[0]);
    await svc.group('g').sendToAll({ after: 'rejoin' });
    await until(() => sub.groupData.length === 1, 5000, 'message after rejoin');
    assert.deepEqual([sub.groupData[0].group, sub.groupData[0].data], ['g', { after: 'rejoin' }]);
  });

  it('recovers a reliable session after the socket is cut: nothing lost, nothing twice', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    const sub = await startClient(t, accessUrl(proxy.url));
    await sub.client.joinGroup('feed');
    const publisher = await startClient(t, accessUrl(relay.url));
    const total = 300;
    for (let i = 1; i <= total; i++) {
      await publisher.client.sendToGroup('feed', i, 'json', { fireAndForget: true });
      if (i === 100) proxy.cut();
      // The second cut once the first recovery is done (cut before it, it finds no socket: one recovery counted).
      if (i === 200) {
        await untilAnswered(async () => (await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total')) >= 1, 10000, 'the first recovery');
        proxy.cut();
      }
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 20));
    }
    await until(() => sub.groupData.length >= total, 15000, `${total} messages`);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(
      sub.groupData.map((m) => m.data),
      Array.from({ length: total }, (_, i) => i + 1),
    );
    assert.deepEqual(sub.connectionIds.length, 1, 'the session was recovered, not replaced');
    const recovered = await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total');
    assert.ok(recovered >= 2, `recovered ${recovered}`);
  });

  it('is refused with 1008 when its session expired, then starts afresh and rejoins', async (t) => {
    // The default keep-alive interval (30 s): a dropped session expires within a quarter of its retention all the same (before: at the next keep-alive).
    const relay = await startPubSubRelay(t, { timeouts: { sessionRetainMs: 1000, keepAliveIntervalMs: 30000, idleMs: 60000 } });
    const proxy = await CuttableProxy.start(relay.port, t);
    const disconnects: any[] = [];
    const sub = await startClient(t, () => accessUrl(proxy.url), { reconnectRetryOptions: { retryDelayInMs: 100 } });
    sub.client.on('disconnected', (e) => disconnects.push(e));
    await sub.client.joinGroup('g');
    proxy.cut(2500);
    await until(() => sub.connectionIds.length === 2, 20000, 'fresh connection');
    assert.ok((await metricValue(relay, 'edge_relay_pubsub_sessions_expired_total')) >= 1);
    assert.ok((await metricValue(relay, 'edge_relay_pubsub_recoveries_refused_total', { reason: 'SessionNotFound' })) >= 1);
    assert.ok(disconnects.length >= 1);
    await serviceClient(relay).group('g').sendToAll('back', { contentType: 'text/plain' });
    await until(() => sub.groupData.length === 1, 5000, 'message after rejoin');
  });

  it('gets a client access URL from the server SDK that the relay accepts', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = serviceClient(relay);
    const { url } = await svc.getClientAccessToken({ userId: 'sdk-user', roles: ALL_ROLES });
    const c = await startClient(t, url);
    await c.client.joinGroup('g');
    assert.equal([...(relay.pubsub.hub(HUB)?.local.targets({ kind: 'user', name: 'sdk-user' }) ?? [])].length > 0, true);
  });

  it('refuses the MQTT and Socket.IO client URLs of getClientAccessToken with 404 saying they are not supported (before: "No such endpoint")', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = serviceClient(relay);
    for (const [clientProtocol, name] of [['mqtt', 'MQTT'], ['socketio', 'Socket.IO']] as const) {
      const { url, baseUrl } = await svc.getClientAccessToken({ clientProtocol });
      assert.equal(new URL(baseUrl).pathname, `/clients/${clientProtocol}/hubs/${HUB}`);
      for (const target of [url, `${baseUrl}/?EIO=4&transport=websocket`]) {
        const refused = await upgradeAnswer(target, clientProtocol === 'mqtt' ? ['mqtt'] : []);
        assert.equal(refused.status, 404, target);
        assert.deepEqual(JSON.parse(refused.body), {
          code: 'NotFound',
          message: `${name} clients of Web PubSub are not supported: this relay serves Web PubSub clients at /client/hubs/{hub}`,
        });
      }
    }
  });
});

/** The status and body of a refused WebSocket upgrade. */
function upgradeAnswer(url: string, protocols: string[]): Promise<{ status: number; body: string }> {
  const ws = new WebSocket(url, protocols);
  return withTimeout(
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      ws.once('open', () => reject(new Error('the upgrade was accepted')));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      ws.once('error', reject);
    }),
    5000,
    'the upgrade answer',
  ).finally(() => ws.terminate());
}
