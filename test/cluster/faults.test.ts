// Faults of the core NATS path (hubs with bus.jetstream off; JetStream's own
// are in jetstream-faults.test.ts), each on its own cluster of real processes. Each
// test states what is lost and asserts exactly that.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type WebSocket from 'ws';
import { CORE_NATS, edgeOverrides, startCluster, startEdge, readiness, waitReady, waitOnRoster, whilePaused, preferring } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoWsListener } from '../helpers/hyco.ts';
import { startNatsCluster, startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, accessUrl } from '../helpers/pubsub.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

function echo(ws: any): void {
  ws.on('message', (data: unknown, flags: { binary?: boolean }) => ws.send(data, { binary: !!flags?.binary }));
}

/** Opens a sender to `entity` on `edgeUrl`, sends `text`, returns the echo (or the refusal's code). */
async function echoThrough(edgeUrl: string, text: string, entity = 'echo'): Promise<string> {
  const url = wsUrl(edgeUrl, `/$hc/${entity}?sb-hc-action=connect`);
  let ws: WebSocket;
  try {
    ws = await openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
  } catch (err) {
    return `refused: ${(err as Error).message}`;
  }
  try {
    const reply = withTimeout(new Promise<string>((r) => ws.once('message', (d) => r(String(d)))), 5000, 'echo');
    ws.send(text);
    return await reply;
  } finally {
    ws.terminate();
  }
}

/** Retries `attempt` until it returns `want`, for at most `ms`. */
async function eventually(attempt: () => Promise<string>, want: string, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    last = await attempt();
    if (last === want) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(last, want);
}

const numbers = (messages: any[]) => messages.map((m) => m.data).filter((d) => typeof d === 'number');

/** Every number seen once, in increasing order. */
function assertOnceInOrder(seen: number[]): void {
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], `out of order or twice at ${i}: ${seen[i - 1]} then ${seen[i]}`);
}

describe('faults', { concurrency: 2 }, () => {
  it('NATS goes away: local traffic goes on, nodes report not-ready, and all resumes when it returns', async (t) => {
    // Refused, not lost: cross-node connects while there is no bus get 503
    // BusUnavailable at once. Local hybrid connections and local pub/sub lose
    // nothing, and events published on B for members on A during the outage
    // arrive once NATS is back (B kept them; A asks for what it missed).
    const nats = await startNatsServer(t);
    const a = await startEdge(t, 'edge-a', [nats.url], CORE_NATS);
    const b = await startEdge(t, 'edge-b', [nats.url], CORE_NATS);
    await startHycoWsListener(t, a.url, echo);
    const local = await startClient(t, accessUrl(a.url));
    await local.client.joinGroup('g');
    await eventually(() => echoThrough(b.url, 'cross'), 'cross');

    await nats.kill();
    await waitReady(a, 503);
    await waitReady(b, 503);
    const why = await readiness(a);
    assert.deepEqual(why.body.reasons, ['no connection to the nats bus']);
    assert.equal(why.body.bus.connected, false);

    assert.equal(await echoThrough(a.url, 'local'), 'local', 'a listener on this node is still reachable');
    const refused = await echoThrough(b.url, 'cross');
    assert.match(refused, /503/);
    const svcA = serviceClient(a);
    for (let i = 1; i <= 20; i++) await svcA.group('g').sendToAll(i);
    await until(() => numbers(local.groupData).length === 20, 5000, 'local pub/sub during the outage');
    assert.deepEqual(numbers(local.groupData), Array.from({ length: 20 }, (_, i) => i + 1));
    const remoteRest = await httpRequest(`${b.url}/api/hubs/chat/groups/g/connections/x`, { method: 'PUT' });
    assert.equal(remoteRest.status, 401, 'REST still authenticates while the bus is away');
    const svcB = serviceClient(b);
    // A cluster-wide question B cannot answer alone is refused, not guessed.
    const refusedExists = await svcB.groupExists('g').then(() => 'answered', (e: { statusCode?: number; message?: string }) => `${e.statusCode} ${e.message}`);
    assert.match(refusedExists, /^503/);
    for (let i = 101; i <= 120; i++) await svcB.group('g').sendToAll(i);

    await nats.restart();
    await waitReady(a, 200);
    await waitReady(b, 200);
    // What B published during the outage arrives, once, in order.
    await until(() => numbers(local.groupData).includes(120), 10000, 'events published on B during the outage');
    assert.deepEqual(numbers(local.groupData).slice(20), Array.from({ length: 20 }, (_, i) => 101 + i));
    // Re-subscribed: the listener's entity and the group are reachable from B again.
    await eventually(() => echoThrough(b.url, 'back'), 'back');
    for (let i = 0; i < 200 && !local.groupData.some((m) => m.data === 'from-b'); i++) {
      await svcB.group('g').sendToAll('from-b', { contentType: 'text/plain' });
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(local.groupData.some((m) => m.data === 'from-b'), 'a group send on B reaches the member on A');
  });

  it('an edge started without its NATS server: what it accepted meanwhile reaches the other edges once it connects', async (t) => {
    const nats = await startNatsServer(t);
    // A's only way to NATS refuses every connection at first: it starts unconnected.
    const link = await CuttableProxy.start(nats.port, t);
    link.refuse();
    const a = await startTestRelay(t, edgeOverrides('edge-a', [`nats://127.0.0.1:${link.port}`], CORE_NATS));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url], CORE_NATS));
    const member = await startClient(t, accessUrl(b.url));
    await member.client.joinGroup('g');
    assert.equal((await readiness(a)).body.bus.connected, false);
    await serviceClient(a, { maxRetries: 0 }).group('g').sendToAll(1);
    link.open();
    // Before: the event stayed on A (its feed sent again only what an outage after a first connection held).
    await until(() => numbers(member.groupData).includes(1), 10000, 'the event A accepted before it first connected');
  });

  it('one NATS node of three is killed under steady traffic: the edge on it fails over and traffic resumes', async (t) => {
    // Lost: nothing. Core NATS drops what B publishes while A reconnects to
    // another NATS node (A's interest is absent meanwhile); A then asks B for
    // what it missed and delivers it before anything newer: every event
    // arrives, once, in order.
    const { nats, edges } = await startCluster(t, 2, CORE_NATS);
    const [a, b] = edges;
    const sub = await startClient(t, accessUrl(a.url));
    await sub.client.joinGroup('feed');
    const publisher = serviceClient(b);
    let n = 0;
    const publish = async (count: number) => {
      for (let i = 0; i < count; i++) await publisher.group('feed').sendToAll(++n);
    };
    // Probes until the path is up; a string, so a probe still on its way after this loop is not counted below.
    for (let i = 0; i < 200 && sub.groupData.length === 0; i++) {
      await publisher.group('feed').sendToAll('probe');
      await new Promise((r) => setTimeout(r, 20));
    }
    sub.groupData.length = 0;
    await publish(100);
    await until(() => numbers(sub.groupData).includes(100), 5000, 'steady traffic before the kill');
    // 640 KiB to a group A has no member in, in B's log: more than one replay answer holds (half of NATS's 1 MiB
    // max_payload). Before: B's answer stopped there, marked truncated, and A never asked for the rest (events lost).
    for (let i = 0; i < 10; i++) await publisher.group('nobody-here').sendToAll('z'.repeat(64 * 1024), { contentType: 'text/plain' });
    const beforeKill = n;

    await nats[0].kill();
    let stopped = false;
    const steady = (async () => {
      while (!stopped) {
        await publish(5);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    // A's NATS server vanished: it reconnects to n2 or n3, re-subscribes, and events flow again.
    await until(() => numbers(sub.groupData).some((x) => x > beforeKill + 5), 15000, 'traffic resumed after fail-over');
    const resumedAt = n;
    await until(() => n >= resumedAt + 100, 10000, 'steady traffic after fail-over');
    stopped = true;
    await steady;
    const last = n;
    await publish(50);
    await until(() => numbers(sub.groupData).includes(last + 50), 10000, 'the last event');
    const seen = numbers(sub.groupData);
    assertOnceInOrder(seen);
    for (let i = 1; i <= beforeKill; i++) assert.ok(seen.includes(i), `event ${i}, sent before the kill, arrived`);
    for (let i = resumedAt + 1; i <= n; i++) assert.ok(seen.includes(i), `event ${i}, sent after fail-over, arrived`);
    t.diagnostic(`events published between the kill and resumption: ${resumedAt - beforeKill}`);
    assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i + 1), 'every event, once, in order');
    assert.equal((await readiness(a)).status, 200);
  });

  for (const frozenSide of ['subscriber', 'publisher'] as const) {
    it(`the NATS node of the ${frozenSide}'s edge is frozen under steady traffic: every event arrives once the edge notices and fails over`, async (t) => {
      // Lost: nothing. A frozen server (SIGSTOP) holds the edge's connection without closing it: the edge notices
      // only after two unanswered pings (bus.pingIntervalMs) and moves to another server. Then a publisher's edge
      // sends again what it published since its server last answered a ping, and a subscriber's edge asks the others
      // for what it missed. Before, the publisher's edge sent again from when it noticed, less a second: what it
      // published in the freeze's first seconds, acknowledged 202, reached nobody.
      const { nats, edges } = await startCluster(t, 2, CORE_NATS);
      const [a, b] = edges;
      // A's server is frozen; the side named is on A.
      const [subEdge, pubEdge] = frozenSide === 'subscriber' ? [a, b] : [b, a];
      const sub = await startClient(t, accessUrl(subEdge.url));
      await sub.client.joinGroup('feed');
      const publisher = serviceClient(pubEdge);
      for (let i = 0; i < 200 && sub.groupData.length === 0; i++) {
        await publisher.group('feed').sendToAll('probe');
        await new Promise((r) => setTimeout(r, 20));
      }
      sub.groupData.length = 0;
      let n = 0;
      let stopped = false;
      const steady = (async () => {
        while (!stopped) {
          await publisher.group('feed').sendToAll(++n).catch(() => n--);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      await until(() => numbers(sub.groupData).length >= 20, 5000, 'steady traffic before the freeze');
      await nats[0].freeze();
      const frozenAt = n;
      await until(() => numbers(sub.groupData).some((x) => x > frozenAt + 20), 20000, 'traffic resumed after A failed over');
      const resumedAt = n;
      await until(() => n >= resumedAt + 50, 10000, 'steady traffic after the fail-over');
      stopped = true;
      await steady;
      await until(() => numbers(sub.groupData).includes(n), 10000, 'the last event');
      nats[0].thaw();
      const seen = numbers(sub.groupData);
      t.diagnostic(`events published while A's server was frozen and before A failed over: ${resumedAt - frozenAt}`);
      assertOnceInOrder(seen);
      const missing = Array.from({ length: n }, (_, i) => i + 1).filter((x) => !seen.includes(x));
      assert.deepEqual(missing, [], 'every event arrived');
    });
  }

  it('an edge paused during a REST membership change through another: the call waits for it, so the next question sees the change', async (t) => {
    // Lost: nothing. An edge that answers late (a long GC pause, an overloaded
    // host; here SIGSTOP for 400 ms) still counts: the edge taking the call waits
    // for every edge on the hub's roster (bus.requestTimeoutMs at most), not
    // only for those answering within bus.gatherStallMs of each other.
    const nats = await startNatsServer(t);
    const a = await startEdge(t, 'edge-a', [nats.url], CORE_NATS);
    const b = await startEdge(t, 'edge-b', [nats.url], CORE_NATS);
    const member = await startClient(t, accessUrl(b.url, { userId: 'paula' }));
    await waitOnRoster(a, b);
    const viaA = serviceClient(a);
    const existed = await whilePaused(t, b, 400, async () => {
      await viaA.group('late').addUser('paula');
      // Asked at once: B resumes on its own timer, never because the call returned.
      return viaA.groupExists('late');
    });
    assert.equal(existed, true, 'the change was applied on B before the call returned');
    const ids: string[] = [];
    for await (const m of await viaA.group('late').listConnections()) ids.push(m.connectionId);
    assert.deepEqual(ids, member.connectionIds.slice(0, 1));
  });

  it('one edge is killed: its listeners reconnect through the load balancer to another edge and traffic resumes', async (t) => {
    // Lost: what lived only in the killed process: its control channels (the
    // listener reconnects), and reliable sessions it held (the client is refused
    // recovery, starts afresh with a new connection id and rejoins its groups;
    // events sent before it rejoined are not delivered to it). Relayed
    // connections spliced on other edges are not touched.
    const nats = await startNatsCluster(t);
    const a = await startEdge(t, 'edge-a', preferring(nats, 0), CORE_NATS);
    const b = await startEdge(t, 'edge-b', preferring(nats, 1), CORE_NATS);
    const balancer = await CuttableProxy.start(a.port, t);
    await startHycoWsListener(t, balancer.url, echo);
    await eventually(() => echoThrough(b.url, 'before'), 'before');
    // A relayed connection from a sender on B: spliced at B, though the listener's control channel is on A.
    const url = wsUrl(b.url, '/$hc/echo?sb-hc-action=connect');
    const open = await openWebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
    t.after(() => open.terminate());

    const sub = await startClient(t, () => accessUrl(balancer.url), { reconnectRetryOptions: { retryDelayInMs: 100 } });
    await sub.client.joinGroup('news');
    const firstId = sub.connectionIds[0];

    await a.kill();
    balancer.retarget(b.port);

    // The spliced connection lives on B: it still echoes.
    const reply = withTimeout(new Promise<string>((r) => open.once('message', (d) => r(String(d)))), 5000, 'echo on the old connection');
    open.send('still open');
    assert.equal(await reply, 'still open');
    // hyco-ws reconnects its control channel through the balancer, now to B.
    await eventually(() => echoThrough(b.url, 'after'), 'after', 15000);
    // The session held on A is gone: a fresh connection, rejoined to its group.
    await until(() => sub.connectionIds.length >= 2, 15000, 'a fresh pub/sub connection');
    assert.notEqual(sub.connectionIds.at(-1), firstId);
    const svc = serviceClient(b);
    for (let i = 0; i < 200 && !sub.groupData.some((m) => m.data === 'after'); i++) {
      await svc.group('news').sendToAll('after', { contentType: 'text/plain' });
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(sub.groupData.some((m) => m.data === 'after'), 'the rejoined client gets group events again');
  });
});
