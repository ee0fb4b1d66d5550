// Fan-out: many subscribers in one group each get every event of a burst, in
// order; a subscriber that stops reading is closed as a slow consumer without
// slowing the others, and the relay's memory stays bounded.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { HUB, PLAIN, RELIABLE, RawPubSubClient, accessUrl, pubsubOverrides, startPubSubRelay, recoveryQuery } from '../helpers/pubsub.ts';
import { metricValue, startRelayProcess } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { WebPubSubServiceClient } from '@azure/web-pubsub';

/** A subscriber that only counts and checks order, to keep 1,000 of them cheap. */
class CountingSubscriber {
  received = 0;
  outOfOrder = 0;
  closedWith: number | undefined;
  constructor(readonly ws: WebSocket, reliable: boolean) {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m.type !== 'message') return;
      const n = typeof m.data === 'object' ? m.data.n : m.data;
      if (n !== this.received + 1) this.outOfOrder++;
      this.received++;
      if (reliable && this.received % 100 === 0) ws.send(`{"type":"sequenceAck","sequenceId":${m.sequenceId}}`);
    });
    ws.on('close', (code) => (this.closedWith = code));
  }
}

async function subscribe(url: string, protocol: string, group: string): Promise<CountingSubscriber> {
  const ws = new WebSocket(url, [protocol]);
  const sub = new CountingSubscriber(ws, protocol === RELIABLE);
  await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 10000, 'subscriber open');
  const joined = new Promise<void>((resolve) =>
    ws.on('message', (data) => {
      if (String(data).includes('"ackId":1,')) resolve();
    }),
  );
  ws.send(JSON.stringify({ type: 'joinGroup', group, ackId: 1 }));
  await withTimeout(joined, 10000, 'join ack');
  return sub;
}

describe('pub/sub fan-out', () => {
  it('delivers every event of a burst, in order, to 1,000 subscribers of one group', async (t) => {
    // A thousand clients from one address in a moment: no per-address rate.
    const relay = await startPubSubRelay(t, { limits: { connectRatePerAddress: 0 } });
    const subs: CountingSubscriber[] = [];
    t.after(() => subs.forEach((s) => s.ws.terminate()));
    for (let i = 0; i < 1000; i++) {
      // Half plain, half reliable: both framing paths.
      const protocol = i % 2 === 0 ? PLAIN : RELIABLE;
      subs.push(await subscribe(accessUrl(relay.url, { userId: `u${i}` }), protocol, 'burst'));
    }
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const events = 200;
    for (let n = 1; n <= events; n++) publisher.send({ type: 'sendToGroup', group: 'burst', dataType: 'json', data: n });
    await until(() => subs.every((s) => s.received === events), 60000, 'every subscriber to get every event');
    assert.equal(subs.reduce((sum, s) => sum + s.outOfOrder, 0), 0, 'out-of-order deliveries');
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_slow_consumer_closes_total'), 0);
  });

  it('closes a stalled subscriber as a slow consumer while 100 others get every event', async (t) => {
    // The stalled socket is read again only after every event went out; the
    // close handshake waits that long, so the close frame is still queued then
    // (on a loaded machine that can take longer than the 5 s default).
    const relay = await startRelayProcess(
      t,
      pubsubOverrides({ limits: { outboundBufferBytes: 1048576 }, log: { level: 'info' }, timeouts: { closeHandshakeMs: 60000 } }),
    );
    const fast: CountingSubscriber[] = [];
    t.after(() => fast.forEach((s) => s.ws.terminate()));
    for (let i = 0; i < 100; i++) fast.push(await subscribe(accessUrl(relay.url), PLAIN, 'feed'));

    // The stalled subscriber: a raw socket that upgrades, joins, then never reads again.
    const stalled = connect(relay.port, '127.0.0.1');
    t.after(() => stalled.destroy());
    await withTimeout(new Promise((r) => stalled.once('connect', r)), 5000, 'stalled connect');
    const url = new URL(accessUrl(relay.url));
    const join = Buffer.from(JSON.stringify({ type: 'joinGroup', group: 'feed', ackId: 1 }));
    const mask = Buffer.alloc(4);
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | join.length]), mask, join]);
    stalled.write(
      `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${PLAIN}\r\n\r\n`,
    );
    stalled.write(frame);
    let stalledClosed = false;
    const stalledData: Buffer[] = [];
    stalled.on('data', (d: Buffer) => stalledData.push(d));
    stalled.on('close', () => (stalledClosed = true));
    await until(() => Buffer.concat(stalledData).includes('"ackId":1,'), 5000, 'stalled join ack');
    stalled.pause();
    const baseline = relay.rss();

    const svc = new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=chat-access-key-0123456789;Version=1.0;`, HUB, {
      allowInsecureConnection: true,
    });
    // 16 MB in all: more than loopback's kernel buffers (about 10 MB) can hide.
    const events = 256;
    const payload = 'x'.repeat(64 * 1024);
    let peak = baseline;
    const batch = 8;
    for (let n = 1; n <= events; n += batch) {
      // The fast subscribers keep up batch by batch; the stalled one never reads.
      for (let k = 0; k < batch; k++) await svc.group('feed').sendToAll({ n: n + k, payload });
      await until(() => fast.every((s) => s.received >= n + batch - 1 || s.closedWith !== undefined), 20000, 'batch');
      peak = Math.max(peak, relay.rss());
    }
    await until(() => fast.every((s) => s.received === events), 60000, 'fast subscribers to get every event');
    peak = Math.max(peak, relay.rss());
    const status = await fetch(`${relay.url}/$relay/health`);
    assert.equal(status.status, 200);
    // The relay closed the stalled one (its socket is still unread, so we look at the relay's side).
    await until(() => /"code":"SlowConsumer"/.test(relay.stderr()), 10000, 'slow consumer log line');
    assert.match(relay.stderr(), /"event":"pubsub.ended".*"code":"SlowConsumer"/);
    stalled.resume();
    const closePayload = Buffer.concat([Buffer.from([0x03, 0xf0]), Buffer.from('SlowConsumer')]);
    await until(() => Buffer.concat(stalledData).includes(closePayload), 20000, 'close frame 1008 SlowConsumer');
    // Answer the close as a client does (masked, echoing the code): the relay then ends the socket.
    stalled.write(Buffer.concat([Buffer.from([0x88, 0x82]), mask, Buffer.from([0x03, 0xf0])]));
    await until(() => stalledClosed, 10000, 'stalled socket closed');
    assert.ok(fast.every((s) => s.outOfOrder === 0 && s.closedWith === undefined));
    const growthMiB = (peak - baseline) / 1048576;
    t.diagnostic(`relay RSS growth ${growthMiB.toFixed(1)} MiB while 16 MB went to the stalled subscriber`);
    assert.ok(growthMiB < 48, `relay RSS grew ${growthMiB.toFixed(1)} MiB`);
  });

  it('gives a message of the largest size a client may send to idle members instead of closing them as slow consumers', async (t) => {
    // The relay's envelope is longer than the client's, so the delivered
    // message passes outboundBufferBytes (both 1 MiB by default); every plain
    // member used to be closed 1008 SlowConsumer by it.
    const relay = await startPubSubRelay(t);
    const members = [await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t), await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t)];
    for (const m of members) await m.request({ type: 'joinGroup', group: 'big' });
    const sender = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const envelope = JSON.stringify({ type: 'sendToGroup', group: 'big', dataType: 'text', data: '', ackId: 1 }).length;
    const data = 'x'.repeat(1048576 - envelope);
    assert.equal((await sender.request({ type: 'sendToGroup', group: 'big', dataType: 'text', data, ackId: 1 })).success, true);
    for (const m of members) {
      const got = await m.waitFor((x) => x.type === 'message', 10000, 'the large message');
      assert.equal(got.data.length, data.length);
      assert.equal(m.ws.readyState, WebSocket.OPEN);
    }
  });

  it('stops writing a reliable subscriber that does not read, and gives it every event in order once it reads again', async (t) => {
    // The relay queues at most outboundBufferBytes (16 KiB) to the socket; 24 MB is
    // more than loopback's kernel buffers hold, so most events wait in the
    // session and go out from it (PubSubConnection.flush) as the socket drains.
    const relay = await startPubSubRelay(t, { limits: { outboundBufferBytes: 16384, sessionBufferMessages: 5000, sessionBufferBytes: 64 * 1048576 } });
    const reader = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    await reader.request({ type: 'joinGroup', group: 'g' });
    reader.ws.pause();
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const events = 1500;
    const payload = 'x'.repeat(16 * 1024);
    for (let n = 1; n < events; n++) publisher.send({ type: 'sendToGroup', group: 'g', data: { n, payload }, noEcho: true });
    // The relay handles one client's messages in order: the last one's ack means every event reached the session.
    await publisher.request({ type: 'sendToGroup', group: 'g', data: { n: events, payload }, noEcho: true }, 30000);
    reader.ws.resume();
    await until(() => reader.dataMessages().length >= events, 60000, `all ${events} events (${reader.dataMessages().length} so far)`);
    const got = reader.dataMessages();
    assert.equal(got.length, events);
    assert.deepEqual(got.map((m) => m.sequenceId), Array.from({ length: events }, (_, i) => i + 1));
    assert.ok(got.every((m, i) => m.data.n === i + 1 && m.data.payload === payload));
  });

  it('gives a recovered reliable session its whole backlog in order, however much more than outboundBufferBytes it is', async (t) => {
    // The SDK reconnecting after a dropped socket: everything unacknowledged
    // is sent again from the session (before the drain fix: the first event, then nothing).
    const relay = await startPubSubRelay(t, { limits: { outboundBufferBytes: 16384, sessionBufferMessages: 5000, sessionBufferBytes: 64 * 1048576 } });
    const first = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const connected = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await first.request({ type: 'joinGroup', group: 'g' });
    first.ws.terminate();
    await withTimeout(first.closed, 5000, 'the first socket to close');
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const events = 1500;
    const payload = 'x'.repeat(16 * 1024);
    for (let n = 1; n < events; n++) publisher.send({ type: 'sendToGroup', group: 'g', data: { n, payload }, noEcho: true });
    await publisher.request({ type: 'sendToGroup', group: 'g', data: { n: events, payload }, noEcho: true }, 30000);
    const recovery = recoveryQuery(connected.connectionId, connected.reconnectionToken);
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await until(() => again.dataMessages().length >= events, 60000, `all ${events} events (${again.dataMessages().length} so far)`);
    const got = again.dataMessages();
    assert.deepEqual(got.map((m) => m.sequenceId), Array.from({ length: events }, (_, i) => i + 1));
    assert.ok(got.every((m, i) => m.data.n === i + 1));
  });

  it('keeps writing to a recovered reliable session whose client had acknowledged everything', async (t) => {
    // The SDK acknowledges about once a second, so an idle client that loses
    // its connection usually has nothing unacknowledged. Before: the
    // recovered session was never written again (its next events waited in
    // the buffer until 1008 SessionBufferFull dropped them).
    const relay = await startPubSubRelay(t);
    const first = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const connected = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await first.request({ type: 'joinGroup', group: 'g' });
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    for (let n = 1; n <= 3; n++) await publisher.request({ type: 'sendToGroup', group: 'g', data: n, noEcho: true });
    const third = await first.waitFor((m) => m.type === 'message' && m.data === 3);
    first.send({ type: 'sequenceAck', sequenceId: third.sequenceId });
    // The acknowledgement is read before a later request of the same client is answered.
    await first.request({ type: 'joinGroup', group: 'g' });
    first.ws.terminate();
    await withTimeout(first.closed, 5000, 'the first socket to close');
    const recovery = recoveryQuery(connected.connectionId, connected.reconnectionToken);
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await again.waitFor((m) => m.type === 'system' && m.event === 'connected');
    for (let n = 4; n <= 5; n++) await publisher.request({ type: 'sendToGroup', group: 'g', data: n, noEcho: true });
    await until(() => again.dataMessages().length >= 2, 10000, `events 4 and 5 (${again.dataMessages().length} so far)`);
    assert.deepEqual(again.dataMessages().map((m) => [m.sequenceId, m.data]), [[4, 4], [5, 5]]);
  });

  it('closes a reliable subscriber that never acknowledges once its session buffer is full (1008)', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { sessionBufferMessages: 5 } });
    const silent = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const acking = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    await silent.request({ type: 'joinGroup', group: 'g' });
    await acking.request({ type: 'joinGroup', group: 'g' });
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    for (let n = 1; n <= 8; n++) {
      await publisher.request({ type: 'sendToGroup', group: 'g', data: n });
      const m = await acking.waitFor((x) => x.type === 'message' && x.data === n);
      acking.send({ type: 'sequenceAck', sequenceId: m.sequenceId });
    }
    const closed = await withTimeout(silent.closed, 5000, 'silent subscriber closed');
    assert.deepEqual([closed.code, closed.reason], [1008, 'SessionBufferFull']);
    assert.deepEqual(silent.dataMessages().map((m) => m.sequenceId), [1, 2, 3, 4, 5]);
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_slow_consumer_closes_total'), 1);
    assert.equal(acking.ws.readyState, WebSocket.OPEN);
  });
});
