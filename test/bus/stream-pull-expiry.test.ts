// A follower whose idle pull request expires just as a burst begins: nats-server before 2.9.16 (Debian 12's
// 2.9.10) ends such a request without its 408 (nats-io/nats-server#3942), and nats.js, still counting on that
// request's messages, asks for no more until it misses two heartbeats: the follower stood still 2.5 to 7.5 s
// while the stream grew (test/cluster/pubsub.test.ts's read-your-writes test, edge A at 300 while the stream
// reached 723). The pull requests are watched from another connection, and each burst is timed to begin within
// a few milliseconds of the idle request's expiry (5 s after it).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer } from '../helpers/nats.ts';

const log = createLogger((process.env.FOLLOW_LOG as 'warn') ?? 'silent', 'test');
const STREAM = { name: 'T_hub', subjects: ['t.ev.hub.>'], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 };
const BUCKET = { name: 'T_sessions', ttlMs: 60_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stream follower and pull request expiry', () => {
  it('reads a burst that begins as its idle pull request expires without standing still', async (t) => {
    const nats = await startNatsServer(t);
    const bus = new NatsBus({ servers: [nats.url], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000 }, log);
    cleanupFor(t).after(() => bus.close());
    const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 2000 }, log);
    cleanupFor(t).after(() => js.close());
    await js.start([STREAM], BUCKET);
    const side = await connect({ servers: nats.url });
    cleanupFor(t).after(() => side.close());
    let lastPull = 0;
    side.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${STREAM.name}.*`, { callback: () => (lastPull = performance.now()) });
    await side.flush();
    const BURST = 1000;
    const payload = new Uint8Array(2000);
    const stillFor: number[] = [];
    for (let trial = 0; trial < 10; trial++) {
      // A follower of its own each time: its first pull request is its only one until the burst (after a burst,
      // nats.js keeps several whose expiries are staggered).
      let got = 0;
      lastPull = 0;
      const follower = js.follow(STREAM.name, (await js.bounds(STREAM.name)).last + 1, () => got++);
      t.after(() => follower.stop());
      while (lastPull === 0 || performance.now() - lastPull < 5000 - 25 + (trial % 4) * 5) await sleep(1);
      const burstAt = performance.now();
      for (let i = 0; i < BURST; i++) {
        side.publish(`t.ev.hub.g.burst${trial}`, payload);
        if (i % 50 === 49) await sleep(1);
      }
      await side.flush();
      let longest = 0;
      let last = burstAt;
      let seen = 0;
      while (got < BURST && performance.now() - burstAt < 15_000) {
        await sleep(10);
        const now = performance.now();
        if (got !== seen) {
          seen = got;
          last = now;
        }
        longest = Math.max(longest, now - last);
      }
      follower.stop();
      assert.equal(got, BURST, `trial ${trial}: every message read`);
      stillFor.push(Math.round(longest));
      console.log(`trial ${trial}: burst read in ${Math.round(performance.now() - burstAt)} ms, longest stand-still ${Math.round(longest)} ms`);
    }
    assert.ok(stillFor.every((ms) => ms < 2000), `the follower stood still ${stillFor.join(', ')} ms in the bursts`);
  });
});
