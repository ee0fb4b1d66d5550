// ce-connectionState (docs/event-handlers.md, "Connection state"): a handler
// sets the state later events of a connection carry by answering the header
// to a blocking event, connect or a user event. Azure: "Only blocking events
// can update the connection state"; the answer to connected (fire-and-forget,
// sent while other events may already be on their way) changes nothing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const KEY = 'connection-state-key-0123456789ab';

describe('connection state', () => {
  it('is set by the answers to connect and user events, not by the answer to connected', async (t) => {
    const seen: { event: string; state: string | undefined }[] = [];
    // Every answer sets a state named after its event.
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      const event = String(req.headers['ce-eventname']);
      seen.push({ event, state: req.headers['ce-connectionstate'] as string | undefined });
      req.resume();
      req.on('end', () => {
        const headers = { 'ce-connectionState': `set-by-${event}` };
        if (event === 'connect') res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end('{}');
        else res.writeHead(event === 'connected' ? 200 : 204, headers).end();
      });
    });
    const relay = await startTestRelay(t, {
      pubsub: {
        hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: ['connect', 'connected'] }] }],
      },
    });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    await until(() => seen.some((s) => s.event === 'connected'), 5000, 'the connected event');
    // Time for the relay to take the connected answer in (before the fix, to apply its state).
    await new Promise((r) => setTimeout(r, 200));
    await client.request({ type: 'event', event: 'first', dataType: 'text', data: 'x' });
    await client.request({ type: 'event', event: 'second', dataType: 'text', data: 'x' });
    // Before: `first` carried set-by-connected.
    assert.deepEqual(seen, [
      { event: 'connect', state: undefined },
      { event: 'connected', state: 'set-by-connect' },
      { event: 'first', state: 'set-by-connect' },
      { event: 'second', state: 'set-by-first' },
    ]);
  });

  it('is not taken when it cannot be a header (an hc:// listener answering a character past U+00FF): later events to an http handler still go out', async (t) => {
    const seen: { event: string; state: string | undefined }[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      seen.push({ event: String(req.headers['ce-eventname']), state: req.headers['ce-connectionstate'] as string | undefined });
      req.resume();
      req.on('end', () => res.writeHead(204).end());
    });
    const relay = await startTestRelay(t, {
      hybridConnections: [{ name: 'onprem', requiresClientAuthorization: true }],
      pubsub: {
        hubs: [
          {
            name: 'chat',
            accessKey: KEY,
            eventHandlers: [
              { urlTemplate: 'hc://onprem/{event}', userEventPattern: '', systemEvents: ['connect'] },
              { urlTemplate, userEventPattern: '*', systemEvents: [] },
            ],
          },
        ],
      },
    });
    // An on-prem listener of its own making: allows the origin, answers connect with a state no HTTP header can carry
    // (JSON carries any character; CR and LF the relay refuses in any listener's answer already).
    const listenUrl = wsUrl(relay.url, '/$hc/onprem?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    void (async () => {
      for (;;) {
        const message = await listener.next(60000).catch(() => undefined);
        if (!message) return;
        const request = (message as { request?: { id: string; method: string } }).request;
        if (!request) continue;
        const responseHeaders = request.method === 'OPTIONS' ? { 'WebHook-Allowed-Origin': '*' } : { 'ce-connectionState': 'euro \u20ac' };
        listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, responseHeaders } }));
      }
    })();
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    // Before: the state was kept, and every later event to the http handler failed ("unreachable": fetch refuses the header).
    const ack = await client.request({ type: 'event', event: 'after', dataType: 'text', data: 'x' });
    assert.equal(ack.success, true, JSON.stringify(ack));
    assert.deepEqual(seen, [{ event: 'after', state: undefined }]);
  });
});
