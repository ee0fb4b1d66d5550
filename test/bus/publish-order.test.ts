// The order a stream's publishes are stored in, kept through a failover
// (src/bus/publish-order.ts): the rules on their own, and a client's two sends
// across a frozen stream leader on a three-node cluster, where the second was
// stored (and delivered) first (found by review, 2026-12-06).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { PublishOrder } from '../../src/bus/publish-order.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsCluster } from '../helpers/nats.ts';
import { withTimeout } from '../helpers/wait.ts';

const log = createLogger('silent', 'test');

describe('publish order', () => {
  it('lets every publish try at once until one is in trouble, then the oldest only, in the order they began; a deadline ends a wait', async () => {
    const order = new PublishOrder();
    const [a, b, c] = ['s', 's', 's'].map((s) => order.begin(s));
    const other = order.begin('t');
    assert.ok([a, b, c, other].every((turn) => order.mayTry(turn)), 'no trouble: all at once');
    order.troubled(b);
    assert.deepEqual([a, b, c].map((turn) => order.mayTry(turn)), [true, false, false], 'the oldest only');
    assert.equal(order.mayTry(other), true, 'another stream is not held');
    const woken: string[] = [];
    const bWaits = order.waitForTurn(b, 10_000).then(() => woken.push('b'));
    const cWaits = order.waitForTurn(c, 10_000).then(() => woken.push('c'));
    order.end(a);
    await bWaits;
    assert.deepEqual(woken, ['b']);
    assert.equal(order.mayTry(c), false, 'b is still in trouble');
    order.end(b);
    await cWaits;
    assert.deepEqual(woken, ['b', 'c']);
    const d = order.begin('s');
    assert.equal(order.mayTry(d), true, 'no trouble left: at once again');
    // A reconnect puts every publish not settled in trouble: sent on the connection gone, or not sent.
    order.reconnected();
    assert.deepEqual([c, d].map((turn) => order.mayTry(turn)), [true, false]);
    const started = performance.now();
    await order.waitForTurn(d, 50);
    assert.ok(performance.now() - started >= 40, 'waited out its deadline');
    assert.equal(order.mayTry(d), false);
    order.end(c);
    order.end(d);
    order.end(other);
    assert.equal(order.mayTry(order.begin('s')), true);
  });

  it('wakes nobody when a call ends while nothing is in trouble (an end cost a step per call in flight), everyone when the last trouble ends', () => {
    const order = new PublishOrder();
    const calls = Array.from({ length: 5 }, () => order.begin('s'));
    let wakes = 0;
    for (const turn of calls) turn.wake = () => wakes++;
    order.end(calls[0]);
    assert.equal(wakes, 0);
    order.troubled(calls[1]);
    order.end(calls[2]);
    assert.equal(wakes, 1, 'in trouble: the oldest only');
    order.end(calls[1]);
    assert.equal(wakes, 3, 'the last trouble ended: the two left');
  });

  it("keeps a publisher's order across a frozen stream leader: the send made after the failover is stored after the one cut by it", { timeout: 180_000 }, async (t) => {
    const nodes = await startNatsCluster(t);
    const stream = { name: 'T_hub', subjects: ['t.ev.hub.>'], maxAgeMs: 300_000, maxMessages: -1, maxBytes: -1 };
    const bucket = { name: 'T_sessions', ttlMs: 60_000 };
    const busOn = (servers: string[]) => {
      const bus = new NatsBus({ servers, randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, connectTimeoutMs: 1000, pingIntervalMs: 1000, flushTimeoutMs: 2000 }, log);
      cleanupFor(t).after(() => bus.close());
      return bus;
    };
    const access = (servers: string[], requestTimeoutMs: number) => {
      const js = new JetStreamAccess(busOn(servers), { replicas: 3, storage: 'file', publishTimeoutMs: 15_000, requestTimeoutMs }, log);
      cleanupFor(t).after(() => js.close());
      return js;
    };
    const setup = access([nodes[0].url], 2000);
    await setup.start([stream], bucket);
    const nc = await connect({ servers: nodes.map((n) => n.url) });
    let leaderName: string | undefined;
    try {
      leaderName = (await (await nc.jetstreamManager()).streams.info(stream.name)).cluster?.leader;
    } finally {
      await nc.close();
    }
    const leader = nodes.find((n) => n.name === leaderName);
    assert.ok(leader, `the stream's leader (${leaderName}) among the nodes`);
    // The edge's connection is to the stream's leader; its first try waits 6 s for an answer.
    const js = access([leader.url, ...nodes.filter((n) => n !== leader).map((n) => n.url)], 6000);
    await js.start([stream], bucket);
    await js.publish('t.ev.hub.all', Buffer.from('warm'), 'id-warm');
    await leader.freeze();
    t.after(() => leader.thaw());
    const first = js.publish('t.ev.hub.all', Buffer.from('first'), 'id-first');
    // Meanwhile the edge is on another node (two missed pings) and the others elect a leader.
    await new Promise((r) => setTimeout(r, 3000));
    const second = js.publish('t.ev.hub.all', Buffer.from('second'), 'id-second');
    const [a, b] = await withTimeout(Promise.all([first, second]), 60_000, 'both stored');
    assert.ok(a.seq < b.seq, `the first stored at ${a.seq}, the second at ${b.seq}`);
  });
});
