// Graceful shutdown: a rolling restart of two edges behind a load balancer,
// under steady pub/sub and HTTP traffic. Reliable clients lose nothing (their
// sessions move to the other edge when told to reconnect with 1012), and HTTP
// requests in flight on the stopping edge finish.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { edgeEvents, startEdge, waitOnRoster, type Edge } from '../helpers/cluster.ts';
import WebSocket from 'ws';
import { cleanupFor } from '../helpers/cleanup.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const EDGE_OPTIONS = { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 15000 }, hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] };

/** One GET through `port` on a fresh connection: the status, or the error. */
function get(port: number, path: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: 10000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve(err.message));
    req.end();
  });
}

/**
 * A listener that answers every relayed HTTP request on its control channel
 * after `delayMs` (so requests are in flight when an edge is told to stop).
 * Unlike hyco-https it does not redial: a test opens a new one per edge.
 */
async function answeringListener(t: Parameters<typeof cleanupFor>[0], edgeUrl: string, delayMs: number): Promise<WebSocket> {
  const url = wsUrl(edgeUrl, '/$hc/web?sb-hc-action=listen');
  const ws = new WebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
  cleanupFor(t).after(() => ws.terminate());
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) return;
    const message = JSON.parse(data.toString()) as { request?: { id: string; body?: boolean } };
    if (!message.request) return;
    const id = message.request.id;
    setTimeout(() => {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(JSON.stringify({ response: { requestId: id, statusCode: 200, responseHeaders: { 'content-type': 'text/plain' }, body: true } }));
      ws.send(Buffer.from('ok'));
    }, delayMs);
  });
  await withTimeout(new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject))), 5000, 'listener open');
  return ws;
}

describe('graceful shutdown', () => {
  it('a rolling restart of two edges loses no event for reliable clients and finishes in-flight HTTP requests', async (t) => {
    const nats = await startNatsServer(t);
    let a: Edge = await startEdge(t, 'edge-a', [nats.url], EDGE_OPTIONS);
    const b: Edge = await startEdge(t, 'edge-b', [nats.url], EDGE_OPTIONS);
    // The load balancer: pub/sub clients and HTTP senders reach edges through it.
    const lb = await CuttableProxy.start(a.port, t);
    await answeringListener(t, a.url, 100);
    await answeringListener(t, b.url, 100);

    const clients = await Promise.all(
      [1, 2, 3].map(async (i) => {
        const c = await startClient(t, accessUrl(lb.url, { userId: `u${i}`, roles: ['webpubsub.joinLeaveGroup'] }));
        await withTimeout(c.client.joinGroup('room'), 5000, 'join');
        return c;
      }),
    );

    // Steady traffic: numbered events to the group through the edge that stays
    // up, and a stream of HTTP requests through the load balancer.
    let publishVia = b;
    let published = 0;
    let running = true;
    const publisher = (async () => {
      while (running) {
        const n = published + 1;
        await serviceClient(publishVia).group('room').sendToAll(String(n), { contentType: 'text/plain' });
        published = n;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const httpResults: (number | string)[] = [];
    const senders = [1, 2, 3, 4].map(async (w) => {
      for (let i = 0; running; i++) httpResults.push(await get(lb.port, `/web/${w}/${i}`));
    });
    await until(() => published > 20 && httpResults.length > 8, 10000, 'traffic flowing');

    // Restart edge A: traffic moves to B, then A is told to stop.
    lb.retarget(b.port);
    // As a load balancer's health check would: a moment for requests already sent to A to arrive.
    await new Promise((r) => setTimeout(r, 100));
    await withTimeout(a.stop(), 20000, 'edge A to drain and exit');
    a = await startEdge(t, 'edge-a', [nats.url], EDGE_OPTIONS);
    // Clients stop while their edge is still up: stopped mid-recovery, the SDK keeps retrying forever.
    cleanupFor(t).after(() => Promise.all(clients.map((c) => c.client.stop())));
    await answeringListener(t, a.url, 100);
    const afterA = published;
    await until(() => published > afterA + 20, 10000, 'publishing through the restart of A');

    // A has heard B announce itself on the durable hub (hub-roster.ts; checked at the end).
    await waitOnRoster(a, b);

    // Then edge B.
    lb.retarget(a.port);
    publishVia = a;
    // Likewise for requests already sent to B.
    await new Promise((r) => setTimeout(r, 100));
    await withTimeout(b.stop(), 20000, 'edge B to drain and exit');
    const afterB = published;
    await until(() => published > afterB + 20, 10000, 'publishing after the restart of B');

    running = false;
    await withTimeout(publisher, 5000, 'publisher to stop');
    await withTimeout(Promise.all(senders), 15000, 'HTTP senders to stop');
    const total = published;
    for (const [i, c] of clients.entries()) {
      await until(() => c.groupData.length >= total, 20000, `client ${i + 1} to catch up (${c.groupData.length} of ${total})`);
      assert.deepEqual(c.groupData.map((m) => Number(m.data)), Array.from({ length: total }, (_, k) => k + 1), `client ${i + 1} got every event once, in order`);
    }
    const failed = httpResults.filter((r) => r !== 200);
    assert.deepEqual(failed, [], `every HTTP request answered 200 (${httpResults.length} sent)`);
    // B said it was leaving (hub-roster.ts): A's next question about the group does not wait for it.
    const members: string[] = [];
    for await (const m of await serviceClient(a).group('room').listConnections()) members.push(m.connectionId);
    assert.equal(members.length, clients.length);
    assert.match(edgeEvents([a], /pubsub\.roster_left/), /"edge":"edge-b"/);
    assert.equal(edgeEvents([a], /pubsub\.edges_silent/), '', 'no question waited for the stopped edge');
  });
});
