// A pub/sub client's requests waiting for the bus are bounded per connection
// (limits.requestsInFlightPerConnection): past it the relay stops reading the
// client, which keeps the rest in its own buffers, and reads again as
// answers come. Before, a client that sent without waiting for acks while
// JetStream was slow (here: its server frozen with SIGSTOP, where a publish
// now waits up to UNSURE_RETRY_MS) had every message read into the relay's
// memory, each held with its data until the store answered.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
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

    const signal = (sig: string) => execFileSync('pkill', [`-${sig}`, '-f', nats.storeDir]);
    t.after(() => {
      if (nats.running()) signal('CONT');
    });
    signal('STOP');
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
    signal('CONT');
    await until(() => client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100).length === MESSAGES, 60000, 'every ack');
    const failed = client.messages.filter((m) => m.type === 'ack' && m.ackId >= 100 && !m.success);
    assert.deepEqual(failed, [], 'acks that failed');
    assert.equal(client.ws.bufferedAmount, 0);
  });
});
