// Data typed `protobuf` from the published @azure/web-pubsub-client 1.0.4, unmodified
// (its WebPubSubDataType has "protobuf": the bytes of a google.protobuf.Any, sent as base64
// like binary): a sendToGroup reaches SDK members as protobuf data, byte for byte, simple
// members as a binary frame, on a durable hub too; a sendEvent reaches the event handler as
// application/x-protobuf, as Azure sends it. Before, every such send and event was refused
// BadRequest (the schema took json, text and binary only).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { HUB, HUB_KEY, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

/** google.protobuf.Any { type_url: "type.googleapis.com/test.Reading", value: Reading { value: 1 } }, serialized by hand. */
const TYPE_URL = Buffer.from('type.googleapis.com/test.Reading');
const ANY = Buffer.concat([Buffer.from([0x0a, TYPE_URL.length]), TYPE_URL, Buffer.from([0x12, 0x02, 0x08, 0x01])]);
const arrayBufferOf = (b: Buffer) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

const ROLES = ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'];

describe('protobuf data from @azure/web-pubsub-client', () => {
  for (const durable of [false, true]) {
    it(`a sendToGroup of protobuf data reaches SDK members as protobuf, simple members as a binary frame${durable ? ' (durable hub)' : ''}`, async (t) => {
      const overrides: Record<string, unknown> = { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, durable }] } };
      if (durable) {
        const nats = await startNatsServer(t);
        overrides.bus = { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: { storage: 'memory' } };
      }
      const relay = await startPubSubRelay(t, overrides);
      if (durable) await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hub to read its stream');
      const sender = await startClient(t, accessUrl(relay.url, { userId: 'alice', roles: ROLES }));
      const member = await startClient(t, accessUrl(relay.url, { roles: ROLES }));
      await member.client.joinGroup('g');
      const simple = new WebSocket(accessUrl(relay.url, { groups: ['g'] }));
      t.after(() => simple.terminate());
      const frames: { data: Buffer; isBinary: boolean }[] = [];
      simple.on('message', (data: Buffer, isBinary) => frames.push({ data, isBinary }));
      await withTimeout(new Promise((resolve, reject) => simple.once('open', resolve).once('error', reject)), 5000, 'the simple member to open');
      // A simple client hears no `connected`: on a durable hub its token's group is in effect once the edge read the
      // join back from the stream, a moment after the upgrade. Text probes until both members have one (a clean-clone
      // CI run sent the protobuf message before that, and the simple member never had it).
      for (let i = 0; !(member.groupData.length > 0 && frames.length > 0); i++) {
        assert.ok(i < 100, 'a probe at both members');
        await sender.client.sendToGroup('g', 'probe', 'text', { fireAndForget: true });
        await new Promise((r) => setTimeout(r, 100));
      }
      const result = await sender.client.sendToGroup('g', arrayBufferOf(ANY), 'protobuf');
      assert.equal(result.isDuplicated, false);
      await until(() => member.groupData.some((m) => m.dataType === 'protobuf') && frames.some((f) => f.isBinary), 10000, 'the message at both members');
      const got = member.groupData.find((m) => m.dataType === 'protobuf');
      assert.equal(got.dataType, 'protobuf');
      assert.equal(got.fromUserId, 'alice');
      assert.deepEqual(Buffer.from(got.data as ArrayBuffer), ANY);
      assert.deepEqual(frames.find((f) => f.isBinary), { data: ANY, isBinary: true });
    });
  }

  it('a sendEvent of protobuf data reaches the event handler as application/x-protobuf, the bytes as sent', async (t) => {
    const seen: { contentType: string | undefined; body: Buffer }[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        seen.push({ contentType: req.headers['content-type'], body: Buffer.concat(chunks) });
        res.writeHead(204).end();
      });
    });
    const relay = await startPubSubRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] } });
    const c = await startClient(t, accessUrl(relay.url));
    await c.client.sendEvent('reading', arrayBufferOf(ANY), 'protobuf');
    assert.equal(seen.length, 1);
    assert.equal(seen[0].contentType, 'application/x-protobuf');
    assert.deepEqual(seen[0].body, ANY);
  });

  it('takes protobuf data as binary data is taken: padded base64 only (else BadRequest), the type named in any case', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ROLES, groups: ['g'] }), undefined, t);
    await c.waitFor((m) => m.event === 'connected');
    const refused = await c.request({ type: 'sendToGroup', group: 'g', dataType: 'protobuf', data: 'QUJD=' });
    assert.deepEqual([refused.success, refused.error?.name], [false, 'BadRequest']);
    // As Azure's .NET client writes its enum's names.
    assert.equal((await c.request({ type: 'sendToGroup', group: 'g', dataType: 'Protobuf', data: ANY.toString('base64') })).success, true);
    const got = await c.waitFor((m) => m.type === 'message');
    assert.deepEqual([got.dataType, got.data], ['protobuf', ANY.toString('base64')]);
  });
});
