// A REST close of a durable hub's connection whose edge was killed (SIGKILL):
// no edge holds its reliable session, which lives on only as its checkpoint,
// for any edge to take. Azure ends a closed connection; so does the relay when
// an edge holds it (its checkpoint is written `ended`). Before (found by
// review): the close was answered 204, no edge acted on it, and the client's
// recovery on another edge got `connected`, its groups and all (an app that
// closed a banned user's connection while that user's edge was down let them
// back in). A REST grant, revoke or check there is 503 SessionUnavailable
// until the client recovers the session (before: a revoke was 204, and the
// recovered session kept the permission; a check was 404, false, for a
// session holding the permission). A REST close of a user's connections, a
// group's or the hub's reaches such a session too (found by review: the close
// was answered 204 and its client recovered the session on another edge, its
// groups and all): the close is stored in the hub's stream, and the edge that
// takes the session from its checkpoint ends it there (1008 ClosedByServer,
// the close's reason; the event handler told `disconnected`) instead of
// resuming it. A close of the one connection no edge holds is stored so too
// (before, found by review: its checkpoint was written ended, the client was
// refused 1008 SessionNotFound with a generic message, the handler never told).
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import type { StreamEvents } from '../../src/pubsub/stream-events.ts';
import { edgeOverrides, startEdge, waitOnRoster, type Edge } from '../helpers/cluster.ts';
import { eventHandlerApp, serveApp } from '../helpers/event-handler-app.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, PLAIN, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

/** Two edges on one nats-server, each seeing the other, whose sessions are kept 5 s. */
async function twoEdges(cleanup: Cleanup): Promise<[Edge, Edge]> {
  const nats = await startNatsServer(cleanup);
  const hubs = { timeouts: { sessionRetainMs: 5000 }, bus: { requestTimeoutMs: 1000 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
  const [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(cleanup, name, [nats.url], hubs)));
  await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
  return [a, b];
}

describe('a REST close of a durable session whose edge was killed', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge;
  before(async () => {
    [a, b] = await twoEdges(cleanup);
  });
  after(() => cleanup.run());

  it("ends the session: its recovery on another edge is told the close's reason, 1008 ClosedByServer (before: connected, in its groups; then 1008 SessionNotFound, a generic message)", async (t) => {
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'banned', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    const token = connected.reconnectionToken as string;
    assert.equal((await client.request({ type: 'joinGroup', group: 'private', ackId: 1 })).success, true);
    await a.kill();
    client.ws.terminate();
    await serviceClient(b).closeConnection(id, { reason: 'banned' });
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(token)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    const system = await recovering.waitFor((m) => m.type === 'system', 15000);
    assert.equal(system.event, 'disconnected', 'the closed session was recovered');
    assert.equal(system.message, 'banned', "told the close's reason");
    assert.deepEqual(await recovering.closed, { code: 1008, reason: 'ClosedByServer' });
  });
});

describe('a REST permission change of a durable session whose edge was killed', () => {
  const cleanup = new Cleanup();
  let a: Edge, b: Edge;
  before(async () => {
    [a, b] = await twoEdges(cleanup);
  });
  after(() => cleanup.run());

  it('is answered 503 SessionUnavailable until its client recovers the session, then made (before: a revoke was 204, and the recovered session kept the permission; a check 404, false)', async (t) => {
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'mallory', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    const token = connected.reconnectionToken as string;
    await a.kill();
    client.ws.terminate();
    const unavailable = (err: { statusCode?: number; code?: string }) => err.statusCode === 503 && err.code === 'SessionUnavailable';
    const once = serviceClient(b, { maxRetries: 0 });
    await assert.rejects(once.revokePermission(id, 'joinLeaveGroup'), unavailable, 'a revoke no edge could make');
    await assert.rejects(once.grantPermission(id, 'sendToGroup', { targetName: 'x' }), unavailable, 'a grant no edge could make (before: 404)');
    // Its check is 503 too: no edge can tell now whether the session still is, and holds the permission (before: 404,
    // hasPermission false, for a session holding it). Asked again once it is recovered (below).
    // A HEAD answer has no body: the SDK's error carries the code in its response's x-ms-error-code header only.
    const uncheckable = (err: { statusCode?: number; response?: { headers: { get(name: string): string | undefined } } }) =>
      err.statusCode === 503 && err.response?.headers.get('x-ms-error-code') === 'SessionUnavailable';
    await assert.rejects(once.hasPermission(id, 'joinLeaveGroup'), uncheckable, 'a check no edge could answer (before: false)');
    // The SDK tries a 503 again (three times by default): the revoke lands once the client is back.
    const revoking = serviceClient(b).revokePermission(id, 'joinLeaveGroup');
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(token)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    assert.equal((await recovering.waitFor((m) => m.type === 'system', 15000)).event, 'connected');
    await revoking;
    assert.equal(await once.hasPermission(id, 'joinLeaveGroup'), false, 'the check of the recovered session');
    assert.equal((await recovering.request({ type: 'joinGroup', group: 'private', ackId: 1 })).error?.name, 'Forbidden', 'the revoked permission came back with the session');
  });
});

describe("a REST close of a user's, a group's or the hub's connections, durable sessions among them whose edge was killed", () => {
  const cleanup = new Cleanup();
  const hubs = { timeouts: { sessionRetainMs: 10000 }, bus: { requestTimeoutMs: 1000 }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
  let natsUrl: string;
  let b: Edge;
  before(async () => {
    natsUrl = (await startNatsServer(cleanup)).url;
    b = await startEdge(cleanup, 'edge-b', [natsUrl], hubs);
  });
  after(() => cleanup.run());

  /** Reliable clients on a new edge, each in its groups; then the edge is killed and their sockets dropped. */
  async function sessionsOnKilledEdge(t: TestContext, name: string, clients: { userId: string; groups: string[] }[]) {
    const a = await startEdge(t, name, [natsUrl], hubs);
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
    const sessions: { id: string; token: string; client: RawPubSubClient }[] = [];
    for (const { userId, groups } of clients) {
      const client = await RawPubSubClient.connect(accessUrl(a.url, { userId, roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
      const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
      for (const [i, group] of groups.entries()) assert.equal((await client.request({ type: 'joinGroup', group, ackId: i + 1 })).success, true);
      sessions.push({ id: connected.connectionId as string, token: connected.reconnectionToken as string, client });
    }
    await a.kill();
    for (const s of sessions) s.client.ws.terminate();
    return sessions;
  }

  /** The first system message a recovery of `session` on edge b gets, and how its socket closed when refused. */
  async function recover(t: TestContext, session: { id: string; token: string }) {
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(session.id)}&awps_reconnection_token=${encodeURIComponent(session.token)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    const system = await recovering.waitFor((m) => m.type === 'system', 15000);
    return { system, recovering };
  }

  async function assertClosed(t: TestContext, session: { id: string; token: string }, reason: string, what: string) {
    const { system, recovering } = await recover(t, session);
    assert.equal(system.event, 'disconnected', `${what}: the closed session was recovered`);
    assert.equal(system.message, reason, `${what}: told the close's reason`);
    assert.deepEqual(await recovering.closed, { code: 1008, reason: 'ClosedByServer' }, what);
  }

  async function assertRecovered(t: TestContext, session: { id: string; token: string }, what: string) {
    const { system, recovering } = await recover(t, session);
    assert.equal(system.event, 'connected', `${what}: not recovered`);
    recovering.ws.close(1000);
  }

  it("closeUserConnections ends the user's sessions (before: recovered, in their groups); another user's is recovered", async (t) => {
    const [banned, other] = await sessionsOnKilledEdge(t, 'edge-a1', [
      { userId: 'banned', groups: ['private'] },
      { userId: 'other', groups: ['private'] },
    ]);
    await serviceClient(b).closeUserConnections('banned', { reason: 'banned user' });
    // A connection the user opens once the close is answered is after it in the stream: it stays (its join, stored
    // after the close, is applied where every edge has ended what the close named).
    const fresh = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'banned', roles: ['webpubsub.joinLeaveGroup'] }), RELIABLE, t);
    await fresh.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await fresh.request({ type: 'joinGroup', group: 'private', ackId: 1 })).success, true, 'a connection opened after the close');
    await assertClosed(t, banned, 'banned user', 'the user closed');
    await assertRecovered(t, other, 'another user');
    assert.equal(fresh.ws.readyState, fresh.ws.OPEN, 'the connection opened after the close was closed');
  });

  it("a group's closeAllConnections ends its members' sessions, by the groups they were in as the close was stored", async (t) => {
    const [member, left, outsider] = await sessionsOnKilledEdge(t, 'edge-a2', [
      { userId: 'm', groups: ['room'] },
      { userId: 'l', groups: ['room'] },
      { userId: 'o', groups: ['elsewhere'] },
    ]);
    // Out of the group before the close (a REST change stored after its checkpoint): not closed.
    await serviceClient(b).group('room').removeConnection(left.id);
    await serviceClient(b).group('room').closeAllConnections({ reason: 'room closed' });
    // Into the group after the close: not closed either.
    await serviceClient(b).group('room').addUser('o');
    await assertClosed(t, member, 'room closed', 'the member');
    await assertRecovered(t, left, 'a connection that left the group before the close');
    await assertRecovered(t, outsider, 'a connection that joined the group after the close');
  });

  it("the hub's closeAllConnections ends every session but those excluded", async (t) => {
    const [closed, kept] = await sessionsOnKilledEdge(t, 'edge-a3', [
      { userId: 'x', groups: [] },
      { userId: 'y', groups: [] },
    ]);
    // The SDK passes `excluded` on as the REST call's query (its options type names only `reason`).
    await serviceClient(b).closeAllConnections({ reason: 'maintenance', excluded: [kept.id] } as { reason: string });
    await assertClosed(t, closed, 'maintenance', 'a connection of the hub');
    await assertRecovered(t, kept, 'the excluded connection');
  });
});

describe("a group's close on a durable hub, the edge it came through slow to ask the others", () => {
  it('leaves a member that joined the group after the close in the stream (before: the direct ask, after the stored close was applied, ended it too)', async (t) => {
    const nats = await startNatsServer(t);
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url]));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url]));
    await until(() => a.jetstream?.state === 'ready' && b.jetstream?.state === 'ready', 20000, 'both edges with JetStream');
    await until(() => a.pubsub.hub(HUB)!.otherEdges().length > 0 && b.pubsub.hub(HUB)!.otherEdges().length > 0, 10000, 'each edge on the other one roster');
    const member = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'm' }), PLAIN, t);
    await member.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await member.request({ type: 'joinGroup', group: 'room' })).success, true);
    const later = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'l' }), PLAIN, t);
    await later.waitFor((m) => m.type === 'system' && m.event === 'connected');
    // A asks the other edges only once it applied the close itself: that is held back here until B has applied the
    // stored close and a join stored after it.
    const durableA = a.pubsub.hub(HUB)!.durable as StreamEvents;
    const reached = durableA.reached.bind(durableA);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    durableA.reached = async (at, ms) => {
      const done = await reached(at, ms);
      await held;
      return done;
    };
    t.after(() => release());
    const closing = serviceClient(a).group('room').closeAllConnections({ reason: 'room closed' });
    assert.equal((await withTimeout(member.closed, 5000, 'the member closed by the stored close')).code, 1008);
    // Stored after the close, applied on B before its ack.
    assert.equal((await later.request({ type: 'joinGroup', group: 'room' })).success, true);
    release();
    await closing;
    // B answered A's ask before the call returned; a round trip on the socket comes after what B did then.
    assert.equal((await later.request({ type: 'joinGroup', group: 'other' })).success, true, 'the member that joined after the close was closed');
    assert.equal(later.ws.readyState, later.ws.OPEN);
  });
});

/** Two edges on one nats-server, each seeing the other, whose sessions are kept 10 s, and the hub's event handler told `connected` and `disconnected`. */
async function twoEdgesWatched(t: TestContext): Promise<{ a: Edge; b: Edge; record: ReturnType<typeof eventHandlerApp>['record'] }> {
    const { app, record } = eventHandlerApp(HUB, HUB_KEY);
    const served = await serveApp(t, app);
    const nats = await startNatsServer(t);
    const hubs = {
      timeouts: { sessionRetainMs: 10000 },
      bus: { requestTimeoutMs: 1000 },
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: `${served.url}/api/webpubsub/hubs/{hub}/{event}`, systemEvents: ['connected', 'disconnected'] }] }] },
    };
    const [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(t, name, [nats.url], hubs)));
    await Promise.all([waitOnRoster(a, b), waitOnRoster(b, a)]);
    return { a, b, record };
}

describe("a REST close reaching a durable session no edge held, the hub's event handler listening", () => {
  it('tells the handler `disconnected` when the take ends the session (before: `connected` was its last word on the connection)', async (t) => {
    const { a, b, record } = await twoEdgesWatched(t);
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'x' }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    await until(() => record.connected.some((req) => req.context.connectionId === id), 5000, 'the connected event');
    await a.kill();
    client.ws.terminate();
    await serviceClient(b).closeAllConnections({ reason: 'maintenance' });
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(connected.reconnectionToken as string)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    assert.equal((await recovering.waitFor((m) => m.type === 'system', 15000)).event, 'disconnected', 'the closed session was recovered');
    assert.deepEqual(await recovering.closed, { code: 1008, reason: 'ClosedByServer' });
    await until(() => record.disconnected.some((req) => req.context.connectionId === id), 5000, 'the disconnected event of the closed session');
    assert.equal(record.disconnected.filter((req) => req.context.connectionId === id).length, 1);
    assert.equal(record.disconnected.find((req) => req.context.connectionId === id)!.reason, 'maintenance');
  });

  it("tells the handler `disconnected` once for a close of the one connection, held or not (before: a session no edge held ended in its checkpoint alone, and the handler was never told)", async (t) => {
    const { a, b, record } = await twoEdgesWatched(t);
    // One held on the edge that lives: closed as before, told once.
    const held = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'h' }), RELIABLE, t);
    const heldId = (await held.waitFor((m) => m.type === 'system' && m.event === 'connected')).connectionId as string;
    const client = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'x' }), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const id = connected.connectionId as string;
    await until(() => record.connected.some((req) => req.context.connectionId === id), 5000, 'the connected event');
    await a.kill();
    client.ws.terminate();
    await serviceClient(b).closeConnection(heldId, { reason: 'held' });
    assert.deepEqual(await withTimeout(held.closed, 5000, 'the held connection closed'), { code: 1008, reason: 'ClosedByServer' });
    await serviceClient(b).closeConnection(id, { reason: 'banned' });
    const url = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(id)}&awps_reconnection_token=${encodeURIComponent(connected.reconnectionToken as string)}`;
    const recovering = await RawPubSubClient.connect(url, RELIABLE, t);
    const system = await recovering.waitFor((m) => m.type === 'system', 15000);
    assert.equal(system.event, 'disconnected', 'the closed session was recovered');
    assert.equal(system.message, 'banned', "told the close's reason");
    assert.deepEqual(await recovering.closed, { code: 1008, reason: 'ClosedByServer' });
    await until(() => record.disconnected.some((req) => req.context.connectionId === id), 5000, 'the disconnected event of the closed session');
    await until(() => record.disconnected.some((req) => req.context.connectionId === heldId), 5000, 'the disconnected event of the held connection');
    // A second recovery finds the session ended, and nothing is told twice.
    const again = await RawPubSubClient.connect(url, RELIABLE, t);
    assert.equal((await again.waitFor((m) => m.type === 'system', 15000)).event, 'disconnected');
    await again.closed;
    assert.equal(record.disconnected.filter((req) => req.context.connectionId === id).length, 1);
    assert.equal(record.disconnected.find((req) => req.context.connectionId === id)!.reason, 'banned');
    assert.equal(record.disconnected.filter((req) => req.context.connectionId === heldId).length, 1);
    assert.equal(record.disconnected.find((req) => req.context.connectionId === heldId)!.reason, 'held');
  });
});
