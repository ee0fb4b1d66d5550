// A hub's stream or the session bucket found on NATS as the relay would not
// make it (made by hand, by an older version, changed by an operator): what
// an edge takes over, and what it must not leave as it is, since an event it
// acknowledges must stay stored (docs/durability.md, "The stream of a hub").
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { AckPolicy, connect, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from 'nats';
import { signJwt } from '../../src/auth/jwt.ts';
import { edgeOverrides, readiness, waitReady } from '../helpers/cluster.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

const HUBS = { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 10000 } }] } };

/** A JetStream manager on `url`, closed with the test. */
async function manager(t: TestContext, url: string) {
  const nc = await connect({ servers: url });
  cleanupFor(t).after(() => nc.close());
  return nc.jetstreamManager();
}

/** GET groups/{group}/messages on `edge`: the data of the messages kept. */
async function historyData(edge: { url: string }, group: string): Promise<unknown[]> {
  const path = `/api/hubs/${HUB}/groups/${group}/messages`;
  const res = await fetch(`${edge.url}${path}?limit=100`, {
    headers: { authorization: `Bearer ${signJwt({ aud: `${edge.url}${path}` }, HUB_KEY, 600)}` },
    signal: AbortSignal.timeout(10000),
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { messages: { data: unknown }[] }).messages.map((m) => m.data);
}

describe("a hub's stream found with other settings", () => {
  it('one made with a per-subject limit, without acks, with a message size limit or rollups is given the relay\'s: every acknowledged event stays (before: kept, and a group kept its last event only)', async (t) => {
    const nats = await startNatsServer(t);
    const jsm = await manager(t, nats.url);
    // Made by hand (or by some other tool) before the relay: its subjects, with limits the relay never sets.
    const byHand: Partial<StreamConfig> = {
      name: `RELAY_${HUB}`,
      subjects: [`relay.ev.${HUB}.>`],
      storage: StorageType.File,
      max_msgs_per_subject: 1,
      max_msg_size: 4096,
      allow_rollup_hdrs: true,
      no_ack: true,
    };
    await jsm.streams.add(byHand);
    // A publish the stream never answers is given up soon (no ack: every one would be).
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], { ...HUBS, bus: { jetstream: { publishTimeoutMs: 1000, unsureRetryMs: 0 } } }));
    await waitReady(a);
    const config = (await jsm.streams.info(`RELAY_${HUB}`)).config;
    assert.deepEqual(
      { max_msgs_per_subject: config.max_msgs_per_subject, max_msg_size: config.max_msg_size, allow_rollup_hdrs: config.allow_rollup_hdrs ?? false, no_ack: config.no_ack ?? false },
      { max_msgs_per_subject: -1, max_msg_size: -1, allow_rollup_hdrs: false, no_ack: false },
    );
    const publisher = serviceClient(a);
    for (const n of [1, 2, 3]) await publisher.group('room').sendToAll(n);
    assert.deepEqual(await historyData(a, 'room'), [1, 2, 3]);
    // Larger than the stream's message size limit was: stored, not refused as a store that failed.
    await publisher.group('room').sendToAll('x'.repeat(8000), { contentType: 'text/plain' });
    assert.equal((await historyData(a, 'room')).length, 4);
  });

  it("one whose settings JetStream will not change (its retention) is left as it is, and readiness names it (before: only JetStream's words, no stream)", async (t) => {
    const nats = await startNatsServer(t);
    const jsm = await manager(t, nats.url);
    // Interest retention keeps a message only until the consumers there are have read it: no history, no session replay.
    await jsm.streams.add({ name: `RELAY_${HUB}`, subjects: [`relay.ev.${HUB}.>`], storage: StorageType.File, retention: RetentionPolicy.Interest });
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], HUBS));
    await untilAnswered(async () => (await readiness(a)).body.jetstream?.state === 'waiting' && (await readiness(a)).body.reasons.some((r: string) => /retention/.test(r)), 10000, 'edge A to say why it is not ready');
    const refused = await readiness(a);
    assert.equal(refused.status, 503);
    assert.match(JSON.stringify(refused.body.reasons), /stream RELAY_chat: .*can not change retention policy/);
    assert.equal((await jsm.streams.info(`RELAY_${HUB}`)).config.retention, RetentionPolicy.Interest);
  });
});

/** POST groups/{group}/:send on `edge`: the status and the error code, if any. */
async function sendToGroup(edge: { url: string }, group: string, data: unknown): Promise<{ status: number; code?: string }> {
  const { status, text } = await sendToGroupAnswer(edge, group, data);
  return { status, code: text ? (JSON.parse(text) as { code?: string }).code : undefined };
}

/** POST groups/{group}/:send on `edge`: the status and the body. */
async function sendToGroupAnswer(edge: { url: string }, group: string, data: unknown): Promise<{ status: number; text: string }> {
  const path = `/api/hubs/${HUB}/groups/${group}/:send`;
  const res = await fetch(`${edge.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: `${edge.url}${path}` }, HUB_KEY, 600)}` },
    body: JSON.stringify(data),
    signal: AbortSignal.timeout(10000),
  });
  return { status: res.status, text: await res.text() };
}

/** Seals the hub's stream, as `nats stream seal` does: no new message, no delete, no change, ever. */
async function seal(jsm: JetStreamManager): Promise<void> {
  await jsm.streams.update(`RELAY_${HUB}`, { sealed: true } as Partial<StreamConfig>);
  assert.equal((await jsm.streams.info(`RELAY_${HUB}`)).config.sealed, true);
}

/** The edge, not ready, names the sealed stream; says so in its log; refuses publishes as stores that failed. */
async function saysSealed(edge: { url: string }, logged: () => string[]): Promise<void> {
  await untilAnswered(async () => JSON.stringify((await readiness(edge)).body.reasons).includes('sealed'), 10000, 'the edge to say the stream is sealed');
  const refused = await readiness(edge);
  assert.equal(refused.status, 503);
  assert.equal(refused.body.jetstream.storing, false);
  assert.match(JSON.stringify(refused.body.reasons), /stream RELAY_chat is sealed/);
  await until(() => logged().includes('jetstream.stream_sealed'), 5000, 'jetstream.stream_sealed logged');
  assert.deepEqual(await sendToGroup(edge, 'room', 'refused'), { status: 503, code: 'StoreUnavailable' });
}

describe("a hub's stream sealed by hand", () => {
  // A refused publish waits no longer than this.
  const OPTIONS = { ...HUBS, bus: { jetstream: { publishTimeoutMs: 1000 } } };

  /**
   * A stream sealed (with `consumers` durable consumers) before an edge starts, which says so; then deleted by hand:
   * the edge makes it again and serves the hub again. The NATS server, for a look at its files.
   */
  async function sealedThenDeleted(t: TestContext, consumers: number) {
    const nats = await startNatsServer(t);
    const jsm = await manager(t, nats.url);
    await jsm.streams.add({ name: `RELAY_${HUB}`, subjects: [`relay.ev.${HUB}.>`], storage: StorageType.File });
    for (let i = 0; i < consumers; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => jsm.consumers.add(`RELAY_${HUB}`, { durable_name: `c${i + j}`, ack_policy: AckPolicy.Explicit })));
    }
    await seal(jsm);
    const log = captureLogger();
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], OPTIONS), { log: log.log });
    await saysSealed(a, log.events);
    await jsm.streams.delete(`RELAY_${HUB}`);
    await waitReady(a);
    assert.equal((await sendToGroup(a, 'room', 1)).status, 202);
    return nats;
  }

  it('one sealed before the edge starts: the edge is not ready, naming it, until it is deleted (before: ready, storing true, every publish 503)', async (t) => {
    await sealedThenDeleted(t, 0);
  });

  it('one deleted while its delete is slow: the edge makes it again once the delete is done, its files kept (before: made during the delete, whose end removed its files; the edge was ready and its publishes failed 503 or were lost)', async (t) => {
    // nats-server 2.9 takes a stream out of the account before it removes its consumers and then its directory: a
    // stream of that name made in between (the edge tries every 250 ms) is left with no files. With a thousand
    // consumers to remove, the delete takes a few hundred milliseconds, and the edge's next try falls inside it.
    const nats = await sealedThenDeleted(t, 1000);
    // Without its directory, a stream stores nothing (or into files already removed, lost at its server's restart).
    assert.ok(existsSync(join(nats.storeDir, 'jetstream', '$G', 'streams', `RELAY_${HUB}`, 'meta.inf')), 'the stream made again has its files');
  });

  it('one sealed while the edge runs: the first publish it refuses makes the edge not ready, naming it (before: ready, storing true, every publish 503)', async (t) => {
    const nats = await startNatsServer(t);
    const jsm = await manager(t, nats.url);
    const log = captureLogger();
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], OPTIONS), { log: log.log });
    await waitReady(a);
    assert.equal((await sendToGroup(a, 'room', 1)).status, 202);
    await seal(jsm);
    // Refused by the stream itself: 503, as a store that failed.
    assert.deepEqual(await sendToGroup(a, 'room', 2), { status: 503, code: 'StoreUnavailable' });
    await saysSealed(a, log.events);
    await jsm.streams.delete(`RELAY_${HUB}`);
    await waitReady(a);
    assert.equal((await sendToGroup(a, 'room', 3)).status, 202);
  });
});

describe("a hub's stream whose files are gone under it", () => {
  it('a write its server fails to make (no such file or directory) is refused at once as a store that failed, in its own words, and readiness names the stream (before: "no leader (electing)", tried for publishTimeoutMs)', async (t) => {
    const nats = await startNatsServer(t);
    const log = captureLogger();
    // A hub keeping 100 kB: its stream's blocks take about 25 kB, so a second 20 kB event needs a new block file.
    const hubs = { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxBytes: 100_000 } }] } };
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], { ...hubs, bus: { jetstream: { publishTimeoutMs: 5000 } } }), { log: log.log });
    await waitReady(a);
    const event = 'x'.repeat(20_000);
    assert.equal((await sendToGroup(a, 'room', event)).status, 202);
    // As the end of a slow delete leaves a stream of its name made meanwhile (nats-server 2.9): no files.
    rmSync(join(nats.storeDir, 'jetstream', '$G', 'streams', `RELAY_${HUB}`), { recursive: true });
    const sentAt = performance.now();
    const refused = await sendToGroupAnswer(a, 'room', event);
    const tookMs = performance.now() - sentAt;
    assert.equal(refused.status, 503);
    const body = JSON.parse(refused.text) as { code: string; message: string };
    assert.equal(body.code, 'StoreUnavailable');
    assert.match(body.message, /the NATS server failed to write the stream: .*no such file or directory/);
    assert.doesNotMatch(body.message, /leader/);
    // No wait cures it: refused on the first answer, not after 5 s of tries.
    assert.ok(tookMs < 2500, `refused after ${Math.round(tookMs)} ms`);
    const said = await readiness(a);
    assert.equal(said.status, 200, 'the edge serves the rest');
    assert.equal(said.body.jetstream.storing, false);
    assert.match(said.body.degraded.join(), /JetStream stores nothing in stream RELAY_chat: the NATS server failed to write the stream: .*no such file or directory/);
    assert.equal(log.events().filter((e) => e === 'jetstream.store_failing').length, 1);
  });
});

describe('the session bucket found with other settings', () => {
  it('one made by hand with a size limit on the bucket or on a value is given none: checkpoints are stored (before: kept, and a session with a few groups had none)', async (t) => {
    const nats = await startNatsServer(t);
    const nc = await connect({ servers: nats.url });
    cleanupFor(t).after(() => nc.close());
    // As `nats kv add RELAY_sessions --max-value-size 256 --max-bucket-size 65536` makes it (discard new: a full bucket refuses).
    await nc.jetstream().views.kv('RELAY_sessions', { maxValueSize: 256, max_bytes: 65536 });
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], HUBS));
    await waitReady(a);
    const config = (await (await nc.jetstreamManager()).streams.info('KV_RELAY_sessions')).config;
    assert.deepEqual({ max_msg_size: config.max_msg_size, max_bytes: config.max_bytes }, { max_msg_size: -1, max_bytes: -1 });
    // A reliable session in a few groups: its checkpoint is larger than 256 bytes.
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'u', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    for (const [ackId, group] of ['first-group-of-this-session', 'second-group-of-this-session', 'third-group-of-this-session'].entries()) {
      client.send({ type: 'joinGroup', group, ackId: ackId + 1 });
      await client.waitFor((m) => m.type === 'ack' && m.ackId === ackId + 1);
    }
    const key = `${HUB}.${connected.connectionId as string}`;
    await untilAnswered(async () => Buffer.from((await a.jetstream!.entry(key))?.value ?? []).toString().includes('third-group-of-this-session'), 5000, 'the checkpoint with its groups');
  });
});

describe("the account's JetStream limits reached", () => {
  it("an edge that cannot make the consumer reading a hub's stream (the account's max_consumers) is not ready, and says why (before: ready, its clients of the hub got nothing)", async (t) => {
    // The account may hold one consumer: the first edge's follower takes it.
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'accounts { A: { jetstream: { max_consumers: 1 }, users: [{ user: a, password: a }] } }\njetstream {}\n' });
    const edge = (name: string) => startTestRelay(t, edgeOverrides(name, [nats.url], { ...HUBS, bus: { user: 'a', pass: 'a' } }));
    const a = await edge('edge-a');
    await waitReady(a);
    const b = await edge('edge-b');
    await untilAnswered(async () => JSON.stringify((await readiness(b)).body.reasons).includes('RELAY_chat'), 10000, "edge B to say it cannot read the hub's stream");
    const refused = await readiness(b);
    assert.equal(refused.status, 503);
    assert.match(JSON.stringify(refused.body.reasons), /this edge reads nothing of stream RELAY_chat: maximum consumers limit reached/);
    assert.equal((await readiness(a)).status, 200);
    // A consumer freed (edge A stops), edge B reads the stream and is ready again.
    await a.close();
    await waitReady(b, 200, 10000);
  });
});
