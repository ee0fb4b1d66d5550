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
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, accessUrl } from '../helpers/pubsub.ts';
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
});
