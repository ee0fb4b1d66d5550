// A simple WebSocket client in sendToGroup mode (webpubsub_mode=sendToGroup&group=g,
// docs/protocols/web-pubsub.md "Simple clients"): each frame it sends is published to
// group g, text as text and binary as binary, in order, from its user; the mode is
// checked at the upgrade (400 for one it cannot have), the role per frame; what is not
// published ends the connection with a close code saying why. ws as the simple
// client, as a browser's WebSocket would be; a real nats-server for the durable hub.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';
import { maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import type { ClientAccessOptions } from '../../src/pubsub/client-access-url.ts';

const KEY = 'chat-access-key-0123456789';

interface SimpleClient {
  ws: WebSocket;
  received: { isBinary: boolean; data: Buffer }[];
  closed: Promise<{ code: number; reason: string }>;
}

/** A simple client (no subprotocol) opened with `query` after the access token; rejects with the refusal's status. */
async function openSimple(t: TestContext, relayUrl: string, options: ClientAccessOptions, query: string): Promise<SimpleClient> {
  const ws = new WebSocket(accessUrl(relayUrl, { hub: HUB, key: KEY, ...options }) + query);
  t.after(() => ws.terminate());
  const received: SimpleClient['received'] = [];
  ws.on('message', (data: Buffer, isBinary) => received.push({ isBinary, data }));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => reject(new Error(`HTTP ${res.statusCode} ${JSON.parse(Buffer.concat(chunks).toString()).code}`)));
      });
    }),
    5000,
    'the simple client to open',
  );
  return { ws, received, closed };
}

const SENDS_TO_G = '&webpubsub_mode=sendToGroup&group=g';

describe('a simple client in sendToGroup mode', () => {
  it('publishes each frame to its group, text as text and binary as binary, in order, from its user; no message event is sent', async (t) => {
    const events: string[] = [];
    // A handler that takes every user event: in sendToGroup mode none may reach it.
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      events.push(String(req.headers['ce-eventname']));
      req.resume();
      res.writeHead(204).end();
    });
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] } });
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB, key: KEY, groups: ['g'] }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    const rawReader = await openSimple(t, relay.url, { groups: ['g'] }, '');
    // The mode named in another case.
    const sender = await openSimple(t, relay.url, { userId: 'alice', roles: ['webpubsub.sendToGroup.g'] }, '&webpubsub_mode=SendToGroup&group=g');
    sender.ws.send('hello');
    sender.ws.send(Buffer.from([1, 2, 3]));
    for (let i = 0; i < 200; i++) sender.ws.send(`n${i}`);
    await until(() => json.dataMessages().length === 202 && rawReader.received.length === 202, 5000, 'every frame at both members');
    const [first, second] = json.dataMessages();
    assert.deepEqual(first, { type: 'message', from: 'group', group: 'g', fromUserId: 'alice', dataType: 'text', data: 'hello' });
    assert.deepEqual(second, { type: 'message', from: 'group', group: 'g', fromUserId: 'alice', dataType: 'binary', data: 'AQID' });
    assert.deepEqual(json.dataMessages().slice(2).map((m) => m.data), Array.from({ length: 200 }, (_, i) => `n${i}`));
    // A simple member gets the data alone: text as a text frame, binary as a binary frame.
    assert.deepEqual(rawReader.received[0], { isBinary: false, data: Buffer.from('hello') });
    assert.deepEqual(rawReader.received[1], { isBinary: true, data: Buffer.from([1, 2, 3]) });
    // Not a member itself: nothing comes back to it; and nothing went to the handler (before: 202 message events).
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(sender.received.length, 0);
    assert.deepEqual(events, []);
    assert.equal(sender.ws.readyState, WebSocket.OPEN);

    // webpubsub_mode=sendEvent, said or not, is the default: frames are message events.
    const eventer = await openSimple(t, relay.url, {}, '&webpubsub_mode=sendEvent&group=g');
    eventer.ws.send('to the handler');
    await until(() => events.length === 1, 5000, 'the message event');
    assert.deepEqual(events, ['message']);
    assert.equal(json.dataMessages().length, 202);
  });

  it('refuses at the upgrade (400) a mode it cannot have, and leaves the mode to simple clients', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: KEY }] } });
    const roles = ['webpubsub.sendToGroup'];
    for (const query of [
      '&webpubsub_mode=sendToGroups&group=g',
      '&webpubsub_mode=sendToGroup',
      '&webpubsub_mode=sendToGroup&group=',
      '&webpubsub_mode=sendToGroup&group=a&group=b',
      `&webpubsub_mode=sendToGroup&group=${'x'.repeat(1025)}`,
      '&webpubsub_mode=sendToGroup&webpubsub_mode=sendToGroup&group=g',
    ]) {
      await assert.rejects(openSimple(t, relay.url, { roles }, query), /HTTP 400 BadRequest/, query);
    }
    // A group of 1,024 characters is one.
    const long = await openSimple(t, relay.url, { roles }, `&webpubsub_mode=sendToGroup&group=${'x'.repeat(1024)}`);
    long.ws.close();
    // A JSON client says what each message is: its query's mode is not read.
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB, key: KEY }) + '&webpubsub_mode=nonsense', PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
  });

  it('needs the role to send to its group, asked per frame: without it the connection is closed 1008 GroupSendForbidden; a grant through REST lets it send', async (t) => {
    const logs = captureLogger('info');
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: KEY }] } }, { log: logs.log });
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB, key: KEY, groups: ['g'] }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    // A role for another group only: not this one.
    const refused = await openSimple(t, relay.url, { roles: ['webpubsub.sendToGroup.h'] }, SENDS_TO_G);
    refused.ws.send('not allowed');
    refused.ws.send('nor this');
    assert.deepEqual(await withTimeout(refused.closed, 5000, 'the close'), { code: 1008, reason: 'GroupSendForbidden' });
    assert.ok(logs.lines().some((l) => l.event === 'pubsub.group_send_failed' && l.code === 'GroupSendForbidden' && l.group === 'g'));

    // No role at the upgrade, granted once connected (the server learns its id from the connected log line here).
    const later = await openSimple(t, relay.url, { userId: 'bob' }, SENDS_TO_G);
    await until(() => logs.lines().filter((l) => l.event === 'pubsub.connected' && l.mode === 'sendToGroup').length === 2, 5000, 'the connected line');
    const connectionId = String(logs.lines().filter((l) => l.event === 'pubsub.connected' && l.mode === 'sendToGroup')[1].connectionId);
    await serviceClient(relay).grantPermission(connectionId, 'sendToGroup', { targetName: 'g' });
    later.ws.send('granted');
    await json.waitFor((m) => m.type === 'message' && m.data === 'granted', 5000, 'the granted frame');
    // Revoked again: its next frame ends it.
    await serviceClient(relay).revokePermission(connectionId, 'sendToGroup', { targetName: 'g' });
    later.ws.send('revoked');
    assert.deepEqual(await withTimeout(later.closed, 5000, 'the close'), { code: 1008, reason: 'GroupSendForbidden' });
    assert.deepEqual(json.dataMessages().map((m) => m.data), ['granted']);
  });

  it('on a durable hub: frames are stored and delivered; one larger than the bus carries closes it 1009, one the store does not take 1011', async (t) => {
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'max_payload: 4096\n' });
    const relay = await startTestRelay(t, {
      bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 1000, gatherStallMs: 50, jetstream: { storage: 'memory', publishTimeoutMs: 1500, unsureRetryMs: 500 } },
      pubsub: { hubs: [{ name: HUB, accessKey: KEY, durable: true }] },
    });
    await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hub to read its stream');
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB, key: KEY, groups: ['g'] }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    const roles = ['webpubsub.sendToGroup'];
    const sender = await openSimple(t, relay.url, { roles }, SENDS_TO_G);
    for (let i = 0; i < 50; i++) sender.ws.send(`d${i}`);
    await until(() => json.dataMessages().length === 50, 10000, 'the stored frames');
    assert.deepEqual(json.dataMessages().map((m) => m.data), Array.from({ length: 50 }, (_, i) => `d${i}`));

    const tooLarge = await openSimple(t, relay.url, { roles }, SENDS_TO_G);
    tooLarge.ws.send(Buffer.alloc(8192, 7));
    assert.deepEqual(await withTimeout(tooLarge.closed, 5000, 'the close'), { code: 1009, reason: 'GroupSendTooLarge' });

    // The store away: the frame is not published within publishTimeoutMs, and the client is told (before: no mode at all).
    await nats.freeze();
    sender.ws.send('while frozen');
    assert.deepEqual(await withTimeout(sender.closed, 10000, 'the close'), { code: 1011, reason: 'GroupSendFailed' });
    nats.thaw();
    // Its try went out unanswered (the server frozen, not gone): stored once the server takes what waited for it, and
    // delivered. The docs said such a frame "was not published" and told the client to send it again (twice, then).
    await json.waitFor((m) => m.type === 'message' && m.data === 'while frozen', 10000, 'the frame stored late');
  });

  it('publishes the frames a client sent before it closed (a device that sends its readings and leaves): its close does not drop those still waiting their turn', async (t) => {
    const nats = await startNatsServer(t, 'n1');
    const relay = await startTestRelay(t, {
      bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 1000, gatherStallMs: 50, jetstream: { storage: 'memory' } },
      pubsub: { hubs: [{ name: HUB, accessKey: KEY, durable: true }] },
      // Few at once: most frames wait their turn behind the store's answers when the close is read.
      limits: { requestsInFlightPerConnection: 2 },
    });
    await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hub to read its stream');
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB, key: KEY, groups: ['g'] }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    const url = new URL(accessUrl(relay.url, { hub: HUB, key: KEY, roles: ['webpubsub.sendToGroup'] }) + SENDS_TO_G);
    const device = await rawUpgrade(t, Number(url.port), url.pathname + url.search);
    assert.equal(device.status, 101);
    // 100 frames and a normal close in one write: all of them read before the close.
    const frames = Array.from({ length: 100 }, (_, i) => maskedFrame(0x1, `r${i}`));
    device.socket.write(Buffer.concat([...frames, maskedFrame(0x8, Buffer.from([0x03, 0xe8]))]));
    device.socket.resume();
    // Before: those still waiting behind the store when the close came were dropped (a few of 32 by default, most here).
    await until(() => json.dataMessages().length === 100, 10000, 'every frame sent before the close');
    assert.deepEqual(json.dataMessages().map((m) => m.data), Array.from({ length: 100 }, (_, i) => `r${i}`));
  });
});
