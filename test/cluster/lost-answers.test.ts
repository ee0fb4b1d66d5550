// An answer between edges that NATS loses (src/hybrid/cluster-link.ts, hc.alive): the listener answered, or
// dropped its channel, while the sender's edge was off NATS (its connection cut, its NATS server gone or stalled),
// so the hc.response or hc.failed for it went nowhere. Its sender hears 502 ListenerGone once the sender's edge is
// back and asks the listener's edge about it, not 504 at timeouts.httpResponseMs or timeouts.acceptMs. Edges run in
// this process on one nats-server; the sender's edge reaches it through a proxy that can cut its connection.
import assert from 'node:assert/strict';
import { before, after, describe, it, type TestContext } from 'node:test';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeInProcess } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer, type NatsNode } from '../helpers/nats.ts';
import { CuttableProxy } from '../helpers/pubsub.ts';
import { connectStatus, listenOn } from '../helpers/raw-listener.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

/** Long enough that a sender answered at its timeout is told apart from one answered once the loss is known. */
const timeouts = { acceptMs: 20000, httpResponseMs: 20000, keepAliveIntervalMs: 500, idleMs: 10000 };

// Over 1,000 requests wait at once from this one address: more than limits.httpConnectionsPerAddress allows by default.
const edge = (t: Pick<TestContext, 'after'>, name: string, natsUrl: string) => edgeInProcess(t, name, natsUrl, { timeouts, limits: { httpConnectionsPerAddress: 0 } });
const listen = (t: Pick<TestContext, 'after'>, relay: RunningRelay, entity: string) => listenOn(t, relay.url, entity);

describe('answers between edges that NATS loses', () => {
  const cleanup = new Cleanup();
  let nats: NatsNode;
  before(async () => {
    nats = await startNatsServer(cleanup);
  });
  after(() => cleanup.run());

  /** Cuts B off NATS, runs `meanwhile` while it is away, and waits until it is back. */
  async function whileOff(link: CuttableProxy, a: RunningRelay, b: RunningRelay, meanwhile: () => void): Promise<void> {
    // A's hc.routed, sent as the listener was told, reaches B first (a cut before it is a 504 RouteTimeout): once A's
    // flush is answered the server has it, and it is on B's connection before the answer to B's own flush.
    await a.bus.flush();
    await b.bus.flush();
    link.cut(1000);
    await until(() => !b.bus.connected, 5000, 'B off NATS');
    meanwhile();
    await until(() => b.bus.connected, 10000, 'B back on NATS');
  }

  /** Edges A and B (B on NATS through a link the test cuts) and a listener on A for `entity`. */
  async function edgesAndListener(t: TestContext, entity: string) {
    const link = await CuttableProxy.start(nats.port, t);
    const a = await edge(t, `${entity}-a`, nats.url);
    const b = await edge(t, `${entity}-b`, `nats://127.0.0.1:${link.port}`);
    return { link, a, b, listener: await listen(t, a, entity) };
  }

  /** `pending`, begun at `started`, answered 502 ListenerGone within 10 s (before: 504 after httpResponseMs, 20 s). */
  async function assertListenerGone(pending: ReturnType<typeof httpRequest>, started: number): Promise<void> {
    const res = await pending;
    const ms = Date.now() - started;
    assert.equal(res.status, 502);
    assert.equal(JSON.parse(String(res.body)).code, 'ListenerGone');
    assert.ok(ms < 10000, `answered after ${ms} ms`);
  }

  it("a request whose listener answered while the sender's edge was off NATS fails at once (502 ListenerGone), not at httpResponseMs", async (t) => {
    const { link, a, b, listener } = await edgesAndListener(t, 'lost-request');
    const url = `${b.url}/lost-request/x`;
    const started = Date.now();
    const pending = httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url) }, body: Buffer.from('small'), timeoutMs: 30000 });
    const { request } = await listener.next<{ request: { id: string } }>();
    await whileOff(link, a, b, () => listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: false } })));
    // Before: 504 ResponseTimeout after timeouts.httpResponseMs (20 s), the listener's answer long gone.
    await assertListenerGone(pending, started);
  });

  it("a request's lost answer is found when over 1,000 that have waited longer wait on the same edge", async (t) => {
    const { link, a, b, listener } = await edgesAndListener(t, 'lost-many');
    const url = `${b.url}/lost-many/x`;
    // Without a body: the listener is told each request in one message.
    const get = () => httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 30000 });
    // 1,000 requests the listener holds, each routed (and waited on at B) before the one whose answer is lost.
    const older = Array.from({ length: 1000 }, get);
    const olderIds: string[] = [];
    for (let i = 0; i < older.length; i++) olderIds.push((await listener.next<{ request: { id: string } }>()).request.id);
    const started = Date.now();
    const pending = get();
    const { request } = await listener.next<{ request: { id: string } }>();
    await whileOff(link, a, b, () => listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 200, body: false } })));
    // Before: hc.alive named the 1,000 that had waited longest, not this one while they waited: its loss was found
    // only once they had timed out (504 after timeouts.httpResponseMs, 20 s), and it answered after about 19 s.
    await assertListenerGone(pending, started);
    // The older ones were still watched at A, and named: none was taken for lost, and their answers come through.
    for (const requestId of olderIds) listener.ws.send(JSON.stringify({ response: { requestId, statusCode: 200, body: false } }));
    assert.deepEqual(new Set((await Promise.all(older)).map((r) => r.status)), new Set([200]));
  });

  it("a connect whose listener dropped its channel while the sender's edge was off NATS fails at once (502 ListenerGone), not at acceptMs", async (t) => {
    const { link, a, b, listener } = await edgesAndListener(t, 'lost-connect');
    const url = wsUrl(b.url, '/$hc/lost-connect?sb-hc-action=connect');
    const started = Date.now();
    const sender = connectStatus(url);
    await listener.next<{ accept: { address: string } }>();
    await whileOff(link, a, b, () => listener.close());
    // Before: 504 AcceptTimeout after timeouts.acceptMs (20 s); A's hc.failed had gone to nobody.
    assert.equal(await sender, 502);
    const ms = Date.now() - started;
    assert.ok(ms < 10000, `answered after ${ms} ms`);
  });
});
