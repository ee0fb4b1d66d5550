// A pub/sub client's requests waiting for the bus are bounded per connection
// (limits.requestsInFlightPerConnection): past it they wait, and once what
// waits weighs limits.pubsubMessageBytes the relay stops reading the client,
// which keeps the rest in its own buffers, and reads again as answers come. Before, a client that sent without waiting for acks while
// JetStream was slow (here: its server frozen with SIGSTOP, where a publish
// now waits up to UNSURE_RETRY_MS) had every message read into the relay's
// memory, each held with its data until the store answered.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const MESSAGES = 400;
const DATA = 'x'.repeat(64 << 10);
const CAP = 16;

describe('requests in flight per pub/sub connection', () => {
  it('past limits.requestsInFlightPerConnection the client is not read until answers come', async (t) => {
    const nats = await startNatsServer(t);
    const relay = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], { limits: { requestsInFlightPerConnection: CAP } }));
    await waitReady(relay, 200, 20000);
    const client = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await client.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'before' });

    await nats.freeze();
    const sent = MESSAGES * DATA.length;
    for (let ackId = 100; ackId < 100 + MESSAGES; ackId++) {
      client.ws.send(JSON.stringify({ type: 'sendToGroup', group: 'g', ackId, dataType: 'text', data: DATA }));
    }
    // The relay reads until CAP requests wait (and the kernel's buffers fill), then nothing: what is left stays with the client.
    let last = -1;
    let steadySince = Date.now();
    await until(
      () => {
        if (client.ws.bufferedAmount !== last) {
          last = client.ws.bufferedAmount;
          steadySince = Date.now();
        }
        return Date.now() - steadySince > 1500;
      },
      20000,
      'the client to stop writing',
    );
    t.diagnostic(`the client kept ${(last / 2 ** 20).toFixed(1)} MiB of ${(sent / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(last > sent / 2, `the relay took ${((sent - last) / 2 ** 20).toFixed(1)} MiB while NATS was frozen`);

    // Running again: every request is stored and acknowledged, in turn.
    nats.thaw();
    await until(() => client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100).length === MESSAGES, 60000, 'every ack');
    const failed = client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100 && !m.success);
    assert.deepEqual(failed, [], 'acks that failed');
    assert.equal(client.ws.bufferedAmount, 0);
  });

  it('small requests past it wait in order, however many one read of the socket brings', async (t) => {
    // Holding the socket stops the next read, not the frames of the read under way: before, all of a 64 KiB read
    // went out at once (809 in flight with a limit of 16).
    const nats = await startNatsServer(t);
    const relay = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], { limits: { requestsInFlightPerConnection: CAP } }));
    await waitReady(relay, 200, 20000);
    const member = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await member.request({ type: 'joinGroup', group: 'g' });
    const client = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const { connectionId } = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await client.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'before' });
    const connection = relay.pubsub.hub(HUB)!.local.connections.get(connectionId)!;
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, connection.requestsInFlight)), 2);
    t.after(() => clearInterval(watch));

    await nats.freeze();
    const SMALL = 2000;
    for (let n = 0; n < SMALL; n++) client.ws.send(JSON.stringify({ type: 'sendToGroup', group: 'g', ackId: 100 + n, dataType: 'json', data: n }));
    await until(() => connection.requestsInFlight >= CAP, 10000, 'the limit reached');
    await new Promise((r) => setTimeout(r, 1000));
    nats.thaw();
    await until(() => client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100).length === SMALL, 60000, 'every ack');
    most = Math.max(most, connection.requestsInFlight);
    assert.ok(most <= CAP, `${most} requests in flight at once, limit ${CAP}`);
    assert.deepEqual(client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100 && !m.success), [], 'acks that failed');
    // Stored and delivered in the order sent.
    await until(() => member.dataMessages().filter((m) => typeof m.data === 'number').length === SMALL, 20000, 'every event at the member');
    const got = member.dataMessages().map((m) => m.data).filter((d) => typeof d === 'number');
    assert.deepEqual(got, Array.from({ length: SMALL }, (_, n) => n));
  });
});
