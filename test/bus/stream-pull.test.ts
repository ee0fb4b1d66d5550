// One JetStream pull request by count and bytes (src/bus/stream-pull.ts), against a real nats-server -js.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AckPolicy, DeliverPolicy, connect } from 'nats';
import { deliveryPosition, pullOnce } from '../../src/bus/stream-pull.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { withTimeout } from '../helpers/wait.ts';

describe('a JetStream pull request', () => {
  it('reads the stream sequence and pending count from both forms of a delivery reply subject, and nothing from others', () => {
    assert.deepEqual(deliveryPosition('$JS.ACK.S.c.1.42.7.1700000000000000000.3'), { seq: 42, delivered: 7, pending: 3 });
    assert.deepEqual(deliveryPosition('$JS.ACK.dom.HASH.S.c.1.42.7.1700000000000000000.0.abc'), { seq: 42, delivered: 7, pending: 0 });
    assert.deepEqual(deliveryPosition('$JS.ACK._.HASH.S.c.1.42.7.1700000000000000000.5'), { seq: 42, delivered: 7, pending: 5 });
    for (const junk of [undefined, '', '_INBOX.x', '$JS.ACK.S.c.1.x.7.1.3', '$JS.ACK.S.c.1.0.7.1.3', '$JS.ACK.S.c.1.42.7.1', '$JS.NAK.S.c.1.42.7.1.3']) {
      assert.equal(deliveryPosition(junk), undefined, String(junk));
    }
  });

  it('takes at most its batch and its bytes, and ends at once when the next message does not fit', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connect({ servers: nats.url });
    cleanupFor(t).after(() => nc.close());
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'P', subjects: ['p.>'] });
    const js = nc.jetstream();
    for (let i = 1; i <= 10; i++) await js.publish('p.small', new Uint8Array(100).fill(i));
    for (let i = 1; i <= 3; i++) await js.publish('p.big', new Uint8Array(200_000));
    const consumer = async (start: number): Promise<string> =>
      (await jsm.consumers.add('P', { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start, ack_policy: AckPolicy.None, mem_storage: true })).name;

    const byCount = (await pullOnce(nc, 'P', await consumer(1), { batch: 4, expiresMs: 5000 })).messages;
    assert.deepEqual(byCount.map((m) => [m.seq, m.delivered, m.subject, m.data[0], m.pending]), [[1, 1, 'p.small', 1, 12], [2, 2, 'p.small', 2, 11], [3, 3, 'p.small', 3, 10], [4, 4, 'p.small', 4, 9]]);

    // Deliveries this side never read (a pull given up on while the server still sent) show as a jump in `delivered`.
    const lossy = await consumer(1);
    await pullOnce(nc, 'P', lossy, { batch: 2, expiresMs: 5000 });
    const elsewhere = nc.subscribe('_INBOX.elsewhere', { max: 2 });
    nc.publish(`$JS.API.CONSUMER.MSG.NEXT.P.${lossy}`, JSON.stringify({ batch: 2, expires: 5e9 }), { reply: '_INBOX.elsewhere' });
    await withTimeout((async () => { for await (const _ of elsewhere); })(), 5000, 'two deliveries read elsewhere');
    const after = (await pullOnce(nc, 'P', lossy, { batch: 1, expiresMs: 5000 })).messages;
    assert.deepEqual(after.map((m) => [m.seq, m.delivered]), [[5, 5]]);

    const byBytes = (await pullOnce(nc, 'P', await consumer(9), { batch: 100, maxBytes: 250_000, expiresMs: 5000 })).messages;
    assert.deepEqual(byBytes.map((m) => m.seq), [9, 10, 11]);

    // The first message is larger than the request's bytes: the server says so (409) at once, well before the expiry.
    const started = Date.now();
    const none = await pullOnce(nc, 'P', await consumer(11), { batch: 100, maxBytes: 1000, expiresMs: 5000 });
    assert.deepEqual(none, { messages: [] });
    assert.ok(Date.now() - started < 3000, `${Date.now() - started} ms for a refused pull`);

    // Nothing pending: the last message says so and the request ends without waiting for more.
    const tail = await pullOnce(nc, 'P', await consumer(12), { batch: 100, expiresMs: 5000 });
    assert.deepEqual(tail.messages.map((m) => [m.seq, m.pending]), [[12, 1], [13, 0]]);

    // An expiry left over from a deadline in fractions of a millisecond is sent in whole nanoseconds (before, the
    // server refused the request, 400, and the page read asked again at once until its last second).
    const fractional = await pullOnce(nc, 'P', await consumer(1), { batch: 2, expiresMs: 1234.5678901234 });
    assert.deepEqual(fractional.messages.map((m) => m.seq), [1, 2]);
    assert.equal(fractional.refused, undefined);

    // A request the server refuses says why (before, it read as "nothing came").
    const push = (await jsm.consumers.add('P', { deliver_subject: 'elsewhere.push', ack_policy: AckPolicy.None, mem_storage: true })).name;
    const refused = await pullOnce(nc, 'P', push, { batch: 1, expiresMs: 5000 });
    assert.deepEqual(refused.messages, []);
    assert.match(refused.refused ?? '', /^409 /);
  });
});
