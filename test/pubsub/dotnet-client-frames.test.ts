// Frames as Azure's .NET client SDK (Azure.Messaging.WebPubSub.Client) writes
// them, byte for byte as its own protocol tests pin them: `dataType` is its
// enum's name ("Json", "Text", "Binary"), which Azure takes. Before, the relay
// refused every such send and event BadRequest, and dropped a fire-and-forget
// one (no ackId) without a word: a .NET client could join and receive, never publish.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

describe("the .NET client SDK's frames", () => {
  it('sends and events with dataType "Json", "Text" and "Binary" are taken, and reach receivers and handlers in the protocol\'s own lower case', async (t) => {
    const events: { type: string; body: string }[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        events.push({ type: String(req.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(204).end();
      });
    });
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] } });
    const receiver = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await receiver.request({ type: 'joinGroup', group: 'group' });
    const dotnet = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'dotnet' }), PLAIN, t);
    const frames = [
      '{"type":"sendToGroup","group":"group","ackId":738476327894,"noEcho":true,"dataType":"Json","data":{"Value":"xyz"}}',
      '{"type":"sendToGroup","group":"group","ackId":738476327895,"noEcho":true,"dataType":"Text","data":"xyz"}',
      '{"type":"sendToGroup","group":"group","ackId":738476327896,"noEcho":true,"dataType":"Binary","data":"eHl6"}',
      // fireAndForget: no ackId.
      '{"type":"sendToGroup","group":"group","noEcho":false,"dataType":"Text","data":"fire and forget"}',
      '{"type":"event","event":"event","ackId":738476327897,"dataType":"Text","data":"xyz"}',
    ];
    for (const frame of frames) dotnet.send(frame);
    for (const ackId of [738476327894, 738476327895, 738476327896, 738476327897]) {
      const ack = await dotnet.waitFor((m) => m.type === 'ack' && m.ackId === ackId, 5000, `ack ${ackId}`);
      assert.equal(ack.success, true, JSON.stringify(ack));
    }
    await until(() => receiver.dataMessages().length === 4, 5000, 'four group messages');
    assert.deepEqual(
      receiver.dataMessages().map((m) => [m.dataType, m.data]),
      [
        ['json', { Value: 'xyz' }],
        ['text', 'xyz'],
        ['binary', 'eHl6'],
        ['text', 'fire and forget'],
      ],
    );
    await until(() => events.length === 1, 5000, 'the event at the handler');
    assert.deepEqual(events, [{ type: 'text/plain; charset=utf-8', body: 'xyz' }]);
    // A data type no SDK has is still refused.
    const odd = await dotnet.request({ type: 'sendToGroup', group: 'group', dataType: 'Protobuf', data: 'x' });
    assert.equal(odd.success, false);
    assert.equal(odd.error.name, 'BadRequest');
  });
});
