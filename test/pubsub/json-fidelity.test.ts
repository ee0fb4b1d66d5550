// json data "will be published as what it is" (Azure Web PubSub, the JSON
// subprotocols) and a handler's reply is passed through: the text a sender
// wrote reaches every receiver, not a re-encoding of the parsed value (which
// turned 12345678901234567890 into 12345678901234567000, 1.10 into 1.1, 1e400
// into null and -0 into 0). Checked on the frames' raw text: to Web PubSub
// clients (plain and reliable) and simple clients, from a client's
// sendToGroup, a REST send, an event handler's reply; on the body of the
// event the handler gets; and from one edge to another over NATS (core NATS
// and a durable hub's JetStream stream), where the data is the bus message's
// body as it was written.
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { signJwt } from '../../src/auth/jwt.ts';
import { waitReady } from '../helpers/cluster.ts';
import { startNatsServer, waitForJetStream } from '../helpers/nats.ts';
import { PLAIN, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const KEY = 'json-fidelity-key-0123456789abcdef';

/** What a re-encoding changes: digits past 2^53, a trailing zero, a number past double range, -0, escapes, whitespace inside. */
const PAYLOAD = '{"id":12345678901234567890,"price":1.10,"big":1e400,"n":-0,"list":[ 1.0, 2E+2 ],"s":"\\u00e9\\/"}';
/** The handler's reply: another such value. */
const REPLY = '[12345678901234567891, 0.30000000000000000001, {"x" : -0.0}]';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A handler that keeps every user event's body and answers `reply` events with REPLY (surrounded by whitespace) as JSON. */
async function recordingHandler(t: TestContext): Promise<{ urlTemplate: string; events: Received[] }> {
  const events: Received[] = [];
  const { urlTemplate } = await serveEventHandler(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      events.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const event = String(req.headers['ce-eventname']);
      if (event === 'reply' || event === 'message') res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(`\n ${REPLY} \r\n`);
      else res.writeHead(204).end();
    });
  });
  return { urlTemplate, events };
}

async function relayWithHandler(t: TestContext) {
  const handler = await recordingHandler(t);
  const relay = await startTestRelay(t, {
    pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: handler.urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
  });
  return { relay, handler };
}

/** A Web PubSub client whose data frames are also kept as the text that came. */
async function textKeepingClient(url: string, protocol: string, t: TestContext): Promise<{ client: RawPubSubClient; frames: string[] }> {
  const client = await RawPubSubClient.connect(url, protocol, t);
  await client.waitFor((m) => m.event === 'connected');
  const frames: string[] = [];
  client.ws.on('message', (data, isBinary) => {
    if (!isBinary && String(data).includes('"type":"message"')) frames.push(String(data));
  });
  return { client, frames };
}

/** A simple WebSocket client (no subprotocol): every frame it gets, as text. */
async function simpleClient(url: string, t: TestContext): Promise<{ ws: WebSocket; frames: string[] }> {
  const ws = new WebSocket(url);
  t.after(() => ws.terminate());
  const frames: string[] = [];
  ws.on('message', (data) => frames.push(String(data)));
  await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 5000, 'the simple client to open');
  return { ws, frames };
}

describe('json data is published as what it is', () => {
  it("a client's sendToGroup reaches plain, reliable and simple clients with the data as the sender wrote it", async (t) => {
    const { relay } = await relayWithHandler(t);
    const url = (userId: string) => accessUrl(relay.url, { hub: 'chat', key: KEY, userId, groups: ['g'] });
    const sender = await textKeepingClient(url('sender'), PLAIN, t);
    const reliable = await textKeepingClient(url('reliable'), RELIABLE, t);
    const simple = await simpleClient(url('simple'), t);
    // `data` between other members, with the frame's own whitespace around it.
    sender.client.send(`{"type":"sendToGroup", "group":"g", "dataType":"json", "data" : ${PAYLOAD} , "ackId":1}`);
    await sender.client.waitFor((m) => m.type === 'ack' && m.ackId === 1, 5000, 'the ack');
    await until(() => sender.frames.length === 1 && reliable.frames.length === 1 && simple.frames.length === 1, 5000, 'the messages');
    // Before: {"id":12345678901234567000,"price":1.1,"big":null,"n":0,"list":[1,200],"s":"é/"}.
    assert.equal(simple.frames[0], PAYLOAD);
    assert.ok(sender.frames[0].endsWith(`"dataType":"json","data":${PAYLOAD}}`), sender.frames[0]);
    assert.match(reliable.frames[0], /"sequenceId":\d+\}$/);
    assert.ok(reliable.frames[0].includes(`"dataType":"json","data":${PAYLOAD},"sequenceId":`), reliable.frames[0]);
    // Still JSON, and what a parse of the original gives.
    assert.deepEqual(JSON.parse(reliable.frames[0]).data, JSON.parse(PAYLOAD));
    // A member named with escapes, given twice: the one JSON.parse keeps (the last) is sent, as written.
    sender.client.send(`{"type":"sendToGroup","group":"g","data":1,"d\\u0061ta":${PAYLOAD},"ackId":2}`);
    await until(() => simple.frames.length === 2, 5000, 'the second message');
    assert.equal(simple.frames[1], PAYLOAD);
  });

  it('a REST application/json send reaches Web PubSub and simple clients as written, without the whitespace around it', async (t) => {
    const { relay } = await relayWithHandler(t);
    const json = await textKeepingClient(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'json', groups: ['g'] }), PLAIN, t);
    const simple = await simpleClient(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'simple', groups: ['g'] }), t);
    for (const path of ['groups/g/:send', ':send']) {
      const restUrl = `${relay.url}/api/hubs/chat/${path}?api-version=2024-01-01`;
      const res = await fetch(restUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: restUrl }, KEY, 600)}` },
        body: ` \n${PAYLOAD}\t\r\n`,
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(res.status, 202, path);
    }
    await until(() => json.frames.length === 2 && simple.frames.length === 2, 5000, 'the two sends');
    assert.deepEqual(simple.frames, [PAYLOAD, PAYLOAD]);
    for (const frame of json.frames) assert.ok(frame.endsWith(`"dataType":"json","data":${PAYLOAD}}`), frame);
    // Not JSON is still refused.
    const restUrl = `${relay.url}/api/hubs/chat/:send?api-version=2024-01-01`;
    const bad = await fetch(restUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: restUrl }, KEY, 600)}` },
      body: `${PAYLOAD},`,
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(bad.status, 400);
  });

  it("a json event reaches the handler as the client wrote it, and the handler's application/json reply reaches the client as the handler wrote it", async (t) => {
    const { relay, handler } = await relayWithHandler(t);
    for (const protocol of [PLAIN, RELIABLE]) {
      const client = await textKeepingClient(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' }), protocol, t);
      handler.events.length = 0;
      client.client.send(`{"type":"event","event":"reply","dataType":"json","data":${PAYLOAD},"ackId":1}`);
      await client.client.waitFor((m) => m.type === 'ack' && m.ackId === 1, 5000, 'the ack');
      await until(() => client.frames.length === 1, 5000, 'the reply');
      // Before: the handler got {"id":12345678901234567000,...} and the client [12345678901234567000,0.3,{"x":0}].
      assert.equal(handler.events[0].body, PAYLOAD, protocol);
      assert.equal(handler.events[0].headers['content-type'], 'application/json');
      assert.ok(client.frames[0].includes(`"from":"server","dataType":"json","data":${REPLY}`), client.frames[0]);
    }
    // A simple client's frame is its message event; the JSON reply comes back as the handler wrote it.
    const simple = await simpleClient(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 's' }), t);
    simple.ws.send(PAYLOAD);
    await until(() => simple.frames.length === 1, 5000, "the simple client's reply");
    assert.equal(simple.frames[0], REPLY);
  });
});

describe('json data crosses edges as written', () => {
  for (const mode of ['core NATS', 'JetStream'] as const) {
    it(`on ${mode}: a client on one edge publishes, plain, reliable and simple clients on another get the data as written`, async (t) => {
      const nats = await startNatsServer(t);
      await waitForJetStream([nats]);
      const edge = (nodeId: string) =>
        startTestRelay(t, {
          nodeId,
          bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: { enabled: mode === 'JetStream' } },
          pubsub: { hubs: [{ name: 'chat', accessKey: KEY }] },
        });
      const [a, b] = [await edge('edge-a'), await edge('edge-b')];
      await waitReady(a);
      await waitReady(b);
      const url = (relayUrl: string, userId: string) => accessUrl(relayUrl, { hub: 'chat', key: KEY, userId, groups: ['g'] });
      const sender = await textKeepingClient(url(a.url, 'sender'), PLAIN, t);
      const reliable = await textKeepingClient(url(b.url, 'reliable'), RELIABLE, t);
      const simple = await simpleClient(url(b.url, 'simple'), t);
      // Probes until edge b's interest in the group has reached edge a.
      for (let i = 0; !simple.frames.includes(`"probe"`); i++) {
        assert.ok(i < 250, 'the group never became routable across the edges');
        await sender.client.request({ type: 'sendToGroup', group: 'g', dataType: 'json', data: 'probe' });
        await new Promise((r) => setTimeout(r, 20));
      }
      sender.client.send(`{"type":"sendToGroup","group":"g","dataType":"json","data":${PAYLOAD},"ackId":1000}`);
      await sender.client.waitFor((m) => m.type === 'ack' && m.ackId === 1000, 5000, 'the ack');
      const isPayload = (frame: string) => frame.includes('"id":');
      await until(() => simple.frames.some(isPayload) && reliable.frames.some(isPayload), 5000, 'the message on edge b');
      // Before: {"id":12345678901234567000,"price":1.1,"big":null,...} on both.
      assert.equal(simple.frames.find(isPayload), PAYLOAD);
      const frame = reliable.frames.find(isPayload)!;
      assert.ok(frame.includes(`"dataType":"json","data":${PAYLOAD},"sequenceId":`), frame);
    });
  }
});
