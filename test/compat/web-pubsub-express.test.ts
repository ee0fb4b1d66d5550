// Microsoft's @azure/web-pubsub-express (unmodified) as the hub's event
// handler, in an Express app, with @azure/web-pubsub-client clients, plain
// `ws` simple clients and the @azure/web-pubsub server SDK against the relay.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import express from 'express';
import WebSocket from 'ws';
import { WebPubSubJsonProtocol } from '@azure/web-pubsub-client';
import { HUB, HUB_KEY, CuttableProxy, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { eventHandlerApp, listenWithMiddleware, serveApp, type HandlerRecord } from '../helpers/event-handler-app.ts';
import { upgradeStatus } from '../helpers/raw-listener.ts';
import { metricValue } from '../helpers/relay.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const SYSTEM = ['connect', 'connected', 'disconnected'];

function hubWith(urlTemplate: string, extra: Record<string, unknown> = {}) {
  return {
    pubsub: {
      hubs: [
        {
          name: HUB,
          accessKey: HUB_KEY,
          eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: SYSTEM, timeoutMs: 1500, retries: 2, retryDelayMs: 50, ...extra }],
        },
      ],
    },
  };
}

/** An Express handler app and a relay whose hub sends it every event. */
async function relayWithHandler(t: TestContext, options: Parameters<typeof eventHandlerApp>[2] = {}) {
  const { app, record } = eventHandlerApp(HUB, HUB_KEY, options);
  const served = await serveApp(t, app);
  const relay = await startPubSubRelay(t, hubWith(`${served.url}/api/webpubsub/hubs/{hub}/{event}`));
  return { relay, record };
}

/** A simple WebSocket client: raw frames kept in order. */
async function simpleClient(t: TestContext, url: string, protocols: string[] = []) {
  const frames: { binary: boolean; data: Buffer }[] = [];
  const ws = new WebSocket(url, protocols);
  ws.on('message', (data, binary) => frames.push({ binary, data: data as Buffer }));
  t.after(() => ws.terminate());
  await withTimeout(new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject))), 5000, 'simple client open');
  return { ws, frames };
}

function everyEventOnce(record: HandlerRecord, connectionId: string): void {
  const of = (list: any[]) => list.filter((r) => r.context.connectionId === connectionId).length;
  assert.deepEqual([of(record.connect), of(record.connected), of(record.disconnected)], [1, 1, 1]);
}

describe('@azure/web-pubsub-express as the event handler', () => {
  it('is not sent events when its abuse protection does not allow this relay: connect refused with 500', async (t) => {
    const { relay, record } = await relayWithHandler(t, { allowedEndpoints: [`http://127.0.0.1`] });
    // allowedEndpoints names the host without the port: abuse protection refuses, so nothing connects.
    assert.equal(await upgradeStatus(accessUrl(relay.url, { userId: 'alice' }), { protocol: 'json.webpubsub.azure.v1' } as never), 500);
    assert.equal(record.connect.length, 0, 'no event reached a handler that did not allow this relay');
  });

  it('passes abuse protection through the SDK middleware and applies what handleConnect decided', async (t) => {
    // The app is served first (the relay needs its URL); its handler, built once the relay's URL is known, allows only that relay.
    let inner: express.RequestHandler = (_req, _res, next) => next();
    const outer = express();
    outer.use((req, res, next) => inner(req, res, next));
    const served = await serveApp(t, outer);
    const relay = await startPubSubRelay(t, hubWith(`${served.url}/api/webpubsub/hubs/{hub}/{event}`));
    const { app, record } = eventHandlerApp(HUB, HUB_KEY, { allowedEndpoints: [relay.url] });
    inner = app;
    // The plain subprotocol: a reliable session outlives a closed socket (for timeouts.sessionRetainMs), and so its disconnected event waits.
    const c = await startClient(t, accessUrl(relay.url, { userId: 'alice', roles: [] }), { protocol: WebPubSubJsonProtocol() });
    const connectReq = record.connect[0];
    assert.equal(connectReq.context.userId, 'alice');
    assert.deepEqual(connectReq.claims.sub, ['alice']);
    assert.ok(Array.isArray(connectReq.subprotocols) && connectReq.subprotocols.includes('json.webpubsub.azure.v1'));
    assert.equal(connectReq.queries.access_token, undefined, 'the token is not passed on');
    // handleConnect's userId, group and role apply.
    const id = c.connectionIds[0];
    const members = [];
    for await (const m of await serviceClient(relay).group('lobby').listConnections()) members.push(m);
    assert.deepEqual(members, [{ connectionId: id, userId: 'handler-alice' }]);
    await c.client.joinGroup('granted-by-role');
    await serviceClient(relay).group('lobby').sendToAll('to the lobby', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 1, 5000, 'lobby message');
    // A user event is answered by handleUserEvent.
    await c.client.sendEvent('ask', 'hello', 'text');
    await until(() => c.serverData.length === 1, 5000, 'reply');
    assert.equal(c.serverData[0].data, 'echo: hello');
    assert.equal(record.user[0].context.eventName, 'ask');
    await until(() => record.connected.length === 1, 5000, 'connected');
    await c.client.stop();
    await until(() => record.disconnected.length === 1, 5000, 'disconnected');
    everyEventOnce(record, id);
    assert.ok(record.signatures.every(Boolean) && record.signatures.length >= 4, `signatures ${record.signatures}`);
  });

  it('sends connect once per session: a reliable reconnect does not send it again', async (t) => {
    const { relay, record } = await relayWithHandler(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    const c = await startClient(t, accessUrl(proxy.url, { userId: 'roamer' }));
    await until(() => record.connected.length === 1, 5000, 'connected');
    proxy.cut();
    await new Promise((r) => setTimeout(r, 500));
    await c.client.sendEvent('after', 'x', 'text');
    await until(() => c.serverData.length === 1, 5000, 'reply after the reconnect');
    assert.equal(c.connectionIds.length, 1, 'recovered, not replaced');
    assert.equal(record.connect.length, 1);
    assert.equal(record.connected.length, 1);
    assert.equal(record.disconnected.length, 0);
  });

  it('talks to simple WebSocket clients: each frame a message event, the reply and server sends raw', async (t) => {
    const { relay, record } = await relayWithHandler(t, {
      connect: (req, res) => res.success({ userId: 'device-1', groups: ['devices'], subprotocol: req.subprotocols?.includes('chat.v1') ? 'chat.v1' : undefined }),
    });
    const device = await simpleClient(t, accessUrl(relay.url), ['chat.v1']);
    assert.equal(device.ws.protocol, 'chat.v1', 'the subprotocol handleConnect chose');
    device.ws.send('hi there');
    await until(() => device.frames.length === 1, 5000, 'text reply');
    assert.deepEqual([device.frames[0].binary, String(device.frames[0].data)], [false, 'echo: hi there']);
    device.ws.send(Buffer.from([1, 2, 3]));
    await until(() => device.frames.length === 2, 5000, 'binary reply');
    assert.deepEqual([device.frames[1].binary, [...device.frames[1].data]], [true, [1, 2, 3]]);
    assert.deepEqual(record.user.map((u) => [u.context.eventName, u.dataType]), [['message', 'text'], ['message', 'binary']]);
    const svc = serviceClient(relay);
    await svc.sendToAll({ json: true });
    await svc.group('devices').sendToAll('group text', { contentType: 'text/plain' });
    await svc.sendToUser('device-1', new Uint8Array([9, 8]));
    await until(() => device.frames.length === 5, 5000, 'server sends');
    assert.deepEqual(
      device.frames.slice(2).map((f) => [f.binary, f.binary ? [...f.data] : String(f.data)]),
      [[false, '{"json":true}'], [false, 'group text'], [true, [9, 8]]],
    );
    // No subprotocol offered at all works too.
    const bare = await simpleClient(t, accessUrl(relay.url));
    assert.equal(bare.ws.protocol, '');
    device.ws.close();
    await until(() => record.disconnected.length === 1, 5000, 'disconnected');
  });

  it('sends with a filter through @azure/web-pubsub, over the groups handleConnect gave', async (t) => {
    const { relay } = await relayWithHandler(t, {
      connect: (req, res) => res.success({ groups: req.context.userId === 'vip' ? ['vip'] : [] }),
    });
    const vip = await startClient(t, accessUrl(relay.url, { userId: 'vip' }));
    const other = await startClient(t, accessUrl(relay.url, { userId: 'other' }));
    const svc = serviceClient(relay);
    await svc.sendToAll('vips only', { contentType: 'text/plain', filter: "'vip' in groups" });
    await svc.sendToAll('not vips', { contentType: 'text/plain', filter: "not('vip' in groups)" });
    await until(() => vip.serverData.length === 1 && other.serverData.length === 1, 5000, 'filtered sends');
    assert.deepEqual([vip.serverData[0].data, other.serverData[0].data], ['vips only', 'not vips']);
  });
});

describe('event handler failures', () => {
  /** A handler that answers every request with `answer` (OPTIONS allowed). */
  async function rawHandler(t: TestContext, answer: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void) {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      if (req.method === 'OPTIONS') return void res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
      seen.push(String(req.headers['ce-type']));
      req.resume();
      answer(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => (server.closeAllConnections(), server.close(r))));
    return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
  }

  it("refuses the connection with handleConnect's 4xx, and 500 when it answers a 5xx, garbage or fails", async (t) => {
    for (const [status, expected] of [[401, 401], [403, 403], [400, 400], [404, 404], [502, 500]]) {
      const { relay } = await relayWithHandler(t, { connect: (_req, res) => res.fail(status as 401, 'no you') });
      assert.equal(await upgradeStatus(accessUrl(relay.url)), expected, `handler ${status}`);
    }
    const garbage = await rawHandler(t, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"groups": "not a list"'));
    const relay = await startPubSubRelay(t, hubWith(`${garbage.url}/{event}`));
    assert.equal(await upgradeStatus(accessUrl(relay.url)), 500, 'garbage');
  });

  it('refuses with 500 when the handler is down and 504 when it is too slow; connected is retried until it arrives', async (t) => {
    const down = await startPubSubRelay(t, hubWith('http://127.0.0.1:1/{event}'));
    assert.equal(await upgradeStatus(accessUrl(down.url)), 500, 'handler down');
    // Answers after 3 s unless the relay gives up first (its timer cleared then, so it does not hold the test process).
    const slow = await rawHandler(t, (_req, res) => {
      const late = setTimeout(() => res.writeHead(204).end(), 3000);
      res.on('close', () => clearTimeout(late));
    });
    const slowRelay = await startPubSubRelay(t, hubWith(`${slow.url}/{event}`, { timeoutMs: 300 }));
    assert.equal(await upgradeStatus(accessUrl(slowRelay.url)), 504, 'handler slow');
    assert.equal(await metricValue(slowRelay, 'edge_relay_pubsub_handler_events_total', { event: 'connect', result: 'timeout' }), 1);
    assert.equal(await metricValue(down, 'edge_relay_pubsub_handler_events_total', { event: 'connect', result: 'failed' }), 1);
    let connectedFailures = 2;
    const connectedIds: string[] = [];
    const flaky = await rawHandler(t, (req, res) => {
      if (req.headers['ce-type'] === 'azure.webpubsub.sys.connected') connectedIds.push(String(req.headers['ce-id']));
      if (req.headers['ce-type'] === 'azure.webpubsub.sys.connected' && connectedFailures-- > 0) return void res.writeHead(503).end();
      res.writeHead(204).end();
    });
    const relay = await startPubSubRelay(t, hubWith(`${flaky.url}/{event}`));
    await startClient(t, accessUrl(relay.url));
    await until(() => flaky.seen.filter((s) => s === 'azure.webpubsub.sys.connected').length === 3, 5000, 'connected retried twice');
    let counted = 0;
    for (let i = 0; i < 100 && counted === 0; i++, await new Promise((r) => setTimeout(r, 20))) {
      counted = await metricValue(relay, 'edge_relay_pubsub_handler_events_total', { event: 'connected', result: 'ok' });
    }
    assert.equal(counted, 1, 'a retried connected counts once');
    // One event, one ce-id (CloudEvents: a handler tells a retry by it); before, a new one per try.
    assert.equal(new Set(connectedIds).size, 1, connectedIds.join(' '));
  });

  it('acks a user event UpstreamFailed when the handler fails it, and NoUpstream when no handler takes it', async (t) => {
    const handler = await rawHandler(t, (_req, res) => res.writeHead(500).end());
    const relay = await startPubSubRelay(t, hubWith(`${handler.url}/{event}`, { userEventPattern: 'known', systemEvents: [] }));
    const c = await startClient(t, accessUrl(relay.url), { messageRetryOptions: { maxRetries: 0 } });
    await assert.rejects(c.client.sendEvent('known', 'x', 'text'), (e: any) => e.errorDetail?.name === 'UpstreamFailed');
    await assert.rejects(c.client.sendEvent('unknown', 'x', 'text'), (e: any) => e.errorDetail?.name === 'NoUpstream');
  });
});

describe('event handlers on-prem: hc:// through a hybrid connection', () => {
  /** A relay whose hub's handler is `hc://handlers/...`, and a hyco-https listener running @azure/web-pubsub-express there. */
  async function onPremHandler(t: TestContext, options: Parameters<typeof eventHandlerApp>[2] = {}) {
    const { handler, record } = eventHandlerApp(HUB, HUB_KEY, { path: '/handlers/hubs/chat', ...options });
    const relay = await startPubSubRelay(t, {
      hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }],
      ...hubWith('hc://handlers/hubs/{hub}/{event}'),
    });
    await listenWithMiddleware(t, relay.url, handler, 'handlers');
    return { relay, record };
  }

  it('delivers every event as a relayed HTTP request to a hyco-https listener running @azure/web-pubsub-express', async (t) => {
    const { relay, record } = await onPremHandler(t);
    const c = await startClient(t, accessUrl(relay.url, { userId: 'onprem' }), { protocol: WebPubSubJsonProtocol() });
    await c.client.sendEvent('ask', { q: 1 }, 'json');
    await until(() => c.serverData.length === 1, 5000, 'reply through the listener');
    assert.deepEqual(c.serverData[0].data, { echo: { q: 1 } });
    assert.equal(record.connect[0].context.userId, 'onprem');
    await until(() => record.connected.length === 1, 5000, 'connected through the listener');
    await c.client.stop();
    await until(() => record.disconnected.length === 1, 5000, 'disconnected through the listener');
    assert.ok(record.signatures.every(Boolean));
  });

  it('hears the disconnected event of a connection the relay ends as it drains (SIGTERM)', async (t) => {
    const { relay, record } = await onPremHandler(t);
    // A raw client: the SDK would try to reconnect to the stopped relay for the rest of the run.
    const ws = new WebSocket(accessUrl(relay.url, { userId: 'onprem' }), ['json.webpubsub.azure.v1']);
    t.after(() => ws.terminate());
    ws.on('error', () => {});
    await until(() => record.connected.length === 1, 5000, 'connected through the listener');
    // Before: refused ShuttingDown at once (three attempts in 100 ms, logged lost), and the listener closed first.
    await withTimeout(relay.close(), 10000, 'the drain');
    assert.equal(record.disconnected.length, 1, 'disconnected through the listener during the drain');
  });

  it('keeps the listener when a handler answers 204 (no body: hyco-https still sends an empty binary frame)', async (t) => {
    // res.success() without a body: the SDK answers 204.
    const { relay, record } = await onPremHandler(t, { connect: (_req, res) => res.success() });
    const channels = () => [...relay.hybrid.listeners.all()].map((channel) => channel.id);
    const [listener] = channels();
    const c = await startClient(t, accessUrl(relay.url, { userId: 'onprem' }), { protocol: WebPubSubJsonProtocol() });
    await until(() => record.connected.length === 1, 5000, 'connected through the listener');
    await c.client.sendEvent('ask', { q: 2 }, 'json');
    await until(() => c.serverData.length === 1, 5000, 'reply through the listener');
    assert.deepEqual(c.serverData[0].data, { echo: { q: 2 } });
    // Before: the relay closed the listener 1008 at the empty frame after each 204 (hyco-https then connected again).
    assert.deepEqual(channels(), [listener]);
  });
});
