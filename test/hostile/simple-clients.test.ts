// A simple WebSocket client (no Web PubSub subprotocol) flooding frames at a
// slow event handler: each frame is a `message` event sent one at a time, and
// the relay does not read the client while one is with the handler, so TCP
// stops the flood and the relay's memory stays bounded (docs/event-handlers.md).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { MAX_RSS_GROWTH, assertStillServing, measuringRss, mib, startHostileRelay } from '../helpers/hostile.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, accessUrl } from '../helpers/pubsub.ts';
import { floodWithoutReading, maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';

const FLOOD_BYTES = 64 << 20;
const STALL_MS = 1500;

describe('a simple WebSocket client flooding a slow event handler', () => {
  it('is not read while its frames wait: the relay stops taking them and stays within its memory bound', async (t) => {
    let events = 0;
    const handler = createServer((req, res) => {
      req.resume();
      if (req.method === 'OPTIONS') return void res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
      if (req.headers['ce-type'] === 'azure.webpubsub.user.message') events++;
      setTimeout(() => res.writeHead(204).end(), 200);
    });
    await new Promise<void>((r) => handler.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => (handler.closeAllConnections(), handler.close(r))));
    const port = (handler.address() as { port: number }).port;
    const relay = await startHostileRelay(t, {
      pubsub: {
        hubs: [
          { name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: `http://127.0.0.1:${port}/{event}`, userEventPattern: 'message' }] },
          { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
        ],
      },
    });
    const url = new URL(accessUrl(relay.url));
    // One event first, so the relay has loaded its HTTP client before its memory is measured.
    const warm = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, {});
    warm.socket.write(maskedFrame(0x1, Buffer.from('warm-up')));
    for (let i = 0; i < 250 && events === 0; i++) await new Promise((r) => setTimeout(r, 20));
    warm.socket.destroy();
    const up = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, {});
    assert.equal(up.status, 101);
    const frame = maskedFrame(0x1, Buffer.alloc(100, 0x61));
    const { result, growth } = await measuringRss(relay, () => floodWithoutReading(up.socket, frame, FLOOD_BYTES, STALL_MS));
    t.diagnostic(`wrote ${mib(result.written)} (${result.stalled ? 'relay stopped reading' : result.closed ? 'closed' : 'all taken'}), RSS +${mib(growth)}, ${events} events delivered`);
    assert.ok(result.stalled || result.closed, `the relay took all ${mib(FLOOD_BYTES)}`);
    assert.ok(growth < MAX_RSS_GROWTH, `RSS grew ${mib(growth)}`);
    assert.ok(events < 100, `events go one at a time: ${events}`);
    await assertStillServing(t, relay);
  });
});
