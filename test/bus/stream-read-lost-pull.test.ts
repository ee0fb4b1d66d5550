// A page read (src/bus/stream-reader.ts `read`) whose pull request this side gave up on while the server still
// sent: a loaded edge (eight readers of 8 MiB pages in a busy CI run) read the deliveries after its wait for them
// was over, and they were lost to the page. Here a TCP proxy between the edge's bus and nats-server holds what the
// server sends, from the first pull request on, past the pull's wait. Before, a page whose every message was in
// the lost pull came back empty (the consumer counted nothing pending), and one with more pending was refused at
// the next pull's first delivery ("part of a page was lost on the way": 503 StoreUnavailable to a history reader).
// A pull given up with its first deliveries and not its last is asked about at once: before, the next pull waited
// out its expiry for what the consumer had already sent, and the read ran out of time.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHoldingProxy } from '../helpers/holding-proxy.ts';
import { startNatsServer } from '../helpers/nats.ts';

const log = createLogger('silent', 'test');
const STREAM = { name: 'T_hub', subjects: ['t.ev.hub.>'], maxAgeMs: 60_000, maxMessages: -1, maxBytes: -1 };
const BUCKET = { name: 'T_sessions', ttlMs: 60_000 };
/** A read of 10 s asks the server to hold each pull 5 s and waits 1 s more: the proxy holds the answers 7 s. */
const READ_TIMEOUT_MS = 10_000;
const HOLD_MS = 7_000;
/**
 * JetStream requests wait longer than the hold: one read's pull begins it while another read's consumer is being
 * made, and that answer is held too (at 5 s, a read failed now and then with a request TIMEOUT before its first pull).
 */
const JS_OPTIONS = { storage: 'memory' as const, publishTimeoutMs: 3000, requestTimeoutMs: 10_000 };

/** JetStream access through the proxy on `port`, its streams made; closed with the test. */
async function accessThrough(t: Parameters<typeof cleanupFor>[0], port: number): Promise<JetStreamAccess> {
  // Pings 20 s apart: a connection whose pongs are held 7 s is not taken for dead.
  const bus = new NatsBus({ servers: [`nats://127.0.0.1:${port}`], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 20_000, flushTimeoutMs: 2000 }, log);
  cleanupFor(t).after(() => bus.close());
  const js = new JetStreamAccess(bus, JS_OPTIONS, log);
  cleanupFor(t).after(() => js.close());
  await js.start([STREAM], BUCKET);
  return js;
}

describe('a page read whose pull this side gave up on', () => {
  it('reads the page whole from where it was, whether deliveries were lost at its end or before more pending', async (t) => {
    const nats = await startNatsServer(t);
    const proxy = await startHoldingProxy(t, nats.port, HOLD_MS);
    const js = await accessThrough(t, proxy.port);
    const few: number[] = [];
    const many: number[] = [];
    for (let i = 0; i < 1210; i++) {
      const toFew = i % 121 === 0;
      const { seq } = await js.publish(toFew ? 't.ev.hub.few' : 't.ev.hub.many', Buffer.from(String(i)), `id-${i}`);
      (toFew ? few : many).push(seq);
    }
    assert.deepEqual([few.length, many.length], [10, 1200]);
    const started = performance.now();
    // The ten in one pull, all delivered and lost: nothing pending after. The 1,200 in pulls of at most 1,000:
    // the first lost, 200 pending after.
    const [fewPage, manyPage] = await Promise.all([
      js.read(STREAM.name, { fromSeq: 1, subject: 't.ev.hub.few', limit: 100, timeoutMs: READ_TIMEOUT_MS }),
      js.read(STREAM.name, { fromSeq: 1, subject: 't.ev.hub.many', limit: 2000, timeoutMs: READ_TIMEOUT_MS }),
    ]);
    const heldSince = proxy.heldSince();
    assert.ok(heldSince !== undefined && heldSince >= started, 'the proxy held the answers to the pull requests');
    assert.ok(performance.now() - heldSince >= HOLD_MS - 100, 'the pages were read after the hold');
    assert.deepEqual(fewPage.map((m) => m.seq), few);
    assert.deepEqual(manyPage.map((m) => m.seq), many);
    assert.deepEqual(manyPage.slice(0, 3).map((m) => Buffer.from(m.data).toString()), ['1', '2', '3']);
  });

  it('reads the page whole when a pull ended with its first deliveries and lost the last ones', async (t) => {
    const nats = await startNatsServer(t);
    // The first 4 deliveries of the first pull come at once, the other 6 after the hold (past the pull's wait).
    const proxy = await startHoldingProxy(t, nats.port, HOLD_MS, 4);
    const js = await accessThrough(t, proxy.port);
    const seqs: number[] = [];
    for (let i = 0; i < 10; i++) seqs.push((await js.publish('t.ev.hub.few', Buffer.from(String(i)), `id-${i}`)).seq);
    const started = performance.now();
    // The pull gives up 6 s in with 4 messages, the consumer counting nothing pending. Before, the next pull then
    // waited out its expiry (until the read's deadline) for messages the consumer had already sent, and the read
    // failed ('the stream did not answer in time') though the loss was known when the first pull gave up.
    const page = await js.read(STREAM.name, { fromSeq: 1, limit: 100, timeoutMs: READ_TIMEOUT_MS });
    assert.ok(proxy.heldSince() !== undefined, 'the proxy held the answers to the pull request');
    assert.deepEqual(page.map((m) => m.seq), seqs);
    assert.deepEqual(page.map((m) => Buffer.from(m.data).toString()), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    assert.ok(performance.now() - started < READ_TIMEOUT_MS, `read in ${Math.round(performance.now() - started)} ms`);
  });
});
