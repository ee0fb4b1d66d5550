// The publish-and-wait-for-PubAck path of durable hubs (src/bus/stream-publisher.ts),
// against a real nats-server -js: each answer JetStream can give maps to
// stored, retry or refused, and a publish nobody answers ends at its deadline.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, StorageType, type NatsConnection } from 'nats';
import { StorePublisher } from '../../src/bus/stream-publisher.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { withTimeout } from '../helpers/wait.ts';

async function connected(t: Parameters<typeof cleanupFor>[0], url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, timeout: 5000 });
  cleanupFor(t).after(() => nc.close());
  return nc;
}

/** A plain subscriber on `silent.>` of `nc`, in place once this resolves: it takes publishes there and never answers. */
async function silentSubscriber(t: Parameters<typeof cleanupFor>[0], nc: NatsConnection): Promise<void> {
  const silent = nc.subscribe('silent.>');
  cleanupFor(t).after(() => silent.unsubscribe());
  await nc.flush();
}

describe('StorePublisher', () => {
  it('resolves stored with the sequence, duplicate for a repeated id, and many at once in one connection', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    await (await nc.jetstreamManager()).streams.add({ name: 'P', subjects: ['p.>'], storage: StorageType.Memory });
    const publisher = new StorePublisher(nc);
    t.after(() => publisher.close());
    assert.deepEqual(await publisher.publish('p.a', Buffer.from('one'), 'id-1', 2000), { kind: 'stored', seq: 1, duplicate: false });
    assert.deepEqual(await publisher.publish('p.a', Buffer.from('one'), 'id-1', 2000), { kind: 'stored', seq: 1, duplicate: true });
    const many = await Promise.all(Array.from({ length: 500 }, (_, i) => publisher.publish('p.b', Buffer.from(String(i)), `m-${i}`, 5000)));
    assert.deepEqual(
      many.map((o) => (o.kind === 'stored' ? o.seq : o.kind)),
      Array.from({ length: 500 }, (_, i) => i + 2),
    );
  });

  it('says tooLarge at once for data within max_payload that its message-id header takes past it', async (t) => {
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'max_payload: 4096\n' });
    const nc = await connected(t, nats.url);
    await (await nc.jetstreamManager()).streams.add({ name: 'T', subjects: ['t.>'], storage: StorageType.Memory });
    const publisher = new StorePublisher(nc);
    t.after(() => publisher.close());
    // 27 bytes of headers and the id's: 4,059 + 27 + 10 = 4,096 fits, one byte more does not.
    assert.equal((await publisher.publish('t.a', Buffer.alloc(4059), 'id-0000001', 2000)).kind, 'stored');
    // Before: nats.js threw MAX_PAYLOAD_EXCEEDED, taken for a connection closing: retried until publishTimeoutMs,
    // answered 503 "try again", and readiness said JetStream stores nothing.
    const started = Date.now();
    assert.deepEqual(await publisher.publish('t.a', Buffer.alloc(4060), 'id-0000002', 2000), { kind: 'tooLarge', bytes: 4097 });
    assert.ok(Date.now() - started < 1000);
  });

  it('says refused with JetStream’s code when the stream will not take the message', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    await (await nc.jetstreamManager()).streams.add({ name: 'F', subjects: ['f.>'], storage: StorageType.Memory, max_msg_size: 256 });
    const publisher = new StorePublisher(nc);
    t.after(() => publisher.close());
    assert.equal((await publisher.publish('f.a', Buffer.from('small'), 'a', 2000)).kind, 'stored');
    const large = await publisher.publish('f.a', Buffer.alloc(1024, 'x'), 'b', 2000);
    assert.equal(large.kind, 'refused');
    assert.ok(large.kind === 'refused' && typeof large.code === 'number' && /maximum/i.test(large.reason), JSON.stringify(large));
  });

  it('says retry when no stream listens on the subject, and when nobody answers before the deadline', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    const publisher = new StorePublisher(nc);
    t.after(() => publisher.close());
    const none = await publisher.publish('nobody.here', Buffer.from('x'), 'n', 2000);
    assert.equal(none.kind, 'retry');
    assert.match(none.kind === 'retry' ? none.reason : '', /no stream answered/);
    assert.equal(none.kind === 'retry' && none.unsure, undefined, 'nobody took it: surely not stored');
    // A plain subscriber takes the message and never answers: the wait ends at its deadline.
    await silentSubscriber(t, nc);
    const started = Date.now();
    const late = await withTimeout(publisher.publish('silent.x', Buffer.from('x'), 's', 300), 5000, 'the deadline to end the wait');
    const waited = Date.now() - started;
    // It went out: nothing says it was not stored (the publish goes on with the same id, durable-publish.ts).
    assert.deepEqual(late, { kind: 'retry', reason: 'JetStream did not answer in time', unsure: true });
    assert.ok(waited >= 290 && waited < 3000, `waited ${waited} ms`);
  });

  it('says storeFailed, in the store\'s own words, when the server answers that it failed to write the stream; lasting when a file of it is not there', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    // Answers on `js.>` as nats-server 2.9.10 does when a stream's store fails a write (NewJSStreamStoreFailedError)
    // or JetStream is unavailable: the failures a stream cannot be made to give on demand.
    const errors: Record<string, object> = {
      missing: { code: 503, err_code: 10077, description: 'error opening msg block file ["/data/jetstream/$G/streams/S/msgs/1.blk"]: open /data/jetstream/$G/streams/S/msgs/1.blk: no such file or directory' },
      closed: { code: 503, err_code: 10077, description: 'store is closed' },
      unavailable: { code: 503, err_code: 10008, description: 'JetStream system temporarily unavailable' },
    };
    const responder = nc.subscribe('js.>', { callback: (_err, msg) => msg.respond(JSON.stringify({ error: errors[msg.subject.slice(3)], stream: 'S', seq: 0 })) });
    cleanupFor(t).after(() => responder.unsubscribe());
    await nc.flush();
    const publisher = new StorePublisher(nc);
    t.after(() => publisher.close());
    const missing = await publisher.publish('js.missing', Buffer.from('x'), 'a', 2000);
    assert.deepEqual(missing, { kind: 'storeFailed', reason: `the NATS server failed to write the stream: ${(errors.missing as { description: string }).description}`, lasting: true });
    // Before: both "JetStream has no leader for the stream (electing)".
    assert.deepEqual(await publisher.publish('js.closed', Buffer.from('x'), 'b', 2000), { kind: 'storeFailed', reason: 'the NATS server failed to write the stream: store is closed', lasting: false });
    const unavailable = await publisher.publish('js.unavailable', Buffer.from('x'), 'c', 2000);
    assert.equal(unavailable.kind, 'retry');
  });

  it('ends open waits with a retry when closed', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    await silentSubscriber(t, nc);
    const publisher = new StorePublisher(nc);
    const open = publisher.publish('silent.x', Buffer.from('x'), 's', 60_000);
    publisher.close();
    assert.deepEqual(await withTimeout(open, 5000, 'close to end the wait'), { kind: 'retry', reason: 'the NATS connection closed', unsure: true });
  });

  // Their callers publish again in the order they hear (durable-publish.ts): a connection's burst cut by a failover goes on as sent.
  it('tells publishes that waited in vain in the order they were published, at their deadline and at close', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connected(t, nats.url);
    await silentSubscriber(t, nc);
    for (const ending of ['deadline', 'close'] as const) {
      const publisher = new StorePublisher(nc);
      t.after(() => publisher.close());
      const heard: number[] = [];
      const waits = Array.from({ length: 60 }, (_, i) => publisher.publish('silent.x', Buffer.from('x'), `o-${i}`, ending === 'deadline' ? 200 : 60_000).then(() => heard.push(i)));
      if (ending === 'close') publisher.close();
      await withTimeout(Promise.all(waits), 5000, `every wait to end at its ${ending}`);
      assert.deepEqual(heard, Array.from({ length: 60 }, (_, i) => i), `heard at ${ending}`);
    }
  });
});
