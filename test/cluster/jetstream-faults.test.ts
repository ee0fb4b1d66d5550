// NATS faults under steady publishing with durable hubs (JetStream, three
// nats-server nodes, streams with three replicas). Each test publishes with
// acks through @azure/web-pubsub-client and asserts exactly what a reliable
// subscriber on another edge gets: every acknowledged event once and in
// order, nothing twice. (An event whose ack failed may still have been stored,
// a timeout can hide a success: it may arrive, once, in its place.) The tests
// run at once, each on a cluster of its own: the others fit in the 30 s
// outage one of them waits out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { connect } from 'nats';
import { edgeEvents, edgeOverrides, readiness, startCluster, waitReady } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsCluster, waitForJetStream, waitForMesh } from '../helpers/nats.ts';
import { ALL_ROLES, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { FAST_RETRY, serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

const numbers = (messages: any[]) => messages.map((m) => m.data).filter((d) => typeof d === 'number');

/** Publishes n, n+1, ... one at a time with acks until stopped; records what was acknowledged and what was refused. */
function steadyPublisher(send: (n: number) => Promise<unknown>, intervalMs: number) {
  const acked: number[] = [];
  const refused: { n: number; at: number }[] = [];
  let stopped = false;
  let n = 0;
  let pendingSince: number | undefined;
  const done = (async () => {
    while (!stopped) {
      const i = ++n;
      pendingSince = Date.now();
      await send(i).then(
        () => acked.push(i),
        () => refused.push({ n: i, at: Date.now() }),
      );
      pendingSince = undefined;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    acked,
    refused,
    get sent() {
      return n;
    },
    /** When the publish waiting for its answer now was sent; undefined between publishes. */
    get pendingSince() {
      return pendingSince;
    },
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

/** Every acknowledged event arrived once, in order; nothing arrived twice or out of order. */
function assertExactlyAcknowledged(received: number[], acked: number[], story: () => string): void {
  const seen = new Set<number>();
  for (const n of received) {
    assert.ok(!seen.has(n), `event ${n} arrived twice\n${story()}`);
    seen.add(n);
  }
  for (let i = 1; i < received.length; i++) assert.ok(received[i] > received[i - 1], `out of order at ${received[i - 1]}, ${received[i]}`);
  const lost = acked.filter((n) => !seen.has(n));
  assert.deepEqual(lost, [], `acknowledged events lost\n${story()}`);
}

/**
 * Two edges on three NATS nodes, a subscriber of group `feed` on A and a publisher on B sending to it every 10 ms
 * (steadyPublisher), and `settle()`: stops it, waits up to `ms` for the last acknowledged event at the subscriber,
 * and asserts every acknowledged one arrived once, in order.
 */
async function feedAcrossEdges(t: Parameters<typeof startCluster>[0]) {
  const { nats, edges } = await startCluster(t, 2);
  const [a, b] = edges;
  const sub = await startClient(t, accessUrl(a.url));
  await sub.client.joinGroup('feed');
  const publisher = await startClient(t, accessUrl(b.url, { roles: ALL_ROLES }));
  const steady = steadyPublisher((n) => publisher.client.sendToGroup('feed', n, 'json'), 10);
  const settle = async (ms: number) => {
    await steady.stop();
    const story = () => `acked ${steady.acked.length}, refused ${steady.refused.length}\n${edgeEvents([a, b], /jetstream|bus\.(dis)?connected/)}`;
    await until(() => numbers(sub.groupData).includes(steady.acked[steady.acked.length - 1]), ms, 'the last acknowledged event').catch((err) => {
      throw new Error(`${err.message}: got ${numbers(sub.groupData).length}\n${story()}`);
    });
    assertExactlyAcknowledged(numbers(sub.groupData), steady.acked, story);
  };
  return { nats, a, b, steady, settle };
}

describe('JetStream faults', { concurrency: true }, () => {
  it('two NATS nodes of three down: the edge says it cannot store (degraded, still ready for what it can serve), and storing again once they are back', async (t) => {
    const nats = await startNatsCluster(t);
    // unsureRetryMs: a try the leaderless stream never answers goes on this long past publishTimeoutMs (default 60 s).
    const a = await startTestRelay(t, edgeOverrides('edge-a', nats.map((n) => n.url), { bus: { jetstream: { publishTimeoutMs: 1500, unsureRetryMs: 2000 } } }));
    await waitReady(a);
    const rest = serviceClient(a, { maxRetries: 0 });
    await rest.group('g').sendToAll(1);
    await nats[1].kill();
    await nats[2].kill();
    // Still connected to n1, JetStream there, the streams without their leaders: every durable publish fails.
    const asked = Date.now();
    await assert.rejects(rest.group('g').sendToAll(2), (err: { statusCode?: number }) => err.statusCode === 503);
    // A wide bound, not a timing: with the default the answer took 61 s whenever the try went unanswered.
    assert.ok(Date.now() - asked < 20000, `answered after ${Date.now() - asked} ms`);
    // The stream has no leader for any edge: readiness 503 (as before) took every edge out of a load balancer, hybrid traffic and all.
    const down = await readiness(a);
    assert.equal(down.status, 200, JSON.stringify(down.body));
    assert.deepEqual(down.body.reasons, []);
    assert.equal(down.body.jetstream.storing, false);
    assert.match(down.body.degraded.join(), /JetStream stores nothing in stream RELAY_chat: /);
    // The edge asks the stream each second whether it stores again. A member left alone answers that question
    // (once the group has been without a leader for a while) with no leader named: that is no recovery. Before,
    // any answer counted, and the edge said it was storing again while every publish failed.
    for (const stop = Date.now() + 15000; Date.now() < stop; ) {
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await readiness(a)).body.jetstream.storing, false, 'storing, with the stream still without a leader');
    }
    await nats[1].restart();
    await nats[2].restart();
    // Back without a publish: the edge asks the streams each second meanwhile.
    await untilAnswered(async () => (await readiness(a)).body.jetstream.storing === true, 30000, 'storing again');
    assert.deepEqual((await readiness(a)).body.degraded, []);
    await rest.group('g').sendToAll(3);
  });

  it("a stream whose only copy's node is gone is named alone in degraded; another hub's writes stored meanwhile do not hide it", async (t) => {
    const nats = await startNatsCluster(t);
    const urls = nats.map((n) => n.url);
    const hub = (name: string) => ({ name, accessKey: `${name}-access-key-0123456789` });
    // RELAY_kept and the session bucket with three copies (made first, by an edge with replicas 3),
    // RELAY_lost with one (made by an edge with replicas 1, which never lowers what exists).
    await waitReady(await startTestRelay(t, edgeOverrides('edge-first', urls, { pubsub: { hubs: [hub('kept')] }, bus: { jetstream: { replicas: 3 } } })));
    const a = await startTestRelay(
      t,
      edgeOverrides('edge-a', urls, { pubsub: { hubs: [hub('lost'), hub('kept')] }, bus: { jetstream: { publishTimeoutMs: 1500, replicas: 1 } }, metrics: { requireManage: false } }),
    );
    const storing = async () => {
      const text = (await httpRequest(`${a.url}/$relay/metrics`)).body.toString();
      return Object.fromEntries([...text.matchAll(/^edge_relay_jetstream_storing\{stream="(\w+)"[^}]*\} (\d)$/gm)].map((m) => [m[1], Number(m[2])]));
    };
    await waitReady(a);
    const nc = await connect({ servers: urls });
    let lostOn: string | undefined;
    try {
      const jsm = await nc.jetstreamManager();
      lostOn = (await jsm.streams.info('RELAY_lost')).cluster?.leader;
      assert.equal((await jsm.streams.info('RELAY_kept')).config.num_replicas, 3);
    } finally {
      await nc.close();
    }
    const node = nats.find((n) => n.name === lostOn);
    assert.ok(node, `RELAY_lost's leader: ${lostOn}`);
    const send = (name: string, n: number) =>
      new WebPubSubServiceClient(`Endpoint=${a.url};AccessKey=${name}-access-key-0123456789;Version=1.0;`, name, { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } }).sendToAll(n);
    await send('lost', 1);
    await node.kill();
    await assert.rejects(send('lost', 2), (err: { statusCode?: number }) => err.statusCode === 503);
    // Stored after the failure (RELAY_kept elects a leader among the two left): before, any write stored cleared the one flag for every stream.
    await untilAnswered(() => send('kept', 3).then(() => true, () => false), 20000, 'a write to RELAY_kept');
    const got = await readiness(a);
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(got.body.jetstream.storing, false);
    assert.deepEqual(got.body.degraded.map((d: string) => /stream (RELAY_\w+):/.exec(d)?.[1]), ['RELAY_lost'], JSON.stringify(got.body));
    assert.deepEqual(await storing(), { RELAY_lost: 0, RELAY_kept: 1 });
    await node.restart();
    await untilAnswered(async () => (await readiness(a)).body.jetstream.storing === true, 30000, 'storing again');
    assert.deepEqual(await storing(), { RELAY_lost: 1, RELAY_kept: 1 });
    await send('lost', 4);
  });

  it('one NATS node of three is killed under steady publishing: nothing acknowledged is lost or doubled', async (t) => {
    const { nats, steady, settle } = await feedAcrossEdges(t);
    await until(() => steady.acked.length >= 50, 20000, 'publishing before the fault');
    // The node edge A is connected to, and with it any stream leader or consumer it held.
    await nats[0].kill();
    const killedAt = steady.sent;
    await until(() => steady.sent > killedAt + 100 && steady.acked.length > 150, 60000, 'publishing to go on after the kill');
    await settle(60000);
    t.diagnostic(`published ${steady.sent}, acknowledged ${steady.acked.length}, refused ${steady.refused.length} (while the stream elected a leader)`);
    // An edge that starts now counts two NATS servers (one URL, one other advertised), so 1 replica for what it creates;
    // it must not take the existing stream and bucket down to that (before: RELAY_chat went from 3 replicas to 1).
    const c = await startTestRelay(t, edgeOverrides('edge-c', [nats[1].url], { timeouts: { shutdownMs: 500 } }));
    await until(() => c.jetstream?.state === 'ready', 20000, "edge C's JetStream");
    const nc = await connect({ servers: nats[1].url });
    try {
      const jsm = await nc.jetstreamManager();
      for (const stream of ['RELAY_chat', 'KV_RELAY_sessions']) assert.equal((await jsm.streams.info(stream)).config.num_replicas, 3, stream);
    } finally {
      await nc.close();
    }
  });

  it("the stream's leader steps down twice under steady publishing: each edge's follower goes on with a new consumer, nothing acknowledged is lost or doubled", async (t) => {
    const { nats, a, steady, settle } = await feedAcrossEdges(t);
    // The test's own connection, allowed what the edges are not: stepping a stream's leader down.
    const nc = await connect({ servers: nats.map((n) => n.url) });
    t.after(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const leader = async () => (await jsm.streams.info('RELAY_chat')).cluster?.leader;
    for (let round = 1; round <= 2; round++) {
      await until(() => steady.acked.length >= 60 * round, 20000, `publishing before step-down ${round}`);
      const was = await leader();
      assert.ok(was, 'the stream has a leader');
      await nc.request('$JS.API.STREAM.LEADER.STEPDOWN.RELAY_chat', undefined, { timeout: 5000 });
      await untilAnswered(async () => {
        const now = await leader();
        return now !== undefined && now !== was;
      }, 20000, `another leader after step-down ${round}`);
      // Edge A's follower (its subscriber's hub) heard the election and made a new consumer.
      await until(() => edgeEvents([a], /"jetstream\.follow_reset"/).split('\n').filter((l) => l.includes('"leader_changed"')).length >= round, 10000, `edge A's follower to go on with a new consumer (${round})`);
    }
    const before = steady.acked.length;
    await until(() => steady.acked.length >= before + 60, 20000, 'publishing after the step-downs');
    await settle(30000);
    assert.match(edgeEvents([a], /leader_changed/), /"stream":"RELAY_chat"/);
  });

  it('every NATS node down for 15 s: publishes meanwhile are refused, everything acknowledged before and after arrives, a question about a group is answered or refused at once', async (t) => {
    const { nats, edges } = await startCluster(t, 2, { bus: { jetstream: { publishTimeoutMs: 2000 } }, metrics: { requireManage: false } });
    const [a, b] = edges;
    const sub = await startClient(t, accessUrl(a.url));
    await sub.client.joinGroup('feed');
    // No retries in the SDK: each refusal is the relay's, after bus.jetstream.publishTimeoutMs.
    const publisher = await startClient(t, accessUrl(b.url, { roles: ALL_ROLES }), { messageRetryOptions: FAST_RETRY });
    const steady = steadyPublisher((n) => publisher.client.sendToGroup('feed', n, 'json'), 20);
    // The steady publisher waits for each ack, and the publish that was out when its NATS node died is held until
    // NATS says whether it was stored (see UNSURE_RETRY_MS): the refusals are asked of a second publisher.
    const prober = await startClient(t, accessUrl(b.url, { roles: ALL_ROLES }), { messageRetryOptions: FAST_RETRY });
    await until(() => steady.acked.length >= 30, 20000, 'publishing before the outage');
    for (const node of nats) await node.kill();
    // Counted once every node is down: a publish acknowledged while the last ones went down was before the outage.
    const ackedBefore = steady.acked.length;
    const downAt = Date.now();
    await waitReady(b, 503, 10000);
    // It says it stores nothing: before, `storing` true and the gauge 1 throughout, while every publish failed.
    assert.equal((await readiness(b)).body.jetstream.storing, false);
    const gauges = [...(await httpRequest(`${b.url}/$relay/metrics`)).body.toString().matchAll(/^edge_relay_jetstream_storing\{[^}]*\} (\d)$/gm)].map((m) => m[1]);
    assert.ok(gauges.length > 0 && gauges.every((g) => g === '0'), `edge_relay_jetstream_storing: ${gauges}`);
    // A REST question about a group meanwhile (asked at the stream's end when
    // JetStream is there): answered from what the edge knows when it has a
    // member, else refused 503 at once, since only the other edges could say.
    const askedAt = Date.now();
    assert.equal(await serviceClient(a).groupExists('feed'), true, 'the edge with the member answers');
    await assert.rejects(serviceClient(b, { maxRetries: 0 }).groupExists('feed'), (err: { statusCode?: number }) => err.statusCode === 503);
    assert.ok(Date.now() - askedAt < 10000, `the questions were answered in ${Date.now() - askedAt} ms`);
    // A publish that never went out is refused after bus.jetstream.publishTimeoutMs (2 s), not held.
    for (let i = 1; i <= 3; i += 1) {
      const sentAt = Date.now();
      await assert.rejects(prober.client.sendToGroup('feed', `probe ${i}`, 'text'), `probe ${i} is refused`);
      assert.ok(Date.now() - sentAt < 10000, `probe ${i} was refused in ${Date.now() - sentAt} ms`);
    }
    // Well past every bound of the edge's (publishTimeoutMs 2 s, bus requests, pings): each refusal came from the relay.
    await new Promise((r) => setTimeout(r, 15000 - (Date.now() - downAt)));
    // Everything acknowledged was acknowledged before the outage or after NATS came back.
    const ackedDuringOutage = steady.acked.length - ackedBefore;
    const refusedDuringOutage = steady.refused.filter((r) => r.at > downAt + 100).length;
    const heldSince = steady.pendingSince;
    for (const node of nats) await node.restart();
    const upAt = Date.now();
    await waitForMesh(nats);
    // All three restarted at once: nats-server 2.9 has taken over 30 s to elect its meta leader here.
    await waitForJetStream(nats, 90000);
    await until(() => steady.acked.length >= ackedBefore + ackedDuringOutage + 30, 60000, 'publishing to be acknowledged again');
    await steady.stop();
    const story = () =>
      `acked ${steady.acked.length}, refused ${steady.refused.length}, back ${Math.round((Date.now() - upAt) / 1000)} s\n${edgeEvents([a, b], /jetstream|bus\.(dis)?connected/)}`;
    assert.equal(ackedDuringOutage, 0, 'nothing was acknowledged while no NATS node was up');
    // The steady publisher's were refused, unless the one out when NATS went down is still held (then none after it was sent).
    const heldFromBefore = heldSince !== undefined && heldSince <= downAt;
    assert.ok(refusedDuringOutage >= 5 || heldFromBefore, `publishes during the outage were refused (${refusedDuringOutage}), none held from before it`);
    await until(() => numbers(sub.groupData).includes(steady.acked[steady.acked.length - 1]), 60000, 'the last acknowledged event').catch((err) => {
      throw new Error(`${err.message}: got ${numbers(sub.groupData).length}\n${story()}`);
    });
    assertExactlyAcknowledged(numbers(sub.groupData), steady.acked, story);
    t.diagnostic(`acknowledged ${steady.acked.length}, refused ${steady.refused.length}${heldFromBefore ? ', one held through the outage' : ''}; JetStream took ${Math.round((Date.now() - upAt) / 1000)} s to be back`);
  });
});
