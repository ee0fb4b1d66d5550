// A durable hub whose history.maxBytes is smaller than a message it is sent
// (limits.pubsubMessageBytes allows up to 1 MiB; history.maxBytes takes 1 KiB
// and up): JetStream drops such a message as it stores it (the oldest go
// first), so it is refused before it is stored (REST 413 BusPayloadTooLarge,
// the client's ack BadRequest), as one past NATS's max_payload. Before (found
// by review), it was acknowledged (202, ack success), reached nobody, and every
// connection of the hub was ended (StreamGap) when the edges found the hole.
// One edge in this process on one nats-server.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { signJwt } from '../../src/auth/jwt.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';

const MAX_BYTES = 16 * 1024;

describe("a durable hub's history.maxBytes below the size of a message", () => {
  const cleanup = new Cleanup();
  let edge: RunningRelay;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    edge = await startTestRelay(cleanup, edgeOverrides('edge-a', [nats.url], { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxBytes: MAX_BYTES } }] } }));
    await waitReady(edge, 200, 20000);
  });
  after(() => cleanup.run());

  const rest = (path: string, method = 'GET', body?: string) =>
    httpRequest(`${edge.url}/api/hubs/${HUB}/${path}`, {
      method,
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: `${edge.url}/api/hubs/${HUB}/${path.split('?')[0]}` }, HUB_KEY, 600)}` },
      ...(body === undefined ? {} : { body: Buffer.from(body) }),
    });

  it('refuses one it would not keep, before anyone has it, and the members stay', async (t) => {
    const sender = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'sender' }), PLAIN, t);
    const member = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'member' }), PLAIN, t);
    assert.equal((await member.request({ type: 'joinGroup', group: 'g' })).success, true);

    const big = 'x'.repeat(MAX_BYTES + 1000);
    const ack = await sender.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: big }, 10000);
    assert.equal(ack.success, false, 'acknowledged, and dropped by JetStream as it was stored');
    assert.equal(ack.error.name, 'BadRequest');
    assert.match(ack.error.message, /history\.maxBytes/);
    const sent = await rest('groups/g/:send', 'POST', big);
    assert.equal(sent.status, 413, sent.body.toString());
    assert.equal(JSON.parse(sent.body.toString()).code, 'BusPayloadTooLarge');

    // One that fits is stored, delivered and kept; the member was never cut off.
    const fits = 'y'.repeat(MAX_BYTES - 1024);
    assert.equal((await sender.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: fits }, 10000)).success, true);
    await member.waitFor((m) => m.type === 'message' && m.data === fits, 5000, 'the event that fits');
    assert.equal(member.ws.readyState, WebSocket.OPEN, 'the member was ended (StreamGap)');
    assert.ok(!member.messages.some((m) => m.type === 'message' && m.data === big), 'the refused event reached the member');
    const page = JSON.parse((await rest('groups/g/messages?after=0')).body.toString());
    assert.deepEqual(page.messages.map((m: { data: string }) => m.data.length), [fits.length]);
  });
});
