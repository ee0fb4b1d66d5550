// A reliable session moved between edges on core NATS while the edge holding
// it stalls (a pause, a long GC) in the middle of the move
// (src/pubsub/session-handover.ts). Edges in this process on one nats-server;
// the stall is the holder handling its hand-over messages late, in the order
// they came, as a paused process does. Before: a stall at commit or during the
// pages lost the session everywhere (the taker gave up, 1008, while the holder
// had let go of it), and a recovery that met a session still moving to another
// edge was refused 1008 though the session lived on.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { BusMessage } from '../../src/bus/bus.ts';
import type { PsHandover } from '../../src/bus/messages.ts';
import { decodeEdgeMessage } from '../../src/bus/messages.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { CORE_NATS, edgeOverrides, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';

const REQUEST_TIMEOUT_MS = 500;

/**
 * Holds the hand-over messages `relay` gets about its sessions for `ms` from the first one of `stage`, then
 * handles them in the order they came (`only`: holds just the messages of that stage, until `ms` after the first).
 */
function stallHandover(relay: RunningRelay, stage: PsHandover['stage'], ms: number, only = false): void {
  // onGivenMessage is private: what the subscription made at commit calls.
  const handover = relay.pubsub.hubs.get(HUB)!.handover as unknown as {
    onRequest(m: BusMessage, h: PsHandover): void;
    onGivenMessage(m: BusMessage): void;
  };
  const onRequest = handover.onRequest.bind(handover);
  const onGiven = handover.onGivenMessage.bind(handover);
  let held: (() => void)[] | undefined;
  let done = false;
  /** With `only`: messages of the stage that came before this are held until then. */
  let until = 0;
  const through = (stageOf: string | undefined, handle: () => void) => {
    if (only) {
      if (stageOf !== stage || (until > 0 && Date.now() >= until)) return handle();
      until ||= Date.now() + ms;
      setTimeout(handle, until - Date.now());
      return;
    }
    if (held) return void held.push(handle);
    if (stageOf !== stage || done) return handle();
    done = true;
    held = [handle];
    setTimeout(() => {
      const queued = held!;
      held = undefined;
      for (const h of queued) h();
    }, ms);
  };
  handover.onRequest = (m, h) => through(h.stage, () => onRequest(m, h));
  handover.onGivenMessage = (m) => through(decodeEdgeMessage(m.data, 'ps.handover')?.message.stage, () => onGiven(m));
}

async function startEdges(t: TestContext, names: string[]) {
  const nats = await startNatsServer(t);
  const edges: { name: string; relay: RunningRelay; events: () => string[] }[] = [];
  for (const name of names) {
    const log = captureLogger('info');
    const overrides = edgeOverrides(name, [nats.url], { ...CORE_NATS, bus: { ...CORE_NATS.bus, requestTimeoutMs: REQUEST_TIMEOUT_MS }, timeouts: { shutdownMs: 500 } });
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
  return `&awps_connection_id=${encodeURIComponent(connectionId)}&awps_reconnection_token=${encodeURIComponent(reconnectionToken)}`;
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

describe('a reliable session moved while the edge holding it stalls', () => {
  for (const stage of ['commit', 'page'] as const) {
    it(`is deferred (1013), not lost, when the holder stalls at ${stage}: once it answers, the session is recovered whole`, async (t) => {
      const { edges, story } = await startEdges(t, ['edge-h', 'edge-t']);
      const [h, taker] = edges;
      const recovery = await heldSession(t, h.relay.url);
      stallHandover(h.relay, stage, 3 * REQUEST_TIMEOUT_MS);
      const firstAnswer = recoverOn(t, taker.relay.url, recovery);
      if (stage === 'commit') {
        // Meanwhile the session is in the group on both edges: a REST listing names it once (before: twice).
        await until(() => taker.relay.pubsub.hubs.get(HUB)!.local.connections.size > 0, 2000, 'the taker to hold its copy');
        const list = `${taker.relay.url}/api/hubs/${HUB}/groups/g/connections?api-version=2024-12-01`;
        const listed = await httpRequest(list, { headers: { authorization: `Bearer ${signJwt({ aud: list }, HUB_KEY, 60)}` } });
        assert.equal(JSON.parse(String(listed.body)).value.length, 1, String(listed.body));
      }
      const first = await firstAnswer;
      // Before: 1008 SessionNotFound, and the session was gone from both edges.
      assert.ok(first.code === 1013 || first.code === 0, `the first recovery was closed ${first.code}\n${story()}`);
      if (first.code === 0) assert.deepEqual(first.events, [[1, 1], [2, 2], [3, 3]], story());
      else await recoverUntilConnected(t, taker.relay.url, recovery, story);
    });
  }

  it('a recovery that meets the session still moving to another edge is deferred (1013), and the session is recovered whole', async (t) => {
    const { edges, story } = await startEdges(t, ['edge-h', 'edge-t1', 'edge-t2']);
    const [h, t1, t2] = edges;
    const recovery = await heldSession(t, h.relay.url);
    // Every commit reaches the holder late: the move to T1 outlasts T2's wait for it.
    stallHandover(h.relay, 'commit', 3 * REQUEST_TIMEOUT_MS, true);
    const onT1 = recoverOn(t, t1.relay.url, recovery);
    await new Promise((r) => setTimeout(r, 100));
    const onT2 = await recoverOn(t, t2.relay.url, recovery);
    // Before: 1008, while the move to T1 went on.
    assert.ok(onT2.code === 1013, `the recovery on T2 was closed ${onT2.code}\n${story()}`);
    await onT1;
    await recoverUntilConnected(t, t2.relay.url, recovery, story);
  });
});
