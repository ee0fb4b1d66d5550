// Where a durable hub's consumers live on a NATS cluster: on the server that
// leads the stream, whose copy every write was acknowledged by. A server
// places a consumer on any server holding a copy, at random; nats-server
// 2.9.10's copies were seen apart (a chaos soak: a copy lacking nine
// acknowledged messages for good, and a follower whose consumer was placed on
// it never had them), so src/bus/stream-reader.ts makes a consumer placed
// elsewhere again. Three nats-server nodes, a stream with three copies.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsCluster, waitForJetStream } from '../helpers/nats.ts';
import { untilAnswered } from '../helpers/wait.ts';

const STREAM = { name: 'T_placed', subjects: ['t.ev.placed.>'], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 };
const BUCKET = { name: 'T_placed_sessions', ttlMs: 60_000 };
const FOLLOWERS = 6;

describe('consumer placement on a NATS cluster', () => {
  it("puts every follower's consumer on the stream's leader, and again on the new one after a step-down", async (t) => {
    const nats = await startNatsCluster(t);
    await waitForJetStream(nats);
    const log = createLogger('silent', 'test');
    const bus = new NatsBus({ servers: nats.map((n) => n.url), randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000 }, log);
    cleanupFor(t).after(() => bus.close());
    const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 5000, requestTimeoutMs: 2000, replicas: 3 }, log);
    cleanupFor(t).after(() => js.close());
    await js.start([STREAM], BUCKET);
    // The test's own connection: it may list consumers and step a leader down, which the edges' user may not.
    const nc = await connect({ servers: nats.map((n) => n.url) });
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
    const allOn = async (what: string, notOn?: string) => {
      let last: { leader?: string; servers: string[] } = { servers: [] };
      await untilAnswered(
        async () => {
          last = await placement();
          return last.leader !== undefined && last.leader !== notOn && last.servers.length === FOLLOWERS && last.servers.every((s) => s === last.leader);
        },
        20_000,
        what,
      ).catch((err: Error) => {
        throw new Error(`${err.message}: leader ${last.leader}, consumers on ${last.servers.join(', ')}`);
      });
      return last.leader!;
    };
    // Placed at random, six consumers would all be on the leader once in 243 runs.
    const first = await allOn("every follower's consumer on the stream's leader");
    await js.publish('t.ev.placed.all', Buffer.from('1'), 'id-1');
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${STREAM.name}`, undefined, { timeout: 5000 });
    await allOn("every follower's consumer on the new leader", first);
    await js.publish('t.ev.placed.all', Buffer.from('2'), 'id-2');
    await untilAnswered(async () => got.every((g) => g.length === 2), 10_000, 'both events at every follower');
    assert.deepEqual(got, Array.from({ length: FOLLOWERS }, () => ['1', '2']));
    // A page read is made on the leader too, and reads the same.
    const page = await js.read(STREAM.name, { fromSeq: 1, limit: 10, timeoutMs: 5000 });
    assert.deepEqual(page.map((m) => Buffer.from(m.data).toString()), ['1', '2']);
  });
});
