// A reliable session moved between edges on core NATS while the edge holding
// it answers late (a pause, a long GC) in the middle of the move
// (src/pubsub/session-handover.ts). Edges in this process on one nats-server;
// the stall is the holder handling its hand-over messages late. Before: a
// recovery that met a session still moving to another edge was refused 1008
// (the client gave it up) though the session lived on, and a REST listing of
// the group named the moving connection twice.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { BusMessage } from '../../src/bus/bus.ts';
import type { PsHandover } from '../../src/bus/messages.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { CORE_NATS, edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';

/**
 * Holds the `stage` messages of hand-overs `relay` gets about its sessions until `ms` after the first of them
 * (`paused`: every hand-over message from then on, handled in the order they came, as a paused process does).
 */
function stallHandover(relay: RunningRelay, stage: PsHandover['stage'], ms: number, paused = false): void {
  const handover = relay.pubsub.hubs.get(HUB)!.handover;
  const onRequest = handover.onRequest.bind(handover);
  // Held messages are handled by one timer, in the order they came (timers of different lengths may not keep it).
  let held: (() => void)[] | undefined;
  let done = false;
  handover.onRequest = (m: BusMessage, h: PsHandover) => {
    if (held && (paused || h.stage === stage)) return void held.push(() => onRequest(m, h));
    if (held || done || h.stage !== stage) return onRequest(m, h);
    done = true;
    held = [() => onRequest(m, h)];
    setTimeout(() => {
      const queued = held!;
      held = undefined;
      for (const handle of queued) handle();
    }, ms);
  };
}

/** Edges on one nats-server, each with its bus.requestTimeoutMs (and `timeouts` for all). */
async function startEdges(t: TestContext, edgesWanted: Record<string, number>, timeouts: Record<string, number> = {}) {
  const nats = await startNatsServer(t);
  const edges: { name: string; relay: RunningRelay; events: () => string[] }[] = [];
  for (const [name, requestTimeoutMs] of Object.entries(edgesWanted)) {
    const log = captureLogger('info');
    const overrides = edgeOverrides(name, [nats.url], { ...CORE_NATS, bus: { ...CORE_NATS.bus, requestTimeoutMs }, timeouts: { shutdownMs: 500, ...timeouts } });
    edges.push({ name, relay: await startTestRelay(t, overrides, { log: log.log }), events: () => log.lines().map((l) => JSON.stringify(l)) });
  }
  await Promise.all(edges.map((e) => waitReady(e.relay)));
  const story = () => edges.flatMap((e) => e.events().filter((l) => /session_|handover|recover/.test(l)).map((l) => `${e.name} ${l}`)).join('\n');
  return { edges, story };
}

/** A reliable client on `url` in group g with events 1..3 it has not acknowledged; then its socket is cut. */
async function heldSession(t: TestContext, url: string): Promise<string> {
  const client = await RawPubSubClient.connect(accessUrl(url), RELIABLE, t);
  const { connectionId, reconnectionToken } = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
  await client.request({ type: 'joinGroup', group: 'g' });
  for (let i = 1; i <= 3; i++) await client.request({ type: 'sendToGroup', group: 'g', data: i });
  await client.waitFor(() => client.dataMessages().length >= 3, 5000, 'the three events');
  client.ws.terminate();
  return recoveryQuery(connectionId, reconnectionToken);
}

/** One recovery on `url`: connected with the events replayed, or the close code of a refusal. */
async function recoverOn(t: TestContext, url: string, recovery: string): Promise<{ code: number; events: unknown[] }> {
  const client = await RawPubSubClient.connect(accessUrl(url) + recovery, RELIABLE, t);
  const system = await client.waitFor((m) => m.type === 'system', 10000, 'the answer to the recovery');
  if (system.event !== 'connected') return { code: (await client.closed).code, events: [] };
  await client.waitFor(() => client.dataMessages().length >= 3, 5000, 'the replayed events').catch(() => undefined);
  const events = client.dataMessages().map((m) => [m.sequenceId, m.data]);
  client.ws.terminate();
  return { code: 0, events };
}

/** Recovers on `url` again while refused 1013 (tried again, as the SDK does), for up to 10 s. */
async function recoverUntilConnected(t: TestContext, url: string, recovery: string, story: () => string) {
  let got = await recoverOn(t, url, recovery);
  for (const deadline = Date.now() + 10000; got.code === 1013 && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 200));
    got = await recoverOn(t, url, recovery);
  }
  assert.deepEqual(got, { code: 0, events: [[1, 1], [2, 2], [3, 3]] }, story());
}

describe('a reliable session moved while the edge holding it answers late', () => {
  it('a recovery that meets the session still moving to another edge is deferred (1013), and the session listed once meanwhile', async (t) => {
    // T1 waits for the holder's answers longer than T2 does.
    const { edges, story } = await startEdges(t, { 'edge-h': 500, 'edge-t1': 3000, 'edge-t2': 500 });
    const [h, t1, t2] = edges;
    const recovery = await heldSession(t, h.relay.url);
    // The holder answers T1's commit 1.5 s late: the move to T1 outlasts T2's wait for it.
    stallHandover(h.relay, 'commit', 1500);
    const onT1 = recoverOn(t, t1.relay.url, recovery);
    // Meanwhile the session is in the group on both edges: a REST listing names it once (before: twice).
    await until(() => t1.relay.pubsub.hubs.get(HUB)!.local.connections.size > 0, 2000, 'T1 to hold its copy');
    const list = `${t1.relay.url}/api/hubs/${HUB}/groups/g/connections?api-version=2024-12-01`;
    const listed = await httpRequest(list, { headers: { authorization: `Bearer ${signJwt({ aud: list }, HUB_KEY, 60)}` } });
    assert.equal(JSON.parse(String(listed.body)).value.length, 1, String(listed.body));
    const onT2 = await recoverOn(t, t2.relay.url, recovery);
    // Before: 1008, and the client gave up a session that lived on.
    assert.equal(onT2.code, 1013, story());
    assert.deepEqual(await onT1, { code: 0, events: [[1, 1], [2, 2], [3, 3]] }, story());
    await recoverUntilConnected(t, t2.relay.url, recovery, story);
  });

  it('a deferral in one outage does not count against the next: deferred again (1013), not given up (1008), the session alive', async (t) => {
    // sessionRetainMs 6 s: recoveries are deferred for up to 6 s before they are given up.
    const { edges, story } = await startEdges(t, { 'edge-h': 500, 'edge-t': 500 }, { sessionRetainMs: 6000 });
    const [h, taker] = edges;
    const recovery = await heldSession(t, h.relay.url);
    // An outage: the holder answers the move's first step late, T defers the client.
    stallHandover(h.relay, 'begin', 1000, true);
    assert.equal((await recoverOn(t, taker.relay.url, recovery)).code, 1013, story());
    const firstDeferral = Date.now();
    // The client recovers on the holder itself meanwhile, and again within each 6 s (its session is kept).
    for (const at of [1000, 5500, 10300]) {
      await new Promise((r) => setTimeout(r, Math.max(0, firstDeferral + at - Date.now())));
      assert.equal((await recoverOn(t, h.relay.url, recovery)).code, 0, story());
    }
    await new Promise((r) => setTimeout(r, Math.max(0, firstDeferral + 11000 - Date.now())));
    // Another outage, past T's window (6 s) since its first deferral and 10 s after its last one (another outage,
    // not more of the first). Before: given up at once (1008), the session alive.
    stallHandover(h.relay, 'begin', 1000, true);
    assert.equal((await recoverOn(t, taker.relay.url, recovery)).code, 1013, story());
    await recoverUntilConnected(t, taker.relay.url, recovery, story);
  });
});
