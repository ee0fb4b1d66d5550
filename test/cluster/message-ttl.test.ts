// messageTtlSeconds across edges on core NATS: an event another edge kept
// while NATS was away reaches nobody once its time to live has passed, and a
// reliable session handed to another edge keeps each held message's time to
// live. Two edges in this process on one nats-server; sends through
// Microsoft's service SDK.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CORE_NATS, edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { PLAIN, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { metricValue, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('messageTtlSeconds across edges', { concurrency: 2 }, () => {
  it('an event kept while NATS was away is not delivered once its time to live passed', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], CORE_NATS));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url], CORE_NATS));
    const member = await RawPubSubClient.connect(accessUrl(a.url), PLAIN, t);
    await member.request({ type: 'joinGroup', group: 'g' });
    const group = serviceClient(b).group('g');
    // Both edges hear each other first: an event on B reaches the member on A.
    for (let i = 0; i < 200 && !member.dataMessages().some((m) => m.data === 'hello'); i++) {
      await group.sendToAll('hello', { contentType: 'text/plain' });
      await sleep(25);
    }
    assert.ok(member.dataMessages().some((m) => m.data === 'hello'), 'a send on B reaches the member on A');
    await nats.kill();
    await waitReady(b, 503);
    await group.sendToAll({ n: 1 }, { messageTtlSeconds: 1 });
    await group.sendToAll({ n: 2 });
    await group.sendToAll({ n: 3 }, { messageTtlSeconds: 60 });
    await sleep(1300);
    await nats.restart();
    await waitReady(a, 200);
    await waitReady(b, 200);
    await member.waitFor((m) => m.type === 'message' && m.data.n === 3, 10000, 'the events B kept');
    assert.deepEqual(
      member.dataMessages().filter((m) => typeof m.data === 'object').map((m) => m.data.n),
      [2, 3],
    );
    assert.equal(await metricValue(a, 'edge_relay_pubsub_expired_total', { where: 'event' }), 1);
  });

  it('a durable hub numbers an expired event all the same: a session rebuilt on another edge goes on with the ids its client had', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url]));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url]));
    await waitReady(a, 200, 20000);
    await waitReady(b, 200, 20000);
    const first = await RawPubSubClient.connect(accessUrl(a.url), RELIABLE, t);
    const { connectionId, reconnectionToken } = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await first.request({ type: 'joinGroup', group: 'g' });
    const group = serviceClient(a).group('g');
    await group.sendToAll({ n: 1 }, { messageTtlSeconds: 1 });
    await group.sendToAll({ n: 2 });
    await first.waitFor((m) => m.type === 'message' && m.data.n === 2, 5000, 'event 2 on edge A');
    assert.deepEqual(first.dataMessages().map((m) => [m.data.n, m.sequenceId]), [[1, 1], [2, 2]]);
    // Nothing acknowledged; event 1's time to live passes before the session moves.
    await sleep(1300);
    first.ws.terminate();
    await withTimeout(first.closed, 5000, 'the socket to close');
    const recovery = recoveryQuery(connectionId, reconnectionToken);
    const again = await RawPubSubClient.connect(accessUrl(b.url) + recovery, RELIABLE, t);
    const system = await again.waitFor((m) => m.type === 'system', 10000, 'the session on edge B');
    assert.equal(system.event, 'connected');
    await serviceClient(b).group('g').sendToAll({ n: 3 });
    await until(() => again.dataMessages().some((m) => m.data.n === 3), 10000, 'event 3 on edge B');
    // Event 1 is not sent again; 2 is (unacknowledged), with its id; 3 comes after it. Had B not numbered
    // the expired event, 3 would carry id 2, which the SDK drops as one it already has.
    assert.deepEqual(again.dataMessages().map((m) => [m.data.n, m.sequenceId]), [[2, 2], [3, 3]]);
  });

  it('a reliable session taken by another edge keeps the time to live of what it holds', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], CORE_NATS));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url], CORE_NATS));
    const first = await RawPubSubClient.connect(accessUrl(a.url), RELIABLE, t);
    const { connectionId, reconnectionToken } = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await first.request({ type: 'joinGroup', group: 'g' });
    first.ws.terminate();
    await withTimeout(first.closed, 5000, 'the socket to close');
    const group = serviceClient(a).group('g');
    await group.sendToAll({ n: 1 }, { messageTtlSeconds: 1 });
    await group.sendToAll({ n: 2 });
    await group.sendToAll({ n: 3 }, { messageTtlSeconds: 1 });
    await group.sendToAll({ n: 4 }, { messageTtlSeconds: 60 });
    await sleep(1300);
    const recovery = recoveryQuery(connectionId, reconnectionToken);
    const again = await RawPubSubClient.connect(accessUrl(b.url) + recovery, RELIABLE, t);
    const system = await again.waitFor((m) => m.type === 'system', 10000, 'the session on edge B');
    assert.equal(system.event, 'connected');
    await group.sendToAll({ n: 5 });
    await until(() => again.dataMessages().some((m) => m.data.n === 5), 10000, 'event 5 on edge B');
    assert.deepEqual(
      again.dataMessages().map((m) => [m.data.n, m.sequenceId]),
      [
        [2, 2],
        [4, 4],
        [5, 5],
      ],
    );
    assert.equal(await metricValue(b, 'edge_relay_pubsub_expired_total', { where: 'held' }), 2);
  });
});
