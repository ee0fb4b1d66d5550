// connected and disconnected events outlive the connections they are about, so
// the relay bounds how many are at handlers at once (src/pubsub/call-limit.ts):
// a client opening and closing connections against a silent handler had the
// relay hold a request (and a socket) per event for the handler's timeout.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { CallLimit } from '../../src/pubsub/call-limit.ts';
import { SYSTEM_EVENTS_IN_FLIGHT, SYSTEM_EVENTS_IN_FLIGHT_PER_HUB } from '../../src/pubsub/cloud-events.ts';
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

  it('keeps places and the line for other keys, and hands a released place to the key served longest ago (found by review: one hub held every place)', async () => {
    // 4 places, at most 3 per key; a line of 4, at most 2 per key.
    const limit = new CallLimit(4, 4, 3, 2);
    for (let i = 0; i < 3; i++) assert.equal(await limit.acquire('slow'), true);
    const slowWaiting = [limit.acquire('slow'), limit.acquire('slow')];
    assert.equal(await limit.acquire('slow'), false, "past the key's share of the line");
    // The place slow may not take is another key's, at once.
    assert.equal(await limit.acquire('fast'), true);
    const fastWaiting = limit.acquire('fast');
    const otherWaiting = limit.acquire('other');
    assert.equal(limit.waitingCount, 4);
    assert.equal(await limit.acquire('third'), false, 'past the whole line');
    // Released by fast: slow may not take it (at its share), the key waiting longest ago that may does.
    limit.release('fast');
    assert.equal(await Promise.race([fastWaiting, otherWaiting]), true);
    // Released by slow: its own waiting call goes first only when it is its turn.
    limit.release('slow');
    const settled = await Promise.race([slowWaiting[0].then(() => 'slow'), otherWaiting.then(() => 'other'), new Promise((r) => setTimeout(() => r('none'), 50))]);
    assert.notEqual(settled, 'none');
    limit.refuseWaiting();
    assert.equal(limit.waitingCount, 0);
  });
});

describe('connected and disconnected events at a silent handler', () => {
  it(`are at most ${SYSTEM_EVENTS_IN_FLIGHT_PER_HUB} of one hub at once, however many connections come and go`, async (t) => {
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
    await until(() => atHandler >= SYSTEM_EVENTS_IN_FLIGHT_PER_HUB, 10000, `${SYSTEM_EVENTS_IN_FLIGHT_PER_HUB} events at the handler (${atHandler})`);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(most, SYSTEM_EVENTS_IN_FLIGHT_PER_HUB);
    assert.equal(logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed').length, 0, 'the rest wait, none refused yet');
  });
});

describe('connected events of two hubs', () => {
  it("a silent handler of one hub does not hold up another hub's events (before: its clients' events took every place; found by review)", async (t) => {
    const held: import('node:http').ServerResponse[] = [];
    const slow = await serveEventHandler(t, (req, res) => {
      req.resume();
      // Never answered (closed with the test).
      held.push(res);
    });
    const fastSeen: number[] = [];
    const fast = await serveEventHandler(t, (req, res) => {
      req.resume();
      fastSeen.push(Date.now());
      res.writeHead(204).end();
    });
    const relay = await startTestRelay(t, {
      limits: { connectBurstPerAddress: 10000, connectRatePerAddress: 0 },
      pubsub: {
        hubs: [
          { name: 'slow', accessKey: KEY, eventHandlers: [{ urlTemplate: slow.urlTemplate, userEventPattern: '', systemEvents: ['connected', 'disconnected'], timeoutMs: 60000, retries: 0 }] },
          { name: 'fast', accessKey: KEY, eventHandlers: [{ urlTemplate: fast.urlTemplate, userEventPattern: '', systemEvents: ['connected'], timeoutMs: 60000, retries: 0 }] },
        ],
      },
    });
    cleanupFor(t).after(() => {
      for (const res of held) res.destroy();
    });
    // More clients of hub `slow` than there are places: their `connected` events fill its share, the rest wait.
    const url = accessUrl(relay.url, { hub: 'slow', key: KEY });
    await Promise.all(
      Array.from({ length: SYSTEM_EVENTS_IN_FLIGHT + 20 }, async () => {
        const ws = new WebSocket(url, ['json.webpubsub.azure.v1']);
        cleanupFor(t).after(() => ws.terminate());
        ws.on('error', () => {});
        await withTimeout(new Promise((r) => ws.once('open', r)), 10000, 'a client open');
      }),
    );
    await until(() => held.length >= SYSTEM_EVENTS_IN_FLIGHT_PER_HUB, 10000, `the slow hub's share at its handler (${held.length})`);
    const fastClient = new WebSocket(accessUrl(relay.url, { hub: 'fast', key: KEY }), ['json.webpubsub.azure.v1']);
    cleanupFor(t).after(() => fastClient.terminate());
    fastClient.on('error', () => {});
    // Before: it waited for a place until one of the slow hub's events timed out (60 s here).
    await until(() => fastSeen.length === 1, 5000, "the fast hub's connected event");
    assert.equal(held.length, SYSTEM_EVENTS_IN_FLIGHT_PER_HUB, 'the slow hub took more than its share');
  });
});
