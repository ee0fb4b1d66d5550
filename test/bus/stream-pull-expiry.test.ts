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
/** Followers at once, each on a stream of its own, its burst timed a few ms before its own idle request expires. */
const TRIALS = 10;
const BURST = 1000;
const streamOf = (trial: number) => ({ name: `T_hub${trial}`, subjects: [`t.ev.hub${trial}.>`], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 });
const BUCKET = { name: 'T_sessions', ttlMs: 60_000 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stream follower and pull request expiry', () => {
  it('reads a burst that begins as its idle pull request expires without standing still', async (t) => {
    const nats = await startNatsServer(t);
    const bus = new NatsBus({ servers: [nats.url], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 1000, flushTimeoutMs: 2000 }, log);
    cleanupFor(t).after(() => bus.close());
    const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 2000 }, log);
    cleanupFor(t).after(() => js.close());
    const trials = Array.from({ length: TRIALS }, (_, i) => i);
    await js.start(trials.map(streamOf), BUCKET);
    const side = await connect({ servers: nats.url });
    cleanupFor(t).after(() => side.close());
    // When each follower's consumer last asked for messages (the pull requests, seen from another connection).
    const lastPull = new Map<string, number>();
    const pulls = new Map<string, number>();
    side.subscribe('$JS.API.CONSUMER.MSG.NEXT.>', {
      callback: (_err, m) => {
        const stream = m.subject.split('.')[5];
        lastPull.set(stream, performance.now());
        pulls.set(stream, (pulls.get(stream) ?? 0) + 1);
      },
    });
    await side.flush();
    const payload = new Uint8Array(2000);
    const trial = async (n: number): Promise<number> => {
      const stream = streamOf(n).name;
      let got = 0;
      // A follower of its own: its first pull request is its only one until the burst (after a burst, nats.js
      // keeps several whose expiries are staggered).
      const follower = js.follow(stream, (await js.bounds(stream)).last + 1, () => got++);
      t.after(() => follower.stop());
      const pulled = () => lastPull.get(stream);
      const waitStart = performance.now();
      // Until its pull request has been idle for almost its 5 s. A busy machine (a whole suite beside it) was seen
      // to delay the first request or bring another before 5 s: the bound is wide, and says which it was.
      while (pulled() === undefined || performance.now() - pulled()! < 5000 - 25 + (n % 4) * 5) {
        if (performance.now() - waitStart > 30_000) {
          throw new Error(`trial ${n}: ${pulled() === undefined ? 'no pull request seen' : `no pull request left idle for 5 s (${pulls.get(stream)} requests in 30 s)`}`);
        }
        await sleep(1);
      }
      const burstAt = performance.now();
      for (let i = 0; i < BURST; i++) {
        side.publish(`t.ev.hub${n}.g.burst`, payload);
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
      assert.equal(got, BURST, `trial ${n}: every message read`);
      console.log(`trial ${n}: burst read in ${Math.round(performance.now() - burstAt)} ms, longest stand-still ${Math.round(longest)} ms`);
      return Math.round(longest);
    };
    // Started 300 ms apart, so the bursts do not all land in the same few milliseconds.
    const stillFor = await Promise.all(trials.map(async (n) => (await sleep(n * 300), trial(n))));
    // Without the fix: 5 s or more (two heartbeats missed); with it, under a second on a calm machine.
    assert.ok(stillFor.every((ms) => ms < 4000), `the follower stood still ${stillFor.join(', ')} ms in the bursts`);
  });
});
