// ce-connectionState (docs/event-handlers.md, "Connection state"): a handler
// sets the state later events of a connection carry by answering the header
// to a blocking event, connect or a user event. Azure: "Only blocking events
// can update the connection state"; the answer to connected (fire-and-forget,
// sent while other events may already be on their way) changes nothing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { startTestRelay } from '../helpers/relay.ts';
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
});
