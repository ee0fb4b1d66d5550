// JetStream as the relay uses it, against a real nats-server -js: idempotent
// streams, publish acks with de-duplication, an in-order follower, range and
// subject reads, the key-value bucket, and a clear answer when JetStream is off.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AckPolicy, connect } from 'nats';
import { JetStreamAccess, type JetStreamOptions } from '../../src/bus/jetstream.ts';
import { StoreConflict, StoreError } from '../../src/bus/jetstream-errors.ts';
import type { StoredMessage } from '../../src/bus/stream-reader.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer, type NatsNode } from '../helpers/nats.ts';
import { captureLogger } from '../helpers/relay.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

const log = createLogger('silent', 'test');

function busOn(t: Parameters<typeof cleanupFor>[0], url: string): NatsBus {
  const bus = new NatsBus(
    { servers: [url], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000 },
    log,
  );
  cleanupFor(t).after(() => bus.close());
  return bus;
}

/** JetStream access on `bus` (memory storage, publishTimeoutMs 3 s, requestTimeoutMs 2 s unless `options` says), closed with the test. */
function access(t: Parameters<typeof cleanupFor>[0], bus: NatsBus, options: Partial<JetStreamOptions> = {}, logger = log): JetStreamAccess {
  const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 2000, ...options }, logger);
  cleanupFor(t).after(() => js.close());
  return js;
}

const STREAM = { name: 'T_hub', subjects: ['t.ev.hub.>'], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 };
const BUCKET = { name: 'T_sessions', ttlMs: 60_000 };

/** 256 KiB: 64 of them are more than the bus's bound on bytes unsent (4 MiB) to a frozen server. */
const BIG = Buffer.alloc(256 * 1024, 7);

/** A JetStream access with `options` on a nats-server of its own, its streams made; then that server is frozen. */
async function accessOnFrozenServer(t: Parameters<typeof cleanupFor>[0], options: Partial<JetStreamOptions>, logger = log): Promise<{ nats: NatsNode; bus: NatsBus; js: JetStreamAccess }> {
  const nats = await startNatsServer(t);
  const bus = busOn(t, nats.url);
  const js = access(t, bus, options, logger);
  await js.start([STREAM], BUCKET);
  await nats.freeze();
  return { nats, bus, js };
}

/** 64 publishes of BIG (subjects t.ev.hub.m0 to m63, ids `${prefix}-N`), each settling to its sequence or its error; `after` runs after each begins. */
function publishBig(js: JetStreamAccess, prefix: string, after?: () => void): Promise<{ seq: number } | Error>[] {
  const outcomes: Promise<{ seq: number } | Error>[] = [];
  for (let i = 0; i < 64; i++) {
    outcomes.push(js.publish(`t.ev.hub.m${i}`, BIG, `${prefix}-${i}`).catch((err: Error) => err));
    after?.();
  }
  return outcomes;
}

/**
 * A lone NATS server whose stream (blocks of about a quarter of its 100 kB: a second 20 kB event needs a new block
 * file), written once, has its files removed under it, as the end of a delete does to a stream of its name made
 * meanwhile: the server refuses every write that needs a file ("no such file or directory") and answers the
 * stream's info. A publish to it was refused.
 */
async function filesGoneOnLoneServer(t: Parameters<typeof cleanupFor>[0]) {
  const nats = await startNatsServer(t);
  const logs = captureLogger('info');
  const stream = { ...STREAM, maxBytes: 100_000 };
  const js = access(t, busOn(t, nats.url), { storage: 'file', publishTimeoutMs: 1000 }, logs.log);
  await js.start([stream], BUCKET);
  const data = Buffer.alloc(20_000, 1);
  await js.publish('t.ev.hub.g', data, 'id-1');
  rmSync(join(nats.storeDir, 'jetstream', '$G', 'streams', stream.name), { recursive: true });
  await assert.rejects(js.publish('t.ev.hub.g', data, 'id-2'), (err: Error) => err instanceof StoreError && /no such file or directory/.test(err.message));
  return { nats, js, logs, stream, data };
}

/**
 * A lone NATS server whose stream, written once, is changed by hand to answer no write (no_ack: its writes go
 * unanswered, its info is answered), and a publish to it that gave up unanswered: the stream is marked as storing nothing.
 */
async function unansweredOnLoneServer(t: Parameters<typeof cleanupFor>[0]) {
  const nats = await startNatsServer(t);
  const logs = captureLogger('info');
  const js = access(t, busOn(t, nats.url), { storage: 'file', publishTimeoutMs: 1000, unsureRetryMs: 0 }, logs.log);
  await js.start([STREAM], BUCKET);
  await js.publish('t.ev.hub.g', Buffer.from('1'), 'id-1');
  const nc = await connect({ servers: nats.url });
  cleanupFor(t).after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  await jsm.streams.update(STREAM.name, { no_ack: true });
  await assert.rejects(js.publish('t.ev.hub.g', Buffer.from('2'), 'id-2'), StoreError);
  assert.match(js.storeFailures.join(), /^T_hub: JetStream did not answer in time/);
  return { js, jsm, logs };
}

describe('JetStream access', () => {
  it('creates streams idempotently from several edges, stores, de-duplicates by id and follows in order', async (t) => {
    const nats = await startNatsServer(t);
    const a = access(t, busOn(t, nats.url));
    const b = access(t, busOn(t, nats.url));
    await Promise.all([a.start([STREAM], BUCKET), b.start([STREAM], BUCKET)]);
    assert.equal(a.state, 'ready');
    assert.equal(b.state, 'ready');
    // Another edge with other limits: the stream takes them, nothing is lost.
    const c = access(t, busOn(t, nats.url));
    await c.start([{ ...STREAM, maxMessages: 1000 }], BUCKET);
    assert.equal(c.state, 'ready');

    const first = await a.publish('t.ev.hub.g.one', Buffer.from('1'), 'id-1');
    const again = await b.publish('t.ev.hub.g.one', Buffer.from('1'), 'id-1');
    assert.deepEqual(again, { seq: first.seq, duplicate: true });
    const got: StoredMessage[] = [];
    const follower = b.follow(STREAM.name, first.seq, (m) => got.push(m));
    t.after(() => follower.stop());
    for (let i = 2; i <= 50; i++) await a.publish(`t.ev.hub.g.${i % 2 ? 'one' : 'two'}`, Buffer.from(String(i)), `id-${i}`);
    await until(() => got.length === 50, 10000, 'the follower to read 50 messages');
    assert.deepEqual(got.map((m) => Number(Buffer.from(m.data).toString())), Array.from({ length: 50 }, (_, i) => i + 1));
    assert.equal(follower.position, got[49].seq);

    const range = await a.read(STREAM.name, { fromSeq: got[9].seq, toSeq: got[19].seq, limit: 100, timeoutMs: 5000 });
    assert.deepEqual(range.map((m) => m.seq), got.slice(9, 20).map((m) => m.seq));
    const odd = await a.read(STREAM.name, { fromSeq: 1, subject: 't.ev.hub.g.one', limit: 5, timeoutMs: 5000 });
    assert.deepEqual(odd.map((m) => Buffer.from(m.data).toString()), ['1', '3', '5', '7', '9']);
    // A page ends after the message that passes maxBytes (a session's replay reads pages so, stream-events.ts).
    const bounded = await a.read(STREAM.name, { fromSeq: got[9].seq, toSeq: got[49].seq, limit: 100, maxBytes: 5, timeoutMs: 5000 });
    assert.deepEqual(bounded.map((m) => Buffer.from(m.data).toString()), ['10', '11', '12']);
    const none = await a.read(STREAM.name, { fromSeq: got[49].seq + 1, limit: 5, timeoutMs: 5000 });
    assert.deepEqual(none, []);
    const held = await a.bounds(STREAM.name);
    assert.deepEqual({ first: held.first, last: held.last }, { first: got[0].seq, last: got[49].seq });
    assert.match(held.madeAs, /^[\w-]{12}$/, 'the id the relay wrote when it made the stream');
  });

  it('reads a page of large messages with about its byte bound on the wire, not the whole batch', async (t) => {
    const nats = await startNatsServer(t);
    const bus = busOn(t, nats.url);
    const a = access(t, bus);
    await a.start([STREAM], BUCKET);
    const big = Buffer.alloc(512 * 1024, 7);
    for (let i = 1; i <= 24; i++) await a.publish('t.ev.hub.g.big', big, `big-${i}`);
    const nc = bus.connection!;
    const before = nc.stats().inBytes;
    const page = await a.read(STREAM.name, { fromSeq: 1, limit: 1000, maxBytes: 2 * 1024 * 1024, timeoutMs: 5000 });
    // Whatever the server had sent for the page has arrived once a round trip after it has.
    await nc.flush();
    await new Promise((r) => setTimeout(r, 200));
    await nc.flush();
    const received = nc.stats().inBytes - before;
    assert.equal(page.length, 4);
    assert.deepEqual(page.map((m) => m.seq), [1, 2, 3, 4]);
    // 2 MiB read: a whole max_payload (1 MiB) more at most may come with it; the 24 messages are 12 MiB.
    assert.ok(received < 4 * 1024 * 1024, `${received} bytes received for a 2 MiB page`);
    // Pages go on from where one ended, each message once.
    const next = await a.read(STREAM.name, { fromSeq: 5, limit: 1000, maxBytes: 2 * 1024 * 1024, timeoutMs: 5000 });
    assert.deepEqual(next.map((m) => m.seq), [5, 6, 7, 8]);
  });

  it('keeps values in the bucket: put, entry, and a put only over the revision it names', async (t) => {
    const nats = await startNatsServer(t);
    const a = access(t, busOn(t, nats.url));
    await a.start([STREAM], BUCKET);
    assert.equal(await a.entry('hub.c1'), undefined);
    const first = await a.put('hub.c1', Buffer.from('{"x":1}'));
    const stored = (await a.entry('hub.c1'))!;
    assert.equal(Buffer.from(stored.value).toString(), '{"x":1}');
    assert.equal(stored.revision, first);
    const second = await a.put('hub.c1', Buffer.from('{"x":2}'));
    assert.ok(second > first);
    // Written since the revision it names: refused, the value stays.
    await assert.rejects(a.put('hub.c1', Buffer.from('{"x":3}'), first), StoreConflict);
    assert.equal(Buffer.from((await a.entry('hub.c1'))!.value).toString(), '{"x":2}');
    const third = await a.put('hub.c1', Buffer.from('{"x":3}'), second);
    assert.ok(third > second);
    assert.equal(Buffer.from((await a.entry('hub.c1'))!.value).toString(), '{"x":3}');
  });

  it('makes a file-stored session bucket deleted while its delete is slow again once the delete is done, its files kept (before: made during the delete, whose end removed its files)', async (t) => {
    const nats = await startNatsServer(t);
    const logs = captureLogger('info');
    const js = access(t, busOn(t, nats.url), { storage: 'file' }, logs.log);
    await js.start([STREAM], BUCKET);
    await js.put('hub.c1', Buffer.from('1'));
    const nc = await connect({ servers: nats.url });
    cleanupFor(t).after(() => nc.close());
    const jsm = await nc.jetstreamManager();
    // nats-server 2.9 takes a stream out of the account before it removes its consumers and then its directory: a
    // bucket made again in between is left with no files. With 300 consumers to remove, the delete takes about 100 ms,
    // and the edge, writing a checkpoint all the while, finds the bucket gone inside it (before: 6 of 6 runs).
    for (let i = 0; i < 300; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => jsm.consumers.add(`KV_${BUCKET.name}`, { durable_name: `c${i + j}`, ack_policy: AckPolicy.Explicit })));
    }
    let deleted = false;
    const deleting = jsm.streams.delete(`KV_${BUCKET.name}`).finally(() => (deleted = true));
    // Checkpoints written every 20 ms until one is stored after the delete returned, in the bucket made again.
    let stored = false;
    for (const deadline = Date.now() + 10000; !stored && Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
      const after = deleted;
      stored = (await js.put('hub.c1', Buffer.from('2')).then(() => true, () => false)) && after;
    }
    await withTimeout(deleting, 1000, 'the delete');
    assert.ok(stored, 'a checkpoint stored in the bucket made again');
    await until(() => logs.events().includes('jetstream.stream_recreated'), 5000, 'the bucket made again');
    // Without its directory, a bucket stores nothing (or into files already removed, lost at its server's restart).
    assert.ok(existsSync(join(nats.storeDir, 'jetstream', '$G', 'streams', `KV_${BUCKET.name}`, 'meta.inf')), 'the bucket made again has its files');
    await js.put('hub.c1', Buffer.from('3'));
    assert.equal(Buffer.from((await js.entry('hub.c1'))!.value).toString(), '3');
  });

  it('on a lone NATS server, says a stream whose writes fail stores again only once a write to it is stored (before: within a second, on the server\'s answer to an info)', async (t) => {
    const { nats, js, logs, stream, data } = await filesGoneOnLoneServer(t);
    assert.match(js.storeFailures.join(), /^T_hub: /);
    await until(() => logs.events().includes('jetstream.store_failing'), 5000, 'jetstream.store_failing');
    // Two probes later (one a second), still failing, as every write is.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(logs.events().includes('jetstream.store_recovered'), false, 'not said to store again');
    assert.equal(js.storingByStream().get(stream.name), false);
    await assert.rejects(js.publish('t.ev.hub.g', data, 'id-3'), StoreError);
    // An operator's purge gives it its files again: the next write is stored, and clears it.
    const nc = await connect({ servers: nats.url });
    cleanupFor(t).after(() => nc.close());
    await (await nc.jetstreamManager()).streams.purge(stream.name);
    await js.publish('t.ev.hub.g', data, 'id-4');
    assert.deepEqual(js.storeFailures, []);
    assert.equal(js.storingByStream().get(stream.name), true);
    assert.ok(logs.events().includes('jetstream.store_recovered'));
  });

  it('on a lone NATS server, says a stream that answers no write stores again only once a write to it is stored, though the server answers its info (before: within a second)', async (t) => {
    const { js, jsm, logs } = await unansweredOnLoneServer(t);
    // Two probes later (one a second): still said to store nothing, as nothing it takes is answered.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(logs.events().includes('jetstream.store_recovered'), false, 'not said to store again');
    assert.equal(js.storingByStream().get(STREAM.name), false);
    await jsm.streams.update(STREAM.name, { no_ack: false });
    await js.publish('t.ev.hub.g', Buffer.from('3'), 'id-3');
    assert.deepEqual(js.storeFailures, []);
    assert.ok(logs.events().includes('jetstream.store_recovered'));
  });

  it('on a lone NATS server, says a stream whose publish went unanswered stores again once it answers a write, without writing one (before: not until a write to it was stored, on a quiet hub never)', async (t) => {
    // A passing trouble: its writes go unanswered for a while (here no_ack, set and unset by hand).
    const { js, jsm, logs } = await unansweredOnLoneServer(t);
    await jsm.streams.update(STREAM.name, { no_ack: false });
    // (no_ack stores what it does not answer: the unanswered event is there.)
    const last = (await jsm.streams.info(STREAM.name)).state.last_seq;
    // Nobody publishes to the hub: the probe's write, refused by JetStream by design, says it answers writes again.
    await until(() => js.storeFailures.length === 0, 3000, 'the stream said to store again without a write');
    assert.equal(js.storingByStream().get(STREAM.name), true);
    assert.ok(logs.events().includes('jetstream.store_recovered'));
    // Nothing stored by the probe: the next event is stored right after the last.
    assert.equal((await jsm.streams.info(STREAM.name)).state.last_seq, last);
    assert.equal((await js.publish('t.ev.hub.g', Buffer.from('3'), 'id-3')).seq, last + 1);
  });

  it('says a stream whose server failed to write it stores again once the stream was made again, without a write to it (before: not until a write to it was stored, on a quiet hub never)', async (t) => {
    const { nats, js, logs, stream, data } = await filesGoneOnLoneServer(t);
    // Two probes: the making that failed is not said to store again.
    await new Promise((r) => setTimeout(r, 2200));
    assert.match(js.storeFailures.join(), /^T_hub: the NATS server failed to write the stream/);
    // The operator deletes it; a follower (here bounds()) finds it gone, and the edge makes it again once it has
    // stayed gone 2.5 s. Nobody publishes to the hub meanwhile.
    const nc = await connect({ servers: nats.url });
    cleanupFor(t).after(() => nc.close());
    await (await nc.jetstreamManager()).streams.delete(stream.name);
    await assert.rejects(js.bounds(stream.name));
    await until(() => logs.events().includes('jetstream.stream_recreated'), 5000, 'the stream made again');
    await until(() => js.storeFailures.length === 0, 3000, 'the stream made again said to store');
    assert.equal(js.storingByStream().get(stream.name), true);
    assert.equal((await js.publish('t.ev.hub.g', data, 'id-3')).seq, 1);
  });

  it('says so, as an error, when the server cannot keep the configured copies (not clustered), and keeps one', async (t) => {
    const nats = await startNatsServer(t);
    const logs = captureLogger('info');
    const js = new JetStreamAccess(busOn(t, nats.url), { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 2000, replicas: 3 }, logs.log);
    cleanupFor(t).after(() => js.close());
    await js.start([STREAM], BUCKET);
    assert.equal((await js.publish('t.ev.hub.all', Buffer.from('x'), 'id-x')).seq, 1);
    const lowered = logs.lines().filter((l) => l.event === 'jetstream.replicas_lowered');
    assert.equal(lowered.length, 1, 'once: the streams are made with one copy after it');
    assert.deepEqual([lowered[0].level, lowered[0].configured, lowered[0].replicas], [50, 3, 1], 'pino level 50: error');
    // Left unset, one server means one copy: nothing to say.
    const quiet = captureLogger('info');
    const js1 = new JetStreamAccess(busOn(t, nats.url), { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 2000 }, quiet.log);
    cleanupFor(t).after(() => js1.close());
    await js1.start([STREAM], BUCKET);
    assert.equal(quiet.events().includes('jetstream.replicas_lowered'), false);
  });

  it('refuses to store while NATS is away, with the reason, after its deadline', async (t) => {
    const nats = await startNatsServer(t);
    const bus = busOn(t, nats.url);
    const a = access(t, bus, { publishTimeoutMs: 500 });
    await a.start([STREAM], BUCKET);
    await nats.kill();
    await until(() => !bus.connected, 5000, 'the bus to see NATS gone');
    const started = Date.now();
    await assert.rejects(a.publish('t.ev.hub.all', Buffer.from('x'), 'id-x'), (err) => err instanceof StoreError && /unreachable/.test(err.message));
    assert.ok(Date.now() - started < 5000);
  });

  it('goes on with the same id after a try that went out unanswered, so the event is stored once and acknowledged', async (t) => {
    // A frozen server (SIGSTOP) keeps what was sent to it and may store it once it runs again. Before, the
    // publish gave up at publishTimeoutMs ("not stored"); the SDK's retry (a new ackId, so a new id) and the
    // late store were two events: a chaos soak saw every subscriber get one twice.
    const nats = await startNatsServer(t);
    const a = access(t, busOn(t, nats.url), { publishTimeoutMs: 1000 });
    await a.start([STREAM], BUCKET);
    const got: string[] = [];
    const follower = a.follow(STREAM.name, 1, (m) => got.push(Buffer.from(m.data).toString()));
    t.after(() => follower.stop());
    await nats.freeze();
    const stored = a.publish('t.ev.hub.all', Buffer.from('frozen'), 'id-frozen');
    // Frozen for longer than publishTimeoutMs (1 s) and the bus's ping timeout: the connection is made again too.
    await new Promise((r) => setTimeout(r, 3500));
    nats.thaw();
    assert.equal((await withTimeout(stored, 20000, 'the publish to settle')).seq, 1);
    await a.publish('t.ev.hub.all', Buffer.from('after'), 'id-after');
    await until(() => got.includes('after'), 10000, 'the next event');
    assert.deepEqual(got, ['frozen', 'after'], 'stored once');
  });

  it('reports a message its own unanswered try stored as stored, not as a duplicate; a second publish of the id is one', async (t) => {
    // The try that went out to the frozen server is stored when it runs again, and the try after it is JetStream's
    // duplicate of that one. Before, the publish said duplicate: a client's first send was acked Duplicate (an
    // error to a client that sent it once), seen under load in test/cluster/requests-in-flight.test.ts.
    const nats = await startNatsServer(t);
    const js = access(t, busOn(t, nats.url), { publishTimeoutMs: 500, requestTimeoutMs: 200, unsureRetryMs: 20000 });
    await js.start([STREAM], BUCKET);
    await nats.freeze();
    const stored = js.publish('t.ev.hub.all', Buffer.from('frozen'), 'id-once');
    // Longer than requestTimeoutMs (tries go out unanswered), shorter than the bus's ping timeout (the connection stays).
    await new Promise((r) => setTimeout(r, 1000));
    nats.thaw();
    assert.deepEqual(await withTimeout(stored, 20000, 'the publish to settle'), { seq: 1, duplicate: false });
    assert.deepEqual(await js.publish('t.ev.hub.all', Buffer.from('frozen'), 'id-once'), { seq: 1, duplicate: true }, 'a second publish of the id');
    assert.equal((await js.bounds(STREAM.name)).last, 1, 'stored once');
  });

  it('sends no more to a frozen server than the bus bound on bytes unsent; the rest wait, and are stored once it reads', async (t) => {
    // Before, every publish went out while the bus took the frozen server for alive (two pings unanswered): a durable
    // hub's events waited in the edge's memory without bound (the core bus drops past the bound: nats-bus.test.ts).
    const { nats, bus, js } = await accessOnFrozenServer(t, { publishTimeoutMs: 20_000, requestTimeoutMs: 500, unsureRetryMs: 20_000 });
    const limit = bus.unsentLimit;
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, bus.unsentBytes)), 5);
    t.after(() => clearInterval(watch));
    const outcomes = publishBig(js, 'id-big', () => (peak = Math.max(peak, bus.unsentBytes)));
    // Shorter than the bus's stale judgement (two pings a second apart unanswered), so the connection stays.
    await new Promise((r) => setTimeout(r, 1500));
    t.diagnostic(`64 publishes of 256 KiB to a frozen server: at most ${(peak / 1048576).toFixed(1)} MiB unsent, bound ${(limit / 1048576).toFixed(1)} MiB`);
    assert.ok(peak <= limit + BIG.length + 4096, `at most ${peak} bytes unsent, bound ${limit}`);
    nats.thaw();
    const settled = await withTimeout(Promise.all(outcomes), 30_000, 'every publish to settle');
    const failed = settled.filter((o) => o instanceof Error);
    assert.deepEqual(failed.map((e) => (e as Error).message), [], 'every one stored once the server reads again');
    assert.equal((await js.bounds(STREAM.name)).last, 64, 'each stored once');
  });

  it('stores the events that waited out a frozen server in the order they were published, before one published once it reads', async (t) => {
    // Before: a publish that found the bus backlogged slept RETRY_MS and looked again on its own, not in its stream's
    // order (publish-order.ts): one begun as the backlog cleared went out at once, stored before those begun earlier.
    // No try times out while frozen (that would put the stream in order by itself): only the backlog holds them.
    const { nats, bus, js } = await accessOnFrozenServer(t, { publishTimeoutMs: 20_000, requestTimeoutMs: 15_000, unsureRetryMs: 20_000 });
    const outcomes = publishBig(js, 'id-order');
    await until(() => bus.backlogged, 5000, 'the bus backlogged');
    await new Promise((r) => setTimeout(r, 300));
    nats.thaw();
    await until(() => !bus.backlogged, 10_000, 'the backlog cleared');
    outcomes.push(js.publish('t.ev.hub.m64', BIG, 'id-order-64').catch((err: Error) => err));
    const settled = await withTimeout(Promise.all(outcomes), 30_000, 'every publish to settle');
    assert.deepEqual(settled.filter((o) => o instanceof Error).map((e) => (e as Error).message), []);
    const stored = await js.read(STREAM.name, { fromSeq: 1, limit: 100, timeoutMs: 5000 });
    assert.deepEqual(
      stored.map((m) => m.subject),
      Array.from({ length: 65 }, (_, i) => `t.ev.hub.m${i}`),
    );
  });

  it('does not say a stream stores nothing when only the bus held its publishes past their deadline', async (t) => {
    // Before: each publish that waited out publishTimeoutMs behind the bus bound on bytes unsent (a slow or frozen
    // NATS link, not judged stale yet) marked its stream failing: readiness said "JetStream stores nothing in
    // stream ..." though nothing it was sent had failed there (the bus's own backlog is said apart).
    const { nats, bus, js } = await accessOnFrozenServer(t, { publishTimeoutMs: 800, requestTimeoutMs: 15_000, unsureRetryMs: 20_000 });
    const outcomes = publishBig(js, 'id-held');
    let failed = 0;
    for (const outcome of outcomes) void outcome.then((o) => o instanceof Error && failed++);
    await until(() => bus.backlogged, 5000, 'the bus backlogged');
    await until(() => failed > 0, 5000, 'publishes held past their deadline to give up');
    assert.ok(bus.connected, 'the bus not judged stale yet');
    assert.deepEqual(js.storeFailures, [], 'no stream said to store nothing');
    assert.equal(js.storingByStream().get(STREAM.name), true);
    nats.thaw();
    await withTimeout(Promise.all(outcomes), 30_000, 'every publish to settle');
  });

  it('does not say a stream stores nothing when a publish waited its turn behind the bus backlog, which cleared just before its deadline', async (t) => {
    // The tries sent to the frozen server go unanswered (requestTimeoutMs) and are tried again, in order, until
    // unsureRetryMs; publishes begun after them wait their turn. Before: one whose deadline came just after the
    // backlog cleared looked at the bus then, found it clear, and said the stream stored nothing (until the next
    // store), though the events before it had only just gone out again, and were stored.
    const logs = captureLogger('info');
    const { nats, bus, js } = await accessOnFrozenServer(t, { publishTimeoutMs: 1000, requestTimeoutMs: 600, unsureRetryMs: 20_000 }, logs.log);
    const outcomes = publishBig(js, 'id-held');
    await until(() => bus.backlogged, 5000, 'the bus backlogged');
    await new Promise((r) => setTimeout(r, 1100));
    const begun = performance.now();
    const later = Array.from({ length: 8 }, (_, i) => js.publish('t.ev.hub.later', Buffer.from(String(i)), `id-later-${i}`).catch((err: Error) => err));
    await new Promise((r) => setTimeout(r, Math.max(0, begun + 825 - performance.now())));
    assert.ok(bus.connected, 'the bus not judged stale');
    nats.thaw();
    const settled = await withTimeout(Promise.all([...outcomes, ...later]), 30_000, 'every publish to settle');
    t.diagnostic(`${settled.filter((o) => !(o instanceof Error)).length} of 72 stored`);
    assert.deepEqual(
      logs.lines().filter((l) => l.event === 'jetstream.store_failing'),
      [],
    );
  });

  it('says "not confirmed", not "not stored", when it gives up after a try went out unanswered', async (t) => {
    const nats = await startNatsServer(t);
    const js = access(t, busOn(t, nats.url), { publishTimeoutMs: 500, requestTimeoutMs: 300, unsureRetryMs: 500 });
    await js.start([STREAM], BUCKET);
    await nats.freeze();
    await assert.rejects(js.publish('t.ev.hub.all', Buffer.from('frozen'), 'id-frozen'), (err) => err instanceof StoreError && /^not confirmed: .*may still have been stored/.test(err.message));
    nats.thaw();
  });

  it('follows a stream that came back without its last messages from where new ones are stored, not after the lost sequences', async (t) => {
    // What can happen when every server holding a stream stops at once (the likely cause of an event lost in a full CI run, three SIGKILLed):
    // the stream comes back shorter and gives the lost sequences to the next messages. Here the store folder
    // is put back as it was before the last messages.
    const nats = await startNatsServer(t);
    const js = access(t, busOn(t, nats.url), { storage: 'file', publishTimeoutMs: 10000 });
    await js.start([STREAM], BUCKET);
    const got: string[] = [];
    const follower = js.follow(STREAM.name, 1, (m) => got.push(Buffer.from(m.data).toString()));
    t.after(() => follower.stop());
    for (const n of ['1', '2', '3']) await js.publish('t.ev.hub.all', Buffer.from(n), `id-${n}`);
    await until(() => got.length === 3, 10000, 'the first three');
    await nats.kill();
    const saved = `${nats.storeDir}.saved`;
    cpSync(nats.storeDir, saved, { recursive: true });
    await nats.restart();
    for (const n of ['4', '5']) await js.publish('t.ev.hub.all', Buffer.from(n), `id-${n}`);
    await until(() => got.length === 5, 20000, 'the two stored before the loss');
    // Back to before 4 and 5.
    await nats.kill();
    rmSync(nats.storeDir, { recursive: true, force: true });
    renameSync(saved, nats.storeDir);
    await nats.restart();
    let bounds: { first: number; last: number } | undefined;
    await untilAnswered(async () => (bounds = await js.bounds(STREAM.name).catch(() => undefined)) !== undefined, 20000, 'the stream back');
    assert.deepEqual({ first: bounds?.first, last: bounds?.last }, { first: 1, last: 3 }, 'the store put back holds 1 to 3');
    // 6 and 7 are stored under 4 and 5: a follower asking from 6 on saw neither (and the next one only as 8).
    for (const n of ['6', '7']) await js.publish('t.ev.hub.all', Buffer.from(n), `id-${n}`);
    await until(() => got.length === 7, 30000, `the two stored after the loss (got ${got.join(',')})`);
    assert.deepEqual(got, ['1', '2', '3', '4', '5', '6', '7']);
    assert.equal(follower.position, 5);
  });

  it('finds where such a stream is when it lost more than the follower remembers, and for a follower that had handed nothing on', async (t) => {
    // Two cases a first version missed: 70 messages lost (the follower remembers 64, and asked from the oldest
    // of those), and a follower of a quiet stream that started after messages then lost (it remembered none:
    // it now remembers the message before where it starts).
    const QUIET = { ...STREAM, name: 'T_quiet', subjects: ['t.ev.quiet.>'] };
    const nats = await startNatsServer(t);
    const js = access(t, busOn(t, nats.url), { storage: 'file', publishTimeoutMs: 10000 });
    await js.start([STREAM, QUIET], BUCKET);
    const busy: string[] = [];
    const quiet: string[] = [];
    const busyFollower = js.follow(STREAM.name, 1, (m) => busy.push(Buffer.from(m.data).toString()));
    t.after(() => busyFollower.stop());
    for (const n of ['1', '2', '3']) {
      await js.publish('t.ev.hub.all', Buffer.from(n), `b-${n}`);
      await js.publish('t.ev.quiet.all', Buffer.from(n), `q-${n}`);
    }
    await until(() => busy.length === 3, 10000, 'the first three');
    await nats.kill();
    const saved = `${nats.storeDir}.saved`;
    cpSync(nats.storeDir, saved, { recursive: true });
    await nats.restart();
    for (let i = 1; i <= 70; i++) await js.publish('t.ev.hub.all', Buffer.from(`lost-${i}`), `b-lost-${i}`);
    for (const n of ['4', '5']) await js.publish('t.ev.quiet.all', Buffer.from(n), `q-${n}`);
    const quietFollower = js.follow(QUIET.name, (await js.bounds(QUIET.name)).last + 1, (m) => quiet.push(Buffer.from(m.data).toString()));
    t.after(() => quietFollower.stop());
    await until(() => busy.length === 73, 20000, 'the 70 stored before the loss');
    await new Promise((r) => setTimeout(r, 500));
    await nats.kill();
    rmSync(nats.storeDir, { recursive: true, force: true });
    renameSync(saved, nats.storeDir);
    await nats.restart();
    await untilAnswered(async () => (await js.bounds(STREAM.name).catch(() => undefined))?.last === 3, 20000, 'the stream back as saved');
    // Each new consumer also reads the stream's last messages: one stored after everything remembered is new.
    for (const n of ['new-1', 'new-2']) {
      await js.publish('t.ev.hub.all', Buffer.from(n), `b-${n}`);
      await js.publish('t.ev.quiet.all', Buffer.from(n), `q-${n}`);
    }
    await until(() => busy.length === 75 && quiet.length === 2, 30000, `both followers to read the new ones (busy ${busy.slice(73).join(',')}, quiet ${quiet.join(',')})`);
    assert.deepEqual(busy.slice(73), ['new-1', 'new-2']);
    assert.deepEqual(quiet, ['new-1', 'new-2']);
  });

  it('hands on the first message stored after its stream lost the last two, without waiting for another', async (t) => {
    // Found by review: a follower that started on a quiet stream remembers only the message before its start;
    // the first version read again from there only, so a new message stored below it waited for the next.
    const QUIET = { ...STREAM, name: 'T_quiet', subjects: ['t.ev.quiet.>'] };
    const nats = await startNatsServer(t);
    const js = access(t, busOn(t, nats.url), { storage: 'file', publishTimeoutMs: 10000 });
    await js.start([QUIET], BUCKET);
    for (const n of ['1', '2', '3']) await js.publish('t.ev.quiet.all', Buffer.from(n), `q-${n}`);
    await nats.kill();
    const saved = `${nats.storeDir}.saved`;
    cpSync(nats.storeDir, saved, { recursive: true });
    await nats.restart();
    for (const n of ['4', '5']) await js.publish('t.ev.quiet.all', Buffer.from(n), `q-${n}`);
    const got: string[] = [];
    const follower = js.follow(QUIET.name, (await js.bounds(QUIET.name)).last + 1, (m) => got.push(Buffer.from(m.data).toString()));
    t.after(() => follower.stop());
    await new Promise((r) => setTimeout(r, 500));
    await nats.kill();
    rmSync(nats.storeDir, { recursive: true, force: true });
    renameSync(saved, nats.storeDir);
    await nats.restart();
    await untilAnswered(async () => (await js.bounds(QUIET.name).catch(() => undefined))?.last === 3, 20000, 'the stream back as saved');
    await js.publish('t.ev.quiet.all', Buffer.from('new-1'), 'q-new-1');
    await until(() => got.length === 1, 15000, `new-1 (got ${got.join(',')})`);
    assert.deepEqual(got, ['new-1']);
  });

  it('says JetStream is not enabled when the server runs without it', async (t) => {
    const child = spawn('nats-server', ['-a', '127.0.0.1', '-p', '-1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let stderr = '';
    const port = await withTimeout(
      new Promise<number>((resolve) =>
        child.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString();
          const m = /Listening for client connections on [\d.]+:(\d+)/.exec(stderr);
          if (m) resolve(Number(m[1]));
        }),
      ),
      10000,
      'nats-server without JetStream',
    );
    const a = access(t, busOn(t, `nats://127.0.0.1:${port}`));
    await withTimeout(a.start([STREAM], BUCKET), 10000, 'start to give up');
    assert.equal(a.state, 'unavailable');
    assert.match(a.problem!, /JetStream is not enabled.*bus\.jetstream\.enabled/);
    await assert.rejects(a.publish('t.ev.hub.all', Buffer.from('x'), 'id'), /not enabled/);
  });

  it('takes JetStream up once the account gets it, without a restart (a nats-server config reload)', async (t) => {
    // The command line's -js stands at start; a reload reads the file alone, which must then say it (helpers/nats.ts).
    const accounts = (jetstream: 'enabled' | 'disabled', storeDir?: string) =>
      `${storeDir ? `jetstream { store_dir: "${storeDir}" }\n` : ''}accounts { EDGE: { users: [{ user: edge, password: "edge-password" }], jetstream: ${jetstream} } }\n`;
    const server = await startNatsServer(t, 'n1', undefined, { config: accounts('disabled') });
    const bus = new NatsBus(
      { servers: [server.url], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000, user: 'edge', pass: 'edge-password' },
      log,
    );
    cleanupFor(t).after(() => bus.close());
    const a = access(t, bus, { accountRecheckMs: 100 });
    await withTimeout(a.start([STREAM], BUCKET), 10000, 'start to give up');
    assert.equal(a.state, 'unavailable');
    assert.match(a.problem!, /JetStream is not enabled/);
    await assert.rejects(a.publish('t.ev.hub.all', Buffer.from('x'), 'id'), /not enabled/);
    // Before: unavailable until the edge was restarted.
    server.reconfigure(accounts('enabled', server.storeDir));
    await until(() => a.state === 'ready', 10000, `JetStream ready (${a.state}: ${a.problem})`);
    const stored = await a.publish('t.ev.hub.all', Buffer.from('x'), 'id-1');
    assert.equal(stored.duplicate, false);
  });
});
