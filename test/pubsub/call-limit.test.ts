// connected and disconnected events outlive the connections they are about, so
// the relay bounds how many are at handlers at once (src/pubsub/call-limit.ts):
// a client opening and closing connections against a silent handler had the
// relay hold a request (and a socket) per event for the handler's timeout.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { CallLimit } from '../../src/pubsub/call-limit.ts';
import { SYSTEM_EVENTS_IN_FLIGHT } from '../../src/pubsub/cloud-events.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { accessUrl } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const KEY = 'call-limit-key-0123456789abcdef';

describe('CallLimit', () => {
  it('admits up to its bound, queues up to its line, refuses past both, and hands a released place to the first waiting', async () => {
    const limit = new CallLimit(2, 1);
    assert.equal(await limit.acquire(), true);
    assert.equal(await limit.acquire(), true);
    const third = limit.acquire();
    assert.equal(await limit.acquire(), false, 'past the line');
    limit.release();
    assert.equal(await third, true);
    const fourth = limit.acquire();
    limit.refuseWaiting();
    assert.equal(await fourth, false);
    limit.release();
    limit.release();
    assert.equal(await limit.acquire(), true);
  });
});

describe('connected and disconnected events at a silent handler', () => {
  it(`are at most ${SYSTEM_EVENTS_IN_FLIGHT} at once, however many connections come and go`, async (t) => {
    let atHandler = 0;
    let most = 0;
    const { urlTemplate } = await serveEventHandler(t, (req) => {
      req.resume();
      atHandler++;
      most = Math.max(most, atHandler);
      req.socket.once('close', () => atHandler--);
    });
    // No event ends at the handler while the test counts (a busy suite took 13 s to get here): an event that timed
    // out freed its place, the next one reached the handler before the handler saw the first one's socket close,
    // and the handler counted 258 at once where the relay had 256.
    const handler = { urlTemplate, userEventPattern: '', systemEvents: ['connected', 'disconnected'], timeoutMs: 60000, retries: 0 };
    const logs = captureLogger('info');
    const relay = await startTestRelay(
      t,
      { limits: { connectRatePerAddress: 100000, connectBurstPerAddress: 100000 }, pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler] }] } },
      { log: logs.log },
    );
    // Connections that open and leave at once, 100 at a time.
    const url = accessUrl(relay.url, { hub: 'chat', key: KEY });
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const ws = new WebSocket(url, ['json.webpubsub.azure.v1']);
          cleanupFor(t).after(() => ws.terminate());
          ws.on('error', () => {});
          await withTimeout(new Promise((r) => ws.once('open', r)), 10000, 'a client open');
          ws.close();
        }),
      );
    }
    // Before: one request per connection (400) at the handler until their timeouts.
    await until(() => atHandler >= SYSTEM_EVENTS_IN_FLIGHT, 10000, `${SYSTEM_EVENTS_IN_FLIGHT} events at the handler (${atHandler})`);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(most, SYSTEM_EVENTS_IN_FLIGHT);
    assert.equal(logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed').length, 0, 'the rest wait, none refused yet');
  });
});
