// A page of a durable hub's stream with a hole in it: the stream's limits dropped events while the page was read.
// A page read whose pull this side gave up on (a loaded edge) reads the rest again from where it was, with a new
// consumer (src/bus/stream-reader.ts `read`); events the stream dropped meanwhile are not in it, and the page goes on
// after them: here [1..4, 7..10] of a stream that keeps its last 10 events, 6 more stored during the hold. A session
// catching up (session-catch-up.ts) or replayed by a take (session-take.ts) that reads such a page must end as one
// whose next events the stream no longer holds (StreamGap, a take refused), not number the events after the hole
// as if the dropped ones never were. Before, the catch-up looked at a page's first event only, and the replay at
// none: both numbered 1..4 and 7..16 without a word.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { JetStreamAccess } from '../../src/bus/jetstream.ts';
import { encodeEdgeMessage, type PsSend } from '../../src/bus/messages.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { PubSubConnection, RELIABLE_PROTOCOL } from '../../src/pubsub/pubsub-connection.ts';
import { SessionCatchUps, type CatchUpStream } from '../../src/pubsub/session-catch-up.ts';
import { SessionTakes } from '../../src/pubsub/session-take.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHoldingProxy } from '../helpers/holding-proxy.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { KEEPS_NOTHING_RECENT, testConnectionLimits } from '../helpers/pubsub.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const log = createLogger('silent', 'test');
/** The hub's stream keeps its last 10 events. */
const STREAM = { name: 'T_hub', subjects: ['t.ev.hub.>'], maxAgeMs: 60_000, maxMessages: 10, maxBytes: -1 };
const BUCKET = { name: 'T_sessions', ttlMs: 60_000 };
/** A read of 10 s: its first pull waits 5 s and 1 s more; the proxy holds the deliveries after the first 4 for 7 s. */
const READ_TIMEOUT_MS = 10_000;
const HOLD_MS = 7_000;

const event = (n: number): Uint8Array => {
  const send: PsSend = { op: 'ps.send', origin: 'edge-b', hub: 'chat', mid: `edge-b:${n}`, at: Date.now(), target: { kind: 'all' }, message: { from: 'server', dataType: 'text' } };
  return encodeEdgeMessage(send, Buffer.from(JSON.stringify(`e${n}`)));
};

/**
 * A hub stream of events 1..10 read through a proxy that passes the first 4 deliveries of the first pull and holds
 * the rest; `position` is where this edge's follower would be. `dropDuringHold` stores events 11..16 past the proxy
 * once it holds: the stream drops 1..6, and the page read comes back [1..4, 7..10].
 */
async function streamWithHole(t: TestContext) {
  const nats = await startNatsServer(t);
  const proxy = await startHoldingProxy(t, nats.port, HOLD_MS, 4);
  const bus = new NatsBus({ servers: [`nats://127.0.0.1:${proxy.port}`], randomizeServers: false, name: 'test', reconnectTimeWaitMs: 100, pingIntervalMs: 20_000, flushTimeoutMs: 2000 }, log);
  cleanupFor(t).after(() => bus.close());
  const js = new JetStreamAccess(bus, { storage: 'memory', publishTimeoutMs: 3000, requestTimeoutMs: 10_000 }, log);
  cleanupFor(t).after(() => js.close());
  await js.start([STREAM], BUCKET);
  for (let n = 1; n <= 10; n++) await js.publish('t.ev.hub.all', event(n), `id-${n}`);
  const side = await connect({ servers: nats.url });
  cleanupFor(t).after(() => side.close());
  let position = 10;
  const stream: CatchUpStream = {
    get position() {
      return position;
    },
    started: true,
    // As StreamEvents.readRange reads a session's pages.
    readRange: (fromExclusive, toInclusive, timeoutMs) =>
      js.read(STREAM.name, { fromSeq: fromExclusive + 1, toSeq: toInclusive, limit: Math.min(toInclusive - fromExclusive, 1000), maxBytes: 8 * 1024 * 1024, timeoutMs }),
    firstSequence: async () => (await js.bounds(STREAM.name)).first,
    ...KEEPS_NOTHING_RECENT,
  };
  const dropDuringHold = async () => {
    await until(() => proxy.heldSince() !== undefined, 10_000, 'the first pull held');
    for (let n = 11; n <= 16; n++) await side.jetstream().publish('t.ev.hub.all', event(n));
    position = 16;
  };
  return { stream, dropDuringHold, bounds: () => side.jetstreamManager().then((m) => m.streams.info(STREAM.name)).then((i) => i.state) };
}

const reliable = () => new PubSubConnection('conn-1', 'chat', null, new ConnectionPermissions([]), RELIABLE_PROTOCOL, testConnectionLimits());

describe('a page of the hub stream with a hole the stream dropped while it was read', () => {
  it('a session catching up ends 1008 StreamGap at the hole, its events before it numbered', async (t) => {
    const { stream, dropDuringHold, bounds } = await streamWithHole(t);
    const connection = reliable();
    const session = connection.session!;
    session.behindAt = 0;
    const ended: string[] = [];
    const hub = { name: 'chat', key: 'chat', local: { connections: new Map([[connection.id, connection]]) }, flushSession() {} };
    const catchUps = new SessionCatchUps(hub as never, stream, {
      log: log as never,
      requestTimeoutMs: READ_TIMEOUT_MS,
      history: false,
      endConnection: (_connection, code) => {
        ended.push(code);
        connection.ended = true;
      },
    });
    t.after(() => catchUps.close());
    catchUps.resume(connection);
    await dropDuringHold();
    assert.equal((await bounds()).first_seq, 7, 'the stream dropped events 1..6');
    await until(() => ended.length > 0 || session.behindAt === undefined, 30_000, 'the catch-up to end or catch up');
    assert.deepEqual({ ended, numbered: session.lastSequenceId }, { ended: ['StreamGap'], numbered: 4 });
  });

  it("a take's replay is refused at the hole, the stream no longer holding the events after it", async (t) => {
    const { stream, dropDuringHold, bounds } = await streamWithHole(t);
    const connection = reliable();
    let adopted = false;
    const hub = { name: 'chat', key: 'chat', local: { adopt: () => (adopted = true) } };
    const takes = new SessionTakes(hub as never, stream, {} as never, { nodeId: 'edge-a', log, history: false } as never);
    const replay = (takes as unknown as { replay(c: PubSubConnection, from: number, claimSeq: number, deadline: number): Promise<unknown> }).replay.bind(takes);
    const replayed = replay(connection, 0, 0, Date.now() + 20_000);
    await dropDuringHold();
    assert.equal((await bounds()).first_seq, 7, 'the stream dropped events 1..6');
    const outcome = await withTimeout(replayed, 30_000, 'the replay');
    assert.deepEqual({ outcome, adopted, numbered: connection.session!.lastSequenceId }, {
      outcome: 'the stream no longer holds the events after the checkpoint (it starts at 7, the replay is at 4)',
      adopted: false,
      numbered: 4,
    });
  });
});
