// Hostile and malformed input on the pub/sub client endpoint: each is answered
// as the README documents, the relay keeps serving, and nothing leaks into
// another hub or group.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { openWebSocket, upgradeStatus } from '../helpers/raw-listener.ts';
import {
  HUB,
  HUB_KEY,
  OTHER_HUB,
  PLAIN,
  RELIABLE,
  RawPubSubClient,
  accessUrl,
  startPubSubRelay,
} from '../helpers/pubsub.ts';
import { maskedFrame, rawUpgrade, readToClose, readUntil } from '../helpers/raw-socket.ts';
import { until, withTimeout } from '../helpers/wait.ts';

describe('pub/sub bad input', () => {
  it('refuses upgrades without a valid token for this hub', async (t) => {
    const relay = await startPubSubRelay(t);
    const base = relay.url.replace('http', 'ws');
    const opts = { protocols: [PLAIN] } as never;
    assert.equal(await upgradeStatus(`${base}/client/hubs/${HUB}`, opts), 401, 'no token');
    assert.equal(await upgradeStatus(`${base}/client/hubs/${HUB}?access_token=not.a.jwt`, opts), 401, 'garbage');
    assert.equal(await upgradeStatus(accessUrl(relay.url, { key: 'wrong-key-0123456789abcdef' }), opts), 401, 'wrong key');
    assert.equal(await upgradeStatus(accessUrl(relay.url, { ttlSeconds: -120 }), opts), 401, 'expired');
    // A token for the other hub, signed with the other hub's key, presented to this hub.
    const other = accessUrl(relay.url, { hub: OTHER_HUB });
    assert.equal(await upgradeStatus(other.replace(`/hubs/${OTHER_HUB}`, `/hubs/${HUB}`), opts), 401, 'other hub');
    // A token signed with this hub's key but whose audience names another path.
    const token = signJwt({ aud: `${relay.url}/client/hubs/${OTHER_HUB}` }, HUB_KEY, 60);
    assert.equal(await upgradeStatus(`${base}/client/hubs/${HUB}?access_token=${token}`, opts), 401, 'audience');
    const none = signJwt({ aud: `${relay.url}/client/hubs/${HUB}` }, HUB_KEY, 60).split('.');
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${none[1]}.`;
    assert.equal(await upgradeStatus(`${base}/client/hubs/${HUB}?access_token=${unsigned}`, opts), 401, 'alg none');
    assert.equal(await upgradeStatus(accessUrl(relay.url).replace(`/hubs/${HUB}`, '/hubs/nohub'), opts), 404, 'no such hub');
    // Without a Web PubSub subprotocol it is a simple WebSocket client, accepted with its token (test/pubsub/simple-clients.test.ts).
    assert.equal(await upgradeStatus(accessUrl(relay.url)), 101, 'no subprotocol');
    assert.equal(await upgradeStatus(`${base}/client/hubs/${HUB}`), 401, 'simple client without a token');
    // Azure's protobuf subprotocols are spoken (test/pubsub/protobuf-subprotocol.test.ts): not taken as a simple client.
    assert.equal(await upgradeStatus(accessUrl(relay.url), { protocols: ['protobuf.reliable.webpubsub.azure.v1'] } as never), 101, 'protobuf only');
    // Still serving.
    const ok = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await ok.waitFor((m) => m.event === 'connected')).type, 'system');
  });

  it('closes on frames that are not protocol messages', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { pubsubMessageBytes: 4096 } });
    const cases: [string, (c: RawPubSubClient) => void, number][] = [
      ['not JSON', (c) => c.send('{nope'), 1008],
      ['a JSON array', (c) => c.send('[1,2]'), 1008],
      ['no type', (c) => c.send({ group: 'g' }), 1008],
      ['binary frame, not UTF-8', (c) => c.ws.send(Buffer.from([0xff, 0xfe, 0x7b])), 1007],
      ['binary frame, UTF-8 but not JSON', (c) => c.ws.send(Buffer.from([1, 2, 3])), 1008],
      ['frame over the limit', (c) => c.send({ type: 'event', event: 'e', data: 'x'.repeat(5000) }), 1009],
    ];
    for (const [what, act, code] of cases) {
      const c = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
      await c.waitFor((m) => m.event === 'connected');
      act(c);
      const closed = await withTimeout(c.closed, 5000, `close after ${what}`);
      assert.equal(closed.code, code, what);
    }
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await c.waitFor((m) => m.event === 'connected');
  });

  it('takes a message in a binary frame as UTF-8 JSON, as Azure does (before: closed 1003)', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'] }), PLAIN, t);
    await c.waitFor((m) => m.event === 'connected');
    c.ws.send(Buffer.from(JSON.stringify({ type: 'joinGroup', group: 'bytes', ackId: 1 }), 'utf8'));
    assert.equal((await c.waitFor((m) => m.type === 'ack' && m.ackId === 1)).success, true);
    c.ws.send(Buffer.from(JSON.stringify({ type: 'sendToGroup', group: 'bytes', dataType: 'text', data: 'grüße', ackId: 2 }), 'utf8'));
    assert.equal((await c.waitFor((m) => m.type === 'ack' && m.ackId === 2)).success, true);
    assert.equal((await c.waitFor((m) => m.type === 'message' && m.group === 'bytes')).data, 'grüße');
  });

  it('acknowledges a message read with a frame over the limit before it closes 1009', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { pubsubMessageBytes: 1024 } });
    const url = new URL(accessUrl(relay.url));
    const up = await rawUpgrade(t, Number(url.port), `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
    assert.equal(up.status, 101);
    if (!up.rest.includes('"event":"connected"')) await readUntil(up.socket, (b) => b.includes('"event":"connected"'), 5000, 'connected');
    // One write, so one read on the relay: a publish, then a frame over the limit.
    const publish = JSON.stringify({ type: 'sendToGroup', group: 'g', ackId: 1, dataType: 'text', data: 'one' });
    up.socket.write(Buffer.concat([maskedFrame(0x1, publish), maskedFrame(0x1, 'x'.repeat(2000))]));
    const bytes = await readToClose(up.socket, 5000, 'the close');
    const ack = bytes.indexOf('"type":"ack","ackId":1,"success":true');
    const close = bytes.indexOf(Buffer.from([0x88, 0x11, 0x03, 0xf1]));
    // Before: the close frame went first, and the published message's ack was lost behind it.
    assert.ok(ack >= 0 && close > ack, `ack at ${ack}, 1009 close at ${close}: ${bytes.toString('latin1').slice(0, 300)}`);
  });

  it('answers bad fields and unknown types with failed acks and keeps the connection', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const failures: [Record<string, unknown>, string][] = [
      [{ type: 'joinGroup' }, 'BadRequest'],
      [{ type: 'joinGroup', group: '' }, 'BadRequest'],
      [{ type: 'joinGroup', group: 'x'.repeat(1025) }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g', dataType: 'text', data: 5 }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g', dataType: 'binary', data: '***' }, 'BadRequest'],
      // Not base64 (found by review: taken, and cut short for receivers).
      [{ type: 'sendToGroup', group: 'g', dataType: 'binary', data: 'Q' }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g', dataType: 'binary', data: '=' }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g', dataType: 'binary', data: 'QUJD=' }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g', dataType: 'protobuf', data: 'x' }, 'BadRequest'],
      [{ type: 'sendToGroup', group: 'g' }, 'BadRequest'],
      // A path segment of the handler URL ({event}): . and .. would move the request up its path.
      [{ type: 'event', event: '..', dataType: 'text', data: 'x' }, 'BadRequest'],
      [{ type: 'event', event: '.', dataType: 'text', data: 'x' }, 'BadRequest'],
      [{ type: 'teleport', group: 'g' }, 'Unsupported'],
    ];
    for (const [message, name] of failures) {
      const ack = await c.request(message);
      assert.equal(ack.success, false, JSON.stringify(message));
      assert.equal(ack.error.name, name, JSON.stringify(message));
    }
    c.send({ type: 'invoke', invocationId: 'i1', target: 'event', event: 'e', dataType: 'text', data: 'x' });
    const invoke = await c.waitFor((m) => m.type === 'invokeResponse');
    assert.deepEqual([invoke.invocationId, invoke.success], ['i1', false]);
    c.send({ type: 'ping' });
    await c.waitFor((m) => m.type === 'pong');
    assert.equal((await c.request({ type: 'joinGroup', group: 'fine' })).success, true);
  });

  it('answers ackIds it cannot remember exactly (past 2^53 - 1, negative, fractional) with BadRequest, echoing them as written', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const raw: string[] = [];
    c.ws.on('message', (data) => raw.push(String(data)));
    for (const ackId of ['9007199254740992', '9007199254740993', '18446744073709551615', '-1', '1.5', '1e400']) {
      c.send(`{"type":"joinGroup","group":"g","ackId":${ackId}}`);
      await until(() => raw.some((m) => m.includes(`"ackId":${ackId},`)), 5000, `the ack for ${ackId}`);
      const ack = JSON.parse(raw.find((m) => m.includes(`"ackId":${ackId},`))!);
      assert.deepEqual([ack.type, ack.success, ack.error.name], ['ack', false, 'BadRequest'], ackId);
    }
    assert.deepEqual([...relay.pubsub.hub(HUB)!.local.connections.values()][0].groups.size, 0, 'none was processed');
    const largest = await c.request({ type: 'joinGroup', group: 'g', ackId: Number.MAX_SAFE_INTEGER });
    assert.equal(largest.success, true, '2^53 - 1 is a valid ackId');
  });

  it('answers an ackId that is not a number with BadRequest, echoing it as written, and ends a client whose ackId is too odd to echo', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const raw: string[] = [];
    c.ws.on('message', (data) => raw.push(String(data)));
    // Before: refused without a word; a client waiting for the ack hung.
    for (const ackId of ['"7"', 'true', 'null', '"x"']) {
      c.send(`{"type":"joinGroup","group":"g","ackId":${ackId}}`);
      await until(() => raw.some((m) => m.includes(`"ackId":${ackId},`)), 5000, `the ack for ${ackId}`);
      const ack = JSON.parse(raw.find((m) => m.includes(`"ackId":${ackId},`))!);
      assert.deepEqual([ack.type, ack.success, ack.error.name], ['ack', false, 'BadRequest'], ackId);
    }
    assert.equal([...relay.pubsub.hub(HUB)!.local.connections.values()][0].groups.size, 0, 'none was processed');
    c.send(`{"type":"joinGroup","group":"g","ackId":{"n":1}}`);
    await withTimeout(c.closed, 5000, 'the connection ended');
    assert.ok(raw.some((m) => m.includes('"event":"disconnected"')), raw.join('\n'));
  });

  it('keeps odd group names apart, and hubs apart', async (t) => {
    const relay = await startPubSubRelay(t);
    const names = ['a', 'a.b', 'a.*', 'a.>', '*', '>', 'a b', 'ü.☃', 'a/b', 'A'];
    const members = new Map<string, RawPubSubClient>();
    for (const name of names) {
      const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
      assert.equal((await c.request({ type: 'joinGroup', group: name })).success, true, name);
      members.set(name, c);
    }
    const elsewhere = await RawPubSubClient.connect(accessUrl(relay.url, { hub: OTHER_HUB }), PLAIN, t);
    for (const name of names) assert.equal((await elsewhere.request({ type: 'joinGroup', group: name })).success, true);
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    for (const name of names) {
      assert.equal((await publisher.request({ type: 'sendToGroup', group: name, dataType: 'text', data: name })).success, true);
    }
    await until(() => [...members.values()].every((c) => c.dataMessages().length >= 1), 5000, 'deliveries');
    await new Promise((r) => setTimeout(r, 100));
    for (const [name, c] of members) {
      assert.deepEqual(c.dataMessages().map((m) => [m.group, m.data]), [[name, name]], `members of ${name}`);
    }
    assert.deepEqual(elsewhere.dataMessages(), [], 'nothing crossed into the other hub');
  });

  it('keeps serving after a burst of garbage connections', async (t) => {
    const relay = await startPubSubRelay(t);
    for (let i = 0; i < 20; i++) {
      const ws = await openWebSocket(accessUrl(relay.url), { protocols: [PLAIN] });
      ws.send(Buffer.from([0xff, 0xfe, 0x00]));
      ws.send('{"type":');
      ws.terminate();
    }
    await until(() => relay.pubsub.hub(HUB)!.local.connections.size === 0, 5000, 'connections forgotten');
    const c = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    assert.equal((await c.request({ type: 'joinGroup', group: 'g' })).success, true);
  });
});
