// Where a durable hub's consumers live on a NATS cluster: on the server that
// leads the stream, whose copy every write was acknowledged by. A server
// places a consumer on any server holding a copy, at random; nats-server
// 2.9.10's copies were seen apart (a chaos soak: a copy lacking nine
// acknowledged messages for good, and a follower whose consumer was placed on
// it never had them), so src/bus/stream-reader.ts makes a consumer placed
// elsewhere again. And when the stream elects another leader, every follower
// goes on with a new consumer on it: told by JetStream's election advisory,
// or, when the edge misses that (its NATS user may not subscribe to it), by
// its own check every 5 s. Three nats-server nodes, a stream with three copies.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsCluster, waitForJetStream, type NatsNode } from '../helpers/nats.ts';
import { captureLogger } from '../helpers/relay.ts';
import { untilAnswered } from '../helpers/wait.ts';

const STREAM = { name: 'T_placed', subjects: ['t.ev.placed.>'], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 };
const BUCKET = { name: 'T_placed_sessions', ttlMs: 60_000 };
const FOLLOWERS = 6;

/** NATS users for the test with the advisories refused: the edge's may not hear elections, the test's own may do anything. */
const DEAF_EDGE = `authorization {
  users = [
    { user: edge, password: "edge-password", permissions: { subscribe: { deny: ["$JS.EVENT.>"] } } }
    { user: admin, password: "admin-password" }
  ]
}
`;

/**
 * A JetStream access of an edge on `nats` (as `user`, when given) with FOLLOWERS followers of the stream from its
 * start, what each got, and the test's own connection (it may list consumers and step a leader down, which the
 * edges' user may not).
 */
async function followersOn(t: TestContext, nats: NatsNode[], auth: { user?: string; pass?: string; admin?: { user: string; pass: string } } = {}) {
  const captured = captureLogger('info');
  const bus = new NatsBus({ servers: nats.map((n) => n.url), randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000, user: auth.user, pass: auth.pass }, captured.log);
  cleanupFor(t).after(() => bus.close());
  const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 5000, requestTimeoutMs: 2000, replicas: 3 }, captured.log);
  cleanupFor(t).after(() => js.close());
  await js.start([STREAM], BUCKET);
  const nc = await connect({ servers: nats.map((n) => n.url), ...(auth.admin ?? {}) });
  cleanupFor(t).after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const got: string[][] = Array.from({ length: FOLLOWERS }, () => []);
  for (let i = 0; i < FOLLOWERS; i++) {
    const follower = js.follow(STREAM.name, 1, (m) => got[i].push(Buffer.from(m.data).toString()));
    cleanupFor(t).after(() => follower.stop());
  }
  /** The servers the followers' consumers are on, once there are FOLLOWERS of them, and the stream's leader. */
  const placement = async () => {
    const leader = (await jsm.streams.info(STREAM.name)).cluster?.leader;
    const servers: string[] = [];
    for await (const ci of jsm.consumers.list(STREAM.name)) if (ci.name.startsWith('edge_')) servers.push(String(ci.cluster?.leader));
    return { leader, servers };
  };
  /** Waits until every follower's consumer is on the stream's leader (not `notOn`), and returns that leader. */
  const allOn = async (what: string, notOn?: string, ms = 20_000) => {
    let last: { leader?: string; servers: string[] } = { servers: [] };
    await untilAnswered(
      async () => {
        last = await placement();
        return last.leader !== undefined && last.leader !== notOn && last.servers.length === FOLLOWERS && last.servers.every((s) => s === last.leader);
      },
      ms,
      what,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: leader ${last.leader}, consumers on ${last.servers.join(', ')}`);
    });
    return last.leader!;
  };
  const stepDown = () => nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${STREAM.name}`, undefined, { timeout: 5000 });
  return { js, got, allOn, stepDown, captured };
}

describe('consumer placement on a NATS cluster', () => {
  it("puts every follower's consumer on the stream's leader, and again on the new one after a step-down", async (t) => {
    const nats = await startNatsCluster(t);
    await waitForJetStream(nats);
    const { js, got, allOn, stepDown, captured } = await followersOn(t, nats);
    // Placed at random, six consumers would all be on the leader once in 243 runs.
    const first = await allOn("every follower's consumer on the stream's leader");
    await js.publish('t.ev.placed.all', Buffer.from('1'), 'id-1');
    await stepDown();
    await allOn("every follower's consumer on the new leader", first);
    await js.publish('t.ev.placed.all', Buffer.from('2'), 'id-2');
    await untilAnswered(async () => got.every((g) => g.length === 2), 10_000, 'both events at every follower');
    assert.deepEqual(got, Array.from({ length: FOLLOWERS }, () => ['1', '2']));
    // A page read is made on the leader too, and reads the same.
    const page = await js.read(STREAM.name, { fromSeq: 1, limit: 10, timeoutMs: 5000 });
    assert.deepEqual(page.map((m) => Buffer.from(m.data).toString()), ['1', '2']);
    // Told by the advisory here, not by the check.
    const resets = captured.lines().filter((l) => l.event === 'jetstream.follow_reset' && l.reason === 'leader_changed');
    assert.ok(resets.length >= FOLLOWERS, `a reset per follower: ${JSON.stringify(resets)}`);
    assert.ok(resets.some((l) => l.seen === undefined), 'the election advisory heard');
  });

  it("an edge that may not hear elections finds the new leader by its own check, and asks for the advisory again after a reconnect", async (t) => {
    const nats = await startNatsCluster(t, 3, { config: DEAF_EDGE });
    await waitForJetStream(nats);
    const { js, got, allOn, stepDown, captured } = await followersOn(t, nats, { user: 'edge', pass: 'edge-password', admin: { user: 'admin', pass: 'admin-password' } });
    const first = await allOn("every follower's consumer on the stream's leader");
    const refusals = () => captured.lines().filter((l) => l.event === 'jetstream.leader_watch_refused').length;
    await untilAnswered(async () => refusals() === 1, 10_000, 'the leader watch refused');
    await js.publish('t.ev.placed.deaf', Buffer.from('1'), 'id-1');
    await stepDown();
    // Without the check, the consumers stayed where they were for good (the advisory never reaches this edge).
    await allOn("every follower's consumer on the new leader, found by the check (every 5 s)", first, 30_000);
    const checked = captured.lines().filter((l) => l.event === 'jetstream.follow_reset' && l.reason === 'leader_changed');
    assert.ok(checked.length >= FOLLOWERS && checked.every((l) => l.seen === 'leader_check' && typeof l.leader === 'string'), JSON.stringify(checked));
    await js.publish('t.ev.placed.deaf', Buffer.from('2'), 'id-2');
    await untilAnswered(async () => got.every((g) => g.length === 2), 10_000, 'both events at every follower');
    assert.deepEqual(got, Array.from({ length: FOLLOWERS }, () => ['1', '2']));
    // The edge's connection moves to another server: the subscription is asked for again (and refused again).
    await nats[0].kill();
    await untilAnswered(async () => refusals() === 2, 20_000, 'the leader watch asked for again after the reconnect');
  });
});
