// A reliable session of a durable (JetStream) hub taken over after its edge
// shut down, with more of the hub's stream to replay than one take's bound
// (bus.jetstream.publishTimeoutMs + bus.requestTimeoutMs) reads, while events
// go on being published. The taking edge's page reads are slowed (each waits
// READ_DELAY_MS first), as a loaded JetStream slows them. Before, a replay
// read pages until one ended where the follower was when it came back, which
// under the flow none did (each read let ~40 more events in), and it was cut
// off at the take's bound however near it was: every try was answered 1013
// SessionUnavailable and the next had more to read. A chaos soak (3 NATS
// nodes, 3 edges behind haproxy, 24 SDK subscribers, 150-200 events/s) saw
// the sessions of an edge shut down or killed deferred so for 20-76 s; past
// 120 s a released session's checkpoint expires and the client starts afresh.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { edgeInProcess } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, PLAIN, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';

/** Events published while no edge holds the session: four replay pages of 1,000 (session-take.ts reads the stream so). */
const BACKLOG = 3500;
/** Each page read of the taking edge waits this long first: four take 1.6 s, the take's deadline is 1 s. */
const READ_DELAY_MS = 400;

describe('a durable session whose replay takes longer than one take\'s deadline', () => {
  it('is taken, its replay going on while each page gains on the live flow (before: 1013 at every try)', async (t) => {
    const nats = await startNatsServer(t);
    // A take's deadline: publishTimeoutMs + requestTimeoutMs = 1 s.
    const extra = { bus: { requestTimeoutMs: 500, jetstream: { storage: 'memory', publishTimeoutMs: 500 } } };
    const a = await edgeInProcess(t, 'edge-a', nats.url, extra);
    const b = await edgeInProcess(t, 'edge-b', nats.url, extra);
    await until(() => a.pubsub.followsStreams() && b.pubsub.followsStreams(), 20000, 'both edges to read the hub stream');

    const reader = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'reader', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await reader.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await reader.request({ type: 'joinGroup', group: 'g', ackId: 1 })).success, true);
    const writer = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'writer', roles: ['webpubsub.sendToGroup'] }), PLAIN, t);
    const send = (data: string, ackId?: number) => writer.send({ type: 'sendToGroup', group: 'g', dataType: 'text', data, ...(ackId === undefined ? {} : { ackId }) });
    send('e-0', 1);
    await writer.waitFor((m) => m.type === 'ack' && m.ackId === 1);
    const first = await reader.waitFor((m) => m.type === 'message' && m.data === 'e-0');
    reader.send({ type: 'sequenceAck', sequenceId: first.sequenceId });
    const held = a.pubsub.hub(HUB)!.local.connections.get(connected.connectionId)!;
    await until(() => held.session!.unacknowledged === 0, 5000, 'the acknowledgement applied');

    // A's graceful shutdown: the client is told 1012 and the session's checkpoint written for another edge to take.
    await a.close();
    assert.equal((await reader.closed).code, 1012);

    // Published while no edge holds the session, in order (one connection's sends are stored in the order sent).
    for (let i = 1; i < BACKLOG; i++) send(`e-${i}`);
    send(`e-${BACKLOG}`, 2);
    await writer.waitFor((m) => m.type === 'ack' && m.ackId === 2, 30000, 'the backlog stored');

    const js = b.jetstream!;
    const read = js.read.bind(js);
    let reads = 0;
    js.read = async (stream, options) => {
      reads++;
      await new Promise((r) => setTimeout(r, READ_DELAY_MS));
      return read(stream, options);
    };
    // Events go on while the session is taken (about 100 a second), as the soak's publisher did.
    let flowed = 0;
    const flow = setInterval(() => {
      for (let i = 0; i < 5; i++) send(`f-${++flowed}`);
    }, 50);
    t.after(() => clearInterval(flow));

    const tries: string[] = [];
    let moved: RawPubSubClient | undefined;
    for (let attempt = 1; attempt <= 3 && !moved; attempt++) {
      const client = await RawPubSubClient.connect(`${b.url.replace('http', 'ws')}/client/hubs/${HUB}?${recoveryQuery(connected.connectionId, connected.reconnectionToken).slice(1)}`, RELIABLE, t);
      const system = await client.waitFor((m) => m.type === 'system', 20000, 'connected or disconnected');
      if (system.event === 'connected') {
        moved = client;
        break;
      }
      const closed = await client.closed;
      tries.push(`${closed.code} ${closed.reason}: ${system.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    clearInterval(flow);
    assert.ok(moved, `every try was refused: ${tries.join('; ')}`);
    // A try may be told to try again at the recovery's answer bound (3 x requestTimeoutMs + publishTimeoutMs, 2 s
    // here) while its take reads on (a loaded machine); the next try finds the session that take got, here.
    assert.ok(tries.every((t) => t.startsWith('1013 ')), `refused otherwise than 'try again': ${tries.join('; ')}`);
    assert.ok(reads >= 4, `the replay read ${reads} pages`);

    // Every event after the acknowledged one, once, in the order stored, ids going on from 2: the backlog, then the flow.
    const last = `f-${flowed}`;
    send('end', 3);
    await writer.waitFor((m) => m.type === 'ack' && m.ackId === 3, 10000, 'the last event stored');
    let acked = 0;
    const deadline = Date.now() + 30000;
    for (;;) {
      const data = moved.dataMessages();
      if (data.some((m) => m.data === 'end')) break;
      const highest = Math.max(0, ...data.map((m) => m.sequenceId));
      if (highest > acked) {
        moved.send({ type: 'sequenceAck', sequenceId: highest });
        acked = highest;
      }
      assert.ok(Date.now() < deadline, `${data.length} events arrived, the last ${JSON.stringify(data.at(-1))}`);
      await moved.waitFor((m) => m.type === 'message' && m.sequenceId > acked, Math.max(1, deadline - Date.now()), 'more events').catch(() => undefined);
    }
    const data = moved.dataMessages();
    const expected = [...Array.from({ length: BACKLOG }, (_, i) => `e-${i + 1}`), ...Array.from({ length: flowed }, (_, i) => `f-${i + 1}`), 'end'];
    assert.equal(expected.at(-2), flowed > 0 ? last : `e-${BACKLOG}`);
    assert.deepEqual(
      data.map((m) => m.sequenceId),
      expected.map((_, i) => i + 2),
      'sequence ids going on from the acknowledged one, each once',
    );
    assert.deepEqual(data.map((m) => m.data), expected);
  });
});
