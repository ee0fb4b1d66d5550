// A reliable session of a durable (JetStream) hub receiving more than its
// buffer (limits.sessionBufferMessages) before its client acknowledges: it
// falls behind the live flow and reads on from the hub's stream as its client
// acknowledges (src/pubsub/session-catch-up.ts), with the groups it had at
// each event, and numbered as the live flow would have numbered it. Before,
// it was closed 1008 SessionBufferFull (a chaos soak: every reliable session
// on an edge whose stream reader had stalled, when it read on), and a take of
// a session further behind than its buffer was refused (the session lost).
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { Cleanup } from '../helpers/cleanup.ts';
import { startEdge, waitOnRoster, type Edge } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { deleteHubStream, startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

const BUFFER = 10;

/** Sends `texts` to `group` in order, each stored before the next. */
async function publish(service: WebPubSubServiceClient, group: string, texts: string[]): Promise<void> {
  for (const text of texts) await service.group(group).sendToAll(text, { contentType: 'text/plain' });
}

const numbered = (prefix: string, from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}-${from + i}`);

/**
 * Acknowledges what the client has as it arrives (the highest sequence id, as the SDK does) until it has `count`
 * distinct ids; the data by sequence id. A socket closed meanwhile fails, with its close code.
 */
async function readAcking(client: RawPubSubClient, count: number, ms = 20000): Promise<Map<number, string>> {
  const deadline = Date.now() + ms;
  let acked = 0;
  for (;;) {
    const byId = new Map<number, string>();
    for (const m of client.dataMessages()) {
      const earlier = byId.get(m.sequenceId);
      // The same id twice (resent after a move) must be the same event.
      assert.ok(earlier === undefined || earlier === m.data, `sequence id ${m.sequenceId} was ${earlier}, then ${m.data}`);
      byId.set(m.sequenceId, m.data);
    }
    if (byId.size >= count) return byId;
    const highest = Math.max(0, ...byId.keys());
    if (highest > acked) {
      client.send({ type: 'sequenceAck', sequenceId: highest });
      acked = highest;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`${byId.size} of ${count} events arrived; the socket ${client.ws.readyState === client.ws.OPEN ? 'is open' : `closed ${JSON.stringify(await client.closed)}`}`);
    await client.waitFor((m) => m.type === 'message' && m.sequenceId > acked, left, 'more events').catch(() => undefined);
  }
}

/** The data by sequence id 1, 2, 3...: the ids dense from 1. */
function inOrder(byId: Map<number, string>): string[] {
  const ids = [...byId.keys()].sort((x, y) => x - y);
  assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => i + 1), 'sequence ids dense from 1');
  return ids.map((id) => byId.get(id)!);
}

async function sessionsBehind(edge: Edge): Promise<number> {
  const r = await httpRequest(`${edge.url}/$relay/metrics`);
  assert.equal(r.status, 200, r.body.toString());
  const line = r.body.toString().split('\n').find((l) => l.startsWith(`edge_relay_pubsub_sessions_behind{node="${edge.name}"} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

describe('a durable session receiving more than its buffer before acknowledging', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    const config = {
      limits: { sessionBufferMessages: BUFFER },
      metrics: { requireManage: false },
      timeouts: { sessionRetainMs: 5000 },
      bus: { requestTimeoutMs: 1000 },
      pubsub: {
        hubs: [
          { name: HUB, accessKey: HUB_KEY },
          // Its stream keeps its last 14 messages only.
          { name: OTHER_HUB, accessKey: OTHER_HUB_KEY, history: { maxMessages: 14 } },
        ],
      },
    };
    [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(cleanup, name, [nats.url], config)));
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
  });
  after(() => cleanup.run());

  async function reliableOn(edge: Edge, t: TestContext, hub = HUB, key = HUB_KEY) {
    const client = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'reader', roles: ['webpubsub.joinLeaveGroup'], hub, key }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    return { client, id: connected.connectionId as string, token: connected.reconnectionToken as string };
  }

  async function recoverOn(edge: Edge, session: { client: RawPubSubClient; id: string; token: string }, t: TestContext, hub = HUB) {
    session.client.ws.terminate();
    const moved = await RawPubSubClient.connect(`${edge.url.replace('http', 'ws')}/client/hubs/${hub}?${recoveryQuery(session.id, session.token).slice(1)}`, RELIABLE, t);
    const system = await moved.waitFor((m) => m.type === 'system', 10000);
    assert.equal(system.event, 'connected', JSON.stringify(system));
    return moved;
  }

  it('falls behind and reads on from the stream, with the groups it had at each event (before: closed 1008 SessionBufferFull)', async (t) => {
    const { client, id } = await reliableOn(a, t);
    assert.equal((await client.request({ type: 'joinGroup', group: 'g', ackId: 1 })).success, true);
    const service = serviceClient(b);
    await publish(service, 'g', numbered('g', 1, 25));
    await client.waitFor(() => client.dataMessages().length >= BUFFER, 5000, 'a full buffer');
    // Left g and joined h while behind: g's later events are not its; h's are.
    await service.group('g').removeConnection(id);
    await service.group('h').addConnection(id);
    await publish(service, 'g', numbered('g', 26, 30));
    await publish(service, 'h', numbered('h', 1, 5));
    assert.equal(client.dataMessages().length, BUFFER, 'nothing past the buffer before an acknowledgement');
    assert.equal(await sessionsBehind(a), 1);
    const data = inOrder(await readAcking(client, 30));
    assert.deepEqual(data, [...numbered('g', 1, 25), ...numbered('h', 1, 5)]);
    // Caught up: live again, numbered on.
    await publish(service, 'h', ['h-6']);
    assert.deepEqual(inOrder(await readAcking(client, 31)).slice(30), ['h-6']);
    assert.equal(await sessionsBehind(a), 0);
    assert.equal(client.ws.readyState, client.ws.OPEN);
  });

  it('a session further behind than its buffer moves to another edge and reads on there (before: the take was refused)', async (t) => {
    const session = await reliableOn(a, t);
    assert.equal((await session.client.request({ type: 'joinGroup', group: 'm', ackId: 1 })).success, true);
    session.client.ws.terminate();
    await publish(serviceClient(a), 'm', numbered('m', 1, 25));
    const moved = await recoverOn(b, session, t);
    assert.deepEqual(inOrder(await readAcking(moved, 25)), numbered('m', 1, 25));
  });

  it('moving while behind, the next edge numbers each event as the first did', async (t) => {
    const session = await reliableOn(a, t);
    assert.equal((await session.client.request({ type: 'joinGroup', group: 'n', ackId: 1 })).success, true);
    await publish(serviceClient(a), 'n', numbered('n', 1, 25));
    await session.client.waitFor(() => session.client.dataMessages().length >= BUFFER, 5000, 'a full buffer');
    // Half acknowledged: the session reads on up to a full buffer again (ids 11-15), then the client moves.
    session.client.send({ type: 'sequenceAck', sequenceId: BUFFER / 2 });
    await session.client.waitFor((m) => m.type === 'message' && m.sequenceId === BUFFER + BUFFER / 2, 5000, 'the events read on');
    const moved = await recoverOn(b, session, t);
    // The next edge sends what was not acknowledged (ids 6 on), then the rest.
    const byId = await readAcking(moved, 25 - BUFFER / 2);
    for (const [sequenceId, data] of await readAcking(session.client, 0)) {
      if (byId.has(sequenceId)) assert.equal(byId.get(sequenceId), data, `sequence id ${sequenceId}`);
      else byId.set(sequenceId, data);
    }
    assert.deepEqual(inOrder(byId), numbered('n', 1, 25));
  });

  it('a session behind whose held events all expire unsent reads on when its client comes back (before: stuck behind for good)', async (t) => {
    const session = await reliableOn(a, t);
    assert.equal((await session.client.request({ type: 'joinGroup', group: 'ttl', ackId: 1 })).success, true);
    session.client.ws.terminate();
    const service = serviceClient(b);
    // More than its buffer, each to live 1 s: the session falls behind with a full buffer its client never gets.
    for (const text of numbered('ttl', 1, 15)) await service.group('ttl').sendToAll(text, { contentType: 'text/plain', messageTtlSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1500));
    await publish(service, 'ttl', ['late']);
    // Its client comes back after they expired: nothing of them is sent, so it has nothing to acknowledge.
    const back = await recoverOn(a, session, t);
    const late = await back.waitFor((m) => m.type === 'message', 5000, "the event after the expired ones").catch((err: Error) => err);
    assert.ok(!(late instanceof Error), `${late instanceof Error ? late.message : ''}; sessions behind on edge-a: ${await sessionsBehind(a)}`);
    assert.equal(late.data, 'late');
    assert.deepEqual(back.dataMessages().map((m) => m.data), ['late']);
  });

  it('ends 1008 StreamGap when neither the stream nor the edge holds what it has still to read', async (t) => {
    // Taken over behind (on edge B, which kept none of the hub's messages from before), then the stream (its last
    // 14 messages) drops what it had still to read.
    const session = await reliableOn(a, t, OTHER_HUB, OTHER_HUB_KEY);
    assert.equal((await session.client.request({ type: 'joinGroup', group: 'g', ackId: 1 })).success, true);
    session.client.ws.terminate();
    const service = new WebPubSubServiceClient(`Endpoint=${a.url};AccessKey=${OTHER_HUB_KEY};Version=1.0;`, OTHER_HUB, { allowInsecureConnection: true });
    await publish(service, 'g', numbered('g', 1, BUFFER + 1));
    const client = await recoverOn(b, session, t, OTHER_HUB);
    await client.waitFor(() => client.dataMessages().length >= BUFFER, 5000, 'a full buffer');
    await publish(service, 'g', numbered('g', BUFFER + 2, 30));
    client.send({ type: 'sequenceAck', sequenceId: BUFFER });
    const closed = await withTimeout(client.closed, 10000, 'the session to end');
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, 'StreamGap');
    assert.deepEqual(client.dataMessages().map((m) => m.data), numbered('g', 1, BUFFER));
  });

  it('within what its edge keeps of the stream, reads on there though the stream dropped it', async (t) => {
    const { client } = await reliableOn(a, t, OTHER_HUB, OTHER_HUB_KEY);
    assert.equal((await client.request({ type: 'joinGroup', group: 'kept', ackId: 1 })).success, true);
    const service = new WebPubSubServiceClient(`Endpoint=${a.url};AccessKey=${OTHER_HUB_KEY};Version=1.0;`, OTHER_HUB, { allowInsecureConnection: true });
    await publish(service, 'kept', numbered('k', 1, 30));
    assert.deepEqual(inOrder(await readAcking(client, 30)), numbered('k', 1, 30));
  });
});

describe("Microsoft's client on a durable hub receiving bursts larger than its session's buffer", () => {
  const cleanup = new Cleanup();
  let edge: Edge;
  before(async () => {
    const nats = await startNatsServer(cleanup);
    edge = await startEdge(cleanup, 'edge-sdk', [nats.url], { limits: { sessionBufferMessages: 100 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } });
  });
  after(() => cleanup.run());

  it('gets every event once, in order, on its first connection (before: closed 1008 SessionBufferFull, a new connection without the rest)', async (t) => {
    const { client, connectionIds, groupData } = await startClient(t, accessUrl(edge.url, { userId: 'sdk', roles: ['webpubsub.joinLeaveGroup'] }));
    await client.joinGroup('burst');
    // Four publishers at once, 100 events each: far more than 100 reach the session between two of the client's
    // acknowledgements (about one a second).
    const service = serviceClient(edge);
    await Promise.all([0, 1, 2, 3].map((p) => publish(service, 'burst', numbered(`p${p}`, 1, 100))));
    await until(() => groupData.length >= 400, 30000, `400 events (${groupData.length} so far, connections ${connectionIds.join(', ')})`);
    assert.equal(groupData.length, 400);
    assert.deepEqual(connectionIds.length, 1, 'one connection throughout');
    const data: string[] = groupData.map((m) => m.data);
    for (let p = 0; p < 4; p++) assert.deepEqual(data.filter((d) => d.startsWith(`p${p}-`)), numbered(`p${p}`, 1, 100));
  });
});

describe("a durable session behind the live flow when its hub's stream is made again", () => {
  it('ends 1008 StreamGap: what it had still to read went with the old stream (before: it read on in the new one, or went live, its ids without a hole)', async (t) => {
    const nats = await startNatsServer(t);
    const edge = await startEdge(t, 'edge-reset', [nats.url], { limits: { sessionBufferMessages: BUFFER }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } });
    const roles = ['webpubsub.joinLeaveGroup'];
    const client = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'reader', roles }), RELIABLE, t);
    await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await client.request({ type: 'joinGroup', group: 'g', ackId: 1 })).success, true);
    // A plain member of the group shows what the edge delivers live.
    const watcher = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'watcher', roles }), PLAIN, t);
    assert.equal((await watcher.request({ type: 'joinGroup', group: 'g', ackId: 1 })).success, true);
    const service = serviceClient(edge);
    await publish(service, 'g', numbered('old', 1, 25));
    await client.waitFor(() => client.dataMessages().length >= BUFFER, 5000, 'a full buffer');
    // The stream goes (an operator's delete; a memory-storage server restarted): the edge makes it again and reads it from its start.
    await deleteHubStream(t, nats.url, HUB);
    let probes = 0;
    await untilAnswered(
      async () => {
        await service.group('g').sendToAll(`probe-${++probes}`, { contentType: 'text/plain' }).catch(() => undefined);
        return watcher.dataMessages().some((m) => String(m.data).startsWith('probe-'));
      },
      15000,
      'the stream made again and read',
    );
    // The new stream passes where the session is behind.
    await publish(service, 'g', numbered('new', 1, 20));
    await watcher.waitFor((m) => m.type === 'message' && m.data === 'new-20', 5000, 'the new events live');
    client.send({ type: 'sequenceAck', sequenceId: BUFFER });
    const closed = await withTimeout(client.closed, 5000, 'the session to end').catch(() => undefined);
    assert.deepEqual(closed, { code: 1008, reason: 'StreamGap' }, `it went on with ${JSON.stringify(client.dataMessages().slice(BUFFER).map((m) => [m.sequenceId, m.data]))}`);
  });
});

describe('a durable session behind the live flow while events keep coming', () => {
  it('catches up and takes live events again (before: each read of the stream took long enough for more to come, and it stayed behind until they stopped)', async (t) => {
    const nats = await startNatsServer(t);
    // Edge A's requests reach NATS 150 ms late (a slow link one way): a read of the stream takes a second or so.
    const link = await CuttableProxy.start(nats.port, t);
    const config = { limits: { sessionBufferMessages: BUFFER }, metrics: { requireManage: false }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
    const [a, b] = await Promise.all([startEdge(t, 'edge-slow', [`nats://127.0.0.1:${link.port}`], config), startEdge(t, 'edge-b', [nats.url], config)]);
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'reader', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await client.request({ type: 'joinGroup', group: 'steady', ackId: 1 })).success, true);
    const service = serviceClient(b);
    await publish(service, 'steady', numbered('s', 1, 25));
    await client.waitFor(() => client.dataMessages().length >= BUFFER, 5000, 'a full buffer');
    assert.equal(await sessionsBehind(a), 1);
    link.hold(150);
    // Events keep coming (about 100 a second) while the client acknowledges each as it arrives.
    let sent = 25;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        await publish(service, 'steady', [`s-${++sent}`]);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    t.after(() => {
      publishing = false;
      return publisher.catch(() => undefined);
    });
    let acked = 0;
    const ack = () => {
      const highest = Math.max(0, ...client.dataMessages().map((m) => m.sequenceId));
      if (highest > acked) client.send({ type: 'sequenceAck', sequenceId: (acked = highest) });
    };
    client.ws.on('message', ack);
    ack();
    let behind = 1;
    for (const deadline = Date.now() + 8000; behind !== 0 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
      behind = await sessionsBehind(a);
    }
    const sentMeanwhile = sent - 25;
    publishing = false;
    await publisher;
    link.hold(0);
    assert.equal(behind, 0, `still behind after 8 s while ${sentMeanwhile} more events came`);
    assert.deepEqual(inOrder(await readAcking(client, sent)), numbered('s', 1, sent));
  });
});
