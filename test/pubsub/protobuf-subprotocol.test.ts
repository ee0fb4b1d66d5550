// The protobuf subprotocols, protobuf.webpubsub.azure.v1 and protobuf.reliable.webpubsub.azure.v1
// (docs/protocols/web-pubsub.md, "Protobuf subprotocols"), spoken by a client built on protobufjs (an
// implementation of the format that is not ours) from the messages as Azure documents them, against
// JSON clients in the same groups: requests and acks, data of every type both ways, the event handler,
// sequence ids, acknowledgements and recovery of a reliable session, and bytes that are not a message.
// Before, a client offering only these subprotocols was refused 400.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { Any, Downstream, Reading, Upstream } from '../helpers/protobuf-schema.ts';
import WebSocket from 'ws';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl, recoveryQuery, startPubSubRelay } from '../helpers/pubsub.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { until, withTimeout } from '../helpers/wait.ts';


const PROTOBUF = 'protobuf.webpubsub.azure.v1';
const PROTOBUF_RELIABLE = 'protobuf.reliable.webpubsub.azure.v1';
const ROLES = ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'];

/** A protobuf subprotocol client: every DownstreamMessage decoded (uint64 as strings, bytes as Buffers), kept in order. */
class ProtobufClient {
  readonly messages: any[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.messages.push(Downstream.toObject(Downstream.decode(data), { longs: String, bytes: Buffer, oneofs: true })));
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  }

  static async connect(t: TestContext, url: string, protocol = PROTOBUF): Promise<ProtobufClient> {
    const client = new ProtobufClient(new WebSocket(url, [protocol]));
    t.after(() => client.ws.terminate());
    await withTimeout(new Promise((resolve, reject) => client.ws.once('open', resolve).once('error', reject)), 5000, 'the protobuf client to open');
    assert.equal(client.ws.protocol, protocol);
    return client;
  }

  send(message: object): void {
    this.ws.send(Upstream.encode(Upstream.fromObject(message)).finish());
  }

  async waitFor(match: (m: any) => boolean, what: string): Promise<any> {
    await until(() => this.messages.some(match), 5000, what);
    return this.messages.find(match);
  }

  ack(ackId: number | string): Promise<any> {
    return this.waitFor((m) => m.ack_message?.ack_id === String(ackId), `ack ${ackId}`);
  }

  data(): any[] {
    return this.messages.filter((m) => m.data_message).map((m) => m.data_message);
  }

  connected(): Promise<any> {
    return this.waitFor((m) => m.system_message?.connected_message, 'connected').then((m) => m.system_message.connected_message);
  }
}

/** A varint's bytes, written here by hand. */
function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return Buffer.from(out);
}

/** A length-delimited field (wire type 2) numbered `n`, written here by hand. */
function field(n: number, value: Buffer): Buffer {
  return Buffer.concat([varint((n << 3) | 2), varint(value.length), value]);
}

const reading = (value: number) => Any.create({ type_url: 'type.googleapis.com/azure.webpubsub.Reading', value: Reading.encode(Reading.create({ value })).finish() });

describe('the protobuf subprotocols', () => {
  it('protobuf.webpubsub.azure.v1: connected, joins and sends acked, every data type both ways with JSON clients, events to the handler', async (t) => {
    const events: { name: string; type: string | undefined; body: Buffer }[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        events.push({ name: String(req.headers['ce-eventname']), type: req.headers['content-type'], body: Buffer.concat(chunks) });
        res.writeHead(204).end();
      });
    });
    const relay = await startPubSubRelay(t, { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] } });
    // Offered after one the relay does not speak: the first it speaks is echoed.
    const client = new ProtobufClient(new WebSocket(accessUrl(relay.url, { userId: 'dev-1', roles: ROLES }), ['mqtt', PROTOBUF]));
    t.after(() => client.ws.terminate());
    await withTimeout(new Promise((resolve, reject) => client.ws.once('open', resolve).once('error', reject)), 5000, 'open');
    assert.equal(client.ws.protocol, PROTOBUF);
    const connected = await client.connected();
    assert.equal(connected.user_id, 'dev-1');
    assert.ok(connected.connection_id.length > 0);
    assert.equal(connected.reconnection_token ?? '', '', 'no reconnection token without a reliable session');

    const json = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'app', roles: ROLES, groups: ['g'] }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    client.send({ join_group_message: { group: 'g', ack_id: 1 } });
    assert.equal((await client.ack(1)).ack_message.success, true);
    const any = reading(7);
    client.send({ send_to_group_message: { group: 'g', ack_id: 2, data: { text_data: 'héllo' } } });
    client.send({ send_to_group_message: { group: 'g', ack_id: 3, data: { binary_data: Buffer.from([0, 1, 255]) }, no_echo: true } });
    client.send({ send_to_group_message: { group: 'g', ack_id: 4, data: { protobuf_data: any } } });
    client.send({ send_to_group_message: { group: 'g', ack_id: 5, data: { json_data: '{"t":21.5,"big":12345678901234567890}' } } });
    for (const id of [2, 3, 4, 5]) assert.equal((await client.ack(id)).ack_message.success, true, `ack ${id}`);
    await until(() => json.dataMessages().length === 4, 5000, 'the four messages at the JSON member');
    const got = json.dataMessages();
    assert.deepEqual(got.map((m) => [m.from, m.group, m.fromUserId, m.dataType]), [
      ['group', 'g', 'dev-1', 'text'],
      ['group', 'g', 'dev-1', 'binary'],
      ['group', 'g', 'dev-1', 'protobuf'],
      ['group', 'g', 'dev-1', 'json'],
    ]);
    assert.equal(got[0].data, 'héllo');
    assert.equal(got[1].data, Buffer.from([0, 1, 255]).toString('base64'));
    assert.deepEqual(Buffer.from(got[2].data, 'base64'), Buffer.from(Any.encode(any).finish()));
    assert.deepEqual(got[3].data, { t: 21.5, big: 12345678901234567890 });

    // Its own messages come back but the one sent with no_echo, each typed as sent; the Any unpacks.
    await until(() => client.data().length === 3, 5000, 'the echoes');
    const echoes = client.data();
    assert.deepEqual(echoes.map((d) => [d.from, d.group, d.data.data]), [
      ['group', 'g', 'text_data'],
      ['group', 'g', 'protobuf_data'],
      ['group', 'g', 'json_data'],
    ]);
    assert.equal(echoes[1].data.protobuf_data.type_url, 'type.googleapis.com/azure.webpubsub.Reading');
    assert.equal((Reading.decode(echoes[1].data.protobuf_data.value) as any).value, 7);
    // JSON data as its sender wrote it: the 20-digit number is not rounded.
    assert.equal(echoes[2].data.json_data, '{"t":21.5,"big":12345678901234567890}');
    assert.equal(echoes.some((d) => d.sequence_id !== undefined), false, 'no sequence ids on the plain subprotocol');

    // From a JSON client: json, text and binary data reach it in its own types.
    for (const [dataType, data] of [['json', { a: [1, 'two'] }], ['text', 'plain'], ['binary', 'AQID']] as const) {
      assert.equal((await json.request({ type: 'sendToGroup', group: 'g', dataType, data, noEcho: true })).success, true);
    }
    await until(() => client.data().length === 6, 5000, 'the JSON client\'s messages');
    const fromJson = client.data().slice(3);
    assert.equal(fromJson[0].data.json_data, '{"a":[1,"two"]}');
    assert.equal(fromJson[1].data.text_data, 'plain');
    assert.deepEqual(fromJson[2].data.binary_data, Buffer.from([1, 2, 3]));

    // Refusals come as acks: a group it may not send to; a repeated ackId; json_data that is not JSON.
    client.send({ leave_group_message: { group: 'g', ack_id: 6 } });
    assert.equal((await client.ack(6)).ack_message.success, true);
    client.send({ send_to_group_message: { group: 'g', ack_id: 2, data: { text_data: 'again' } } });
    assert.equal((await client.waitFor((m) => m.ack_message?.ack_id === '2' && !m.ack_message.success, 'the duplicate')).ack_message.error.name, 'Duplicate');
    client.send({ send_to_group_message: { group: 'g', ack_id: 7, data: { json_data: '{not json' } } });
    assert.equal((await client.ack(7)).ack_message.error.name, 'BadRequest');
    client.send({ send_to_group_message: { group: '', ack_id: 8, data: { text_data: 'x' } } });
    assert.equal((await client.ack(8)).ack_message.error.name, 'BadRequest');

    // Events go to the handler in the content type of their data; acked once it answered.
    client.send({ event_message: { event: 'temp', data: { text_data: '21.5' }, ack_id: 9 } });
    client.send({ event_message: { event: 'reading', data: { protobuf_data: any }, ack_id: 10 } });
    for (const id of [9, 10]) assert.equal((await client.ack(id)).ack_message.success, true);
    assert.deepEqual(events.map((e) => [e.name, e.type]), [
      ['temp', 'text/plain; charset=utf-8'],
      ['reading', 'application/x-protobuf'],
    ]);
    assert.deepEqual(events[1].body, Buffer.from(Any.encode(any).finish()));
    assert.equal(client.ws.readyState, WebSocket.OPEN);
  });

  it('protobuf data from a JSON client reaches a protobuf client as protobuf_data when it is an Any, as binary_data when it is not', async (t) => {
    const relay = await startPubSubRelay(t);
    const client = await ProtobufClient.connect(t, accessUrl(relay.url, { roles: ROLES, groups: ['g'] }));
    await client.connected();
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ROLES }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    const any = Buffer.from(Any.encode(reading(3)).finish());
    const notAny = Buffer.from([0x0a, 0x05, 0x61]);
    for (const bytes of [any, notAny]) {
      assert.equal((await json.request({ type: 'sendToGroup', group: 'g', dataType: 'protobuf', data: bytes.toString('base64') })).success, true);
    }
    // Decoded whole by protobufjs: before, the second made the DownstreamMessage unreadable (a length past its end).
    await until(() => client.data().length === 2, 5000, 'both messages');
    const [first, second] = client.data();
    assert.equal((Reading.decode(first.data.protobuf_data.value) as any).value, 3);
    assert.deepEqual(second.data.binary_data, notAny);
  });

  it('protobuf.reliable.webpubsub.azure.v1: sequence ids, acknowledgements, and recovery of what was not acknowledged', async (t) => {
    const relay = await startPubSubRelay(t);
    const url = accessUrl(relay.url, { roles: ROLES, groups: ['g'] });
    const first = await ProtobufClient.connect(t, url, PROTOBUF_RELIABLE);
    const { connection_id: connectionId, reconnection_token: token } = await first.connected();
    assert.ok(token.length > 0, 'a reconnection token');
    const json = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ROLES }), PLAIN, t);
    await json.waitFor((m) => m.event === 'connected');
    for (let i = 1; i <= 5; i++) assert.equal((await json.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: `m${i}` })).success, true);
    await until(() => first.data().length === 5, 5000, 'five messages');
    assert.deepEqual(first.data().map((d) => [d.sequence_id, d.data.text_data]), [1, 2, 3, 4, 5].map((n) => [String(n), `m${n}`]));
    first.send({ sequence_ack_message: { sequence_id: 3 } });
    // The ack is taken before the socket goes (a ping after it comes back once the relay has read it).
    await withTimeout(new Promise((resolve) => first.ws.once('pong', resolve).ping()), 5000, 'pong');
    first.ws.terminate();
    await first.closed;

    // A new socket with the session's id and token: connected again, then what was not acknowledged, same ids.
    const again = await ProtobufClient.connect(t, url.replace(/access_token=[^&]*/, 'x=1') + recoveryQuery(connectionId, token), PROTOBUF_RELIABLE);
    assert.equal((await again.connected()).connection_id, connectionId);
    await until(() => again.data().length === 2, 5000, 'the two unacknowledged');
    assert.deepEqual(again.data().map((d) => [d.sequence_id, d.data.text_data]), [['4', 'm4'], ['5', 'm5']]);
    assert.equal((await json.request({ type: 'sendToGroup', group: 'g', dataType: 'json', data: { n: 6 } })).success, true);
    await until(() => again.data().length === 3, 5000, 'the next message');
    assert.deepEqual([again.data()[2].sequence_id, again.data()[2].data.json_data], ['6', '{"n":6}']);

    // A recovery of the session with the other encoding's subprotocol is refused, in the one it asked for.
    const wrong = await RawPubSubClient.connect(url + recoveryQuery(connectionId, token), 'json.reliable.webpubsub.azure.v1', t);
    assert.equal((await wrong.closed).code, 1008);
    const unknown = await ProtobufClient.connect(t, url + recoveryQuery('nope', token), PROTOBUF_RELIABLE);
    assert.deepEqual(await withTimeout(unknown.closed, 5000, 'the refusal'), { code: 1008, reason: 'SessionNotFound' });
    assert.ok(unknown.messages[0].system_message.disconnected_message.reason.length > 0, 'a DisconnectedMessage before the close');
  });

  it('a reliable protobuf client on a durable hub gets sequence ids from the stream and its messages again after a reconnect', async (t) => {
    const nats = await startNatsServer(t);
    const relay = await startPubSubRelay(t, {
      bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: { storage: 'memory' } },
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, durable: true }] },
    });
    await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hub to read its stream');
    const url = accessUrl(relay.url, { roles: ROLES, groups: ['g'] });
    const first = await ProtobufClient.connect(t, url, PROTOBUF_RELIABLE);
    const { connection_id: connectionId, reconnection_token: token } = await first.connected();
    first.send({ send_to_group_message: { group: 'g', ack_id: 1, data: { binary_data: Buffer.from('abc') } } });
    assert.equal((await first.ack(1)).ack_message.success, true);
    await until(() => first.data().length === 1, 5000, 'its own message');
    first.ws.terminate();
    await first.closed;
    const again = await ProtobufClient.connect(t, url + recoveryQuery(connectionId, token), PROTOBUF_RELIABLE);
    await until(() => again.data().length === 1, 10000, 'the message again');
    assert.deepEqual([again.data()[0].sequence_id, again.data()[0].data.binary_data], [first.data()[0].sequence_id, Buffer.from('abc')]);
  });

  it('ends a client whose frame is not an UpstreamMessage (1008 InvalidMessage, said in a DisconnectedMessage), ignores one of no kind it knows, and answers an ackId past 2^53 as written', async (t) => {
    const relay = await startPubSubRelay(t);
    const url = accessUrl(relay.url, { roles: ROLES });
    // Only a field of a later version (number 10), or nothing at all: ignored, the client stays.
    const later = await ProtobufClient.connect(t, url);
    await later.connected();
    later.ws.send(Buffer.from([0x52, 0x00]));
    later.ws.send(Buffer.alloc(0));
    // A ping_message (Azure's number 9) is answered with a pong_message; before, it was taken for a later version's
    // message and ignored, and a client waiting for the pong to know the service alive had none.
    later.send({ ping_message: {} });
    await later.waitFor((m) => m.pong_message !== undefined, 'the pong');
    assert.equal(later.messages.filter((m) => m.pong_message).length, 1, 'one pong, for the ping alone');
    later.send({ join_group_message: { group: 'g', ack_id: '18446744073709551615' } });
    const big = await later.ack('18446744073709551615');
    assert.deepEqual([big.ack_message.success ?? false, big.ack_message.error.name], [false, 'BadRequest']);
    // A field repeated is its last value, however often it comes (20,000 group fields, the last one 'g').
    const groups = Buffer.concat([...Array.from({ length: 20000 }, () => Buffer.from([0x0a, 0x01, 0x78])), Buffer.from([0x0a, 0x01, 0x67, 0x10, 0x05])]);
    later.ws.send(Buffer.concat([Buffer.from([0x32]), varint(groups.length), groups]));
    assert.equal((await later.ack(5)).ack_message.success, true);
    assert.equal(later.ws.readyState, WebSocket.OPEN);

    // Before, protobuf_data was taken as bytes, unread: sent on to every protobuf member of the group, whose parser
    // (protobufjs here, Google.Protobuf in Microsoft's client) failed on the whole DownstreamMessage.
    const member = new WebSocket(accessUrl(relay.url, { groups: ['g'] }), [PROTOBUF]);
    t.after(() => member.terminate());
    const memberFrames: Buffer[] = [];
    member.on('message', (data: Buffer) => memberFrames.push(data));
    await withTimeout(new Promise((resolve, reject) => member.once('open', resolve).once('error', reject)), 5000, 'the member to open');
    for (const bad of [
      Buffer.from([0x0a, 0x05, 0x0a]), // a length past the end
      Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // a varint of 11 bytes
      Buffer.from([0x0b]), // a group (wire type 3)
      Buffer.from([0x0a, 0x03, 0x0a, 0x01, 0xff]), // a group name that is not UTF-8
      Buffer.from('{"type":"joinGroup","group":"g"}'), // JSON on the protobuf subprotocol
      // protobuf_data that is not a google.protobuf.Any: a type_url past its end, a type_url not UTF-8, a value that is a varint
      field(1, Buffer.concat([field(1, Buffer.from('g')), Buffer.from([0x10, 0x01]), field(3, field(3, Buffer.from([0x0a, 0x05, 0x61])))])),
      field(1, Buffer.concat([field(1, Buffer.from('g')), field(3, field(3, field(1, Buffer.from([0xc3]))))])),
      field(5, Buffer.concat([field(1, Buffer.from('e')), field(2, field(3, Buffer.from([0x10, 0x01])))])),
      // A field the relay reads, of another wire type than the protocol's: a join_group_message that is a varint, its
      // group a varint, its ack_id bytes; a sequence_ack_message's sequence_id a fixed64. (Google's parsers would
      // skip each as an unknown field; the relay declines the client, as docs/protocols/web-pubsub.md says.)
      Buffer.from([0x30, 0x01]),
      field(6, Buffer.from([0x08, 0x01])),
      field(6, Buffer.concat([field(1, Buffer.from('g')), field(2, Buffer.from([0x01]))])),
      field(8, Buffer.from([0x09, 1, 0, 0, 0, 0, 0, 0, 0])),
    ]) {
      const client = await ProtobufClient.connect(t, url);
      await client.connected();
      client.ws.send(bad);
      assert.deepEqual(await withTimeout(client.closed, 5000, `the close for ${bad.toString('hex')}`), { code: 1008, reason: 'InvalidMessage' }, bad.toString('hex'));
      const said = client.messages.find((m) => m.system_message?.disconnected_message);
      assert.match(said.system_message.disconnected_message.reason, /not a protobuf UpstreamMessage/);
    }
    // Its connected message only: nothing of the bad frames reached it.
    assert.equal(memberFrames.length, 1);
    assert.ok((Downstream.toObject(Downstream.decode(memberFrames[0]), { oneofs: true }) as any).system_message.connected_message);
  });
  it('refuses json_data nested as deep as the JSON parser takes (128) BadRequest, as one deeper, and takes one a level less', async (t) => {
    const relay = await startPubSubRelay(t);
    const client = await ProtobufClient.connect(t, accessUrl(relay.url, { roles: ROLES }));
    await client.connected();
    const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    // In a message, data 128 deep is 129 deep: before, it passed the check of json_data, the message it was read into
    // did not parse, and the client was closed 1008 InvalidMessage (one 129 deep was refused BadRequest). Found by
    // test/fuzz/protobuf-messages.test.ts.
    client.send({ send_to_group_message: { group: 'g', ack_id: 1, data: { json_data: nested(128) } } });
    assert.equal((await client.ack(1)).ack_message.error?.name, 'BadRequest');
    client.send({ send_to_group_message: { group: 'g', ack_id: 2, data: { json_data: nested(129) } } });
    assert.equal((await client.ack(2)).ack_message.error?.name, 'BadRequest');
    client.send({ send_to_group_message: { group: 'g', ack_id: 3, data: { json_data: nested(127) } } });
    assert.equal((await client.ack(3)).ack_message.success, true);
    assert.equal(client.ws.readyState, WebSocket.OPEN);
  });
});
