// An hc:// event handler whose listener is on another edge: the relay's own
// request to it is routed over the bus like a sender's. Every such request
// failed before ("rawHeaders is not iterable": the relay's request had no raw
// head to size its notice by), so a client on any edge but the listener's got
// UpstreamFailed for every event and 500 for its connect (found by a review).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebPubSubJsonProtocol } from '@azure/web-pubsub-client';
import { CORE_NATS, startEdge } from '../helpers/cluster.ts';
import { eventHandlerApp, listenWithMiddleware } from '../helpers/event-handler-app.ts';
import { answerAfter, startHycoEventHandler } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startClient } from '../helpers/web-pubsub-sdk.ts';
import { until } from '../helpers/wait.ts';

describe('an hc:// event handler on another edge', () => {
  it('gets connect, connected and user events of a client on an edge without its listener, and answers them', async (t) => {
    const nats = await startNatsServer(t);
    const extra = {
      ...CORE_NATS,
      hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }],
      pubsub: {
        hubs: [
          {
            name: HUB,
            accessKey: HUB_KEY,
            eventHandlers: [{ urlTemplate: 'hc://handlers/hubs/{hub}/{event}', userEventPattern: '*', systemEvents: ['connect', 'connected', 'disconnected'], timeoutMs: 5000 }],
          },
        ],
      },
    };
    const [a, b] = await Promise.all([startEdge(t, 'edge-a', [nats.url], extra), startEdge(t, 'edge-b', [nats.url], extra)]);
    const { handler, record } = eventHandlerApp(HUB, HUB_KEY, { path: '/handlers/hubs/chat' });
    // On edge A only.
    await listenWithMiddleware(t, a.url, handler, 'handlers');
    const c = await startClient(t, accessUrl(b.url, { userId: 'far' }), { protocol: WebPubSubJsonProtocol() });
    assert.equal(record.connect[0]?.context.userId, 'far');
    await c.client.sendEvent('ask', { q: 3 }, 'json');
    await until(() => c.serverData.length === 1, 10000, 'the reply from the listener on the other edge');
    assert.deepEqual(c.serverData[0].data, { echo: { q: 3 } });
    await until(() => record.connected.length === 1, 10000, 'connected through the other edge');
  });

  it("has the handler's timeoutMs to answer, not timeouts.httpResponseMs, when its listener is on another edge, whose own watch of the request is renewed while the asking edge waits", async (t) => {
    const nats = await startNatsServer(t);
    const extra = {
      ...CORE_NATS,
      // The edges' own timeouts (edgeOverrides') with a small httpResponseMs: the listener's edge watches the routed
      // request for that and a grace (4 s), which the requesting edge's hc.alive renews while it waits.
      timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, httpResponseMs: 300 },
      hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }],
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: 'hc://handlers/{event}', userEventPattern: '*', systemEvents: [], timeoutMs: 20000 }] }] },
    };
    const [a, b] = await Promise.all([startEdge(t, 'edge-a', [nats.url], extra), startEdge(t, 'edge-b', [nats.url], extra)]);
    // On edge B only; the client on edge A. Slower than httpResponseMs and the listener's edge's grace, within timeoutMs.
    await startHycoEventHandler(t, b.url, 'handlers', answerAfter(5000));
    const client = await RawPubSubClient.connect(accessUrl(a.url), undefined, t);
    const ack = await client.request({ type: 'event', event: 'e', dataType: 'text', data: 'x' }, 15000);
    assert.equal(ack.success, true, JSON.stringify(ack));
  });
});
