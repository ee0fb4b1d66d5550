// Runtime information (.NET GetRuntimeInformationAsync) on two edges sharing
// one NATS server: ListenerCount counts the listeners of every edge, and when
// the other edges cannot be asked the answer says so (503) instead of a count
// that leaves them out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect } from 'nats';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

async function listenerCount(edge: { url: string }): Promise<{ status: number; count?: number; body: string }> {
  const got = await httpRequest(`${edge.url}/echo?api-version=2016-07`, { headers: { 'X-PROCESS-AT': 'ServiceBus', Authorization: tokenFor('http://127.0.0.1/echo/') } });
  const body = got.body.toString('utf8');
  const count = /<ListenerCount>(\d+)<\/ListenerCount>/.exec(body)?.[1];
  return { status: got.status, count: count === undefined ? undefined : Number(count), body };
}

describe('runtime information across edges', () => {
  it('counts the listeners of every edge, and answers 503 with the reason when the other edges cannot be asked', async (t) => {
    const nats = await startNatsServer(t);
    const hybrid = { hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }], bus: { jetstream: { enabled: false } } };
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], hybrid));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url], hybrid));
    await startHycoHttpsListener(t, a.url, (_req, res) => res.end());
    for (let i = 0; i < 2; i++) await startHycoHttpsListener(t, b.url, (_req, res) => res.end());
    await untilAnswered(async () => (await listenerCount(a)).count === 3, 5000, 'three listeners counted from edge a');
    assert.equal((await listenerCount(b)).count, 3);

    // Any sender may ask: questions of the same moment share one gather, so the edges are not asked once per question.
    const watcher = await connect({ servers: nats.url });
    t.after(() => watcher.close());
    let gathers = 0;
    watcher.subscribe('relay.ops.status', { callback: () => gathers++ });
    await watcher.flush();
    await new Promise((r) => setTimeout(r, 1100));
    const answers = await Promise.all(Array.from({ length: 20 }, () => listenerCount(a)));
    assert.ok(answers.every((answer) => answer.count === 3));
    await watcher.flush();
    assert.ok(gathers >= 1 && gathers <= 2, `${gathers} gathers for 20 questions`);

    await nats.kill();
    await until(() => !a.bus.connected, 5000, 'edge a to see NATS gone');
    // (An answer of the last second may still be given meanwhile.)
    await untilAnswered(async () => (await listenerCount(a)).status === 503, 5000, 'the count refused with NATS away');
    const away = await listenerCount(a);
    assert.equal(away.status, 503, away.body);
    assert.match(away.body, /<Detail>BusUnavailable: the listeners on other edges cannot be counted/);
  });

  it("counts an edge holding more listeners than one answer of its whole status fits in NATS's max_payload, and /status lists it with what it left out", async (t) => {
    const nats = await startNatsServer(t, 'n1', undefined, { config: 'max_payload: 16384\n' });
    const hybrid = { hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }], autoCreate: true, bus: { jetstream: { enabled: false } } };
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], hybrid));
    const b = await startTestRelay(t, edgeOverrides('edge-b', [nats.url], hybrid));
    await until(() => a.bus.maxPayload === 16384 && b.bus.maxPayload === 16384, 10000, 'both edges on NATS');
    await startHycoHttpsListener(t, b.url, (_req, res) => res.end());
    // 100 entities of 250-character names on edge b: its whole status takes ~27 KB.
    for (let i = 0; i < 100; i++) {
      const listenUrl = wsUrl(b.url, `/$hc/${`e${i}-`.padEnd(250, 'x')}?sb-hc-action=listen`);
      const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
      t.after(() => listener.close());
    }
    // Before: edge b failed to answer (TooLarge, logged there only), and edge a counted 0.
    await untilAnswered(async () => (await listenerCount(a)).count === 1, 5000, "edge b's listener counted from edge a");
    const got = await httpRequest(`${a.url}/$relay/status`, { headers: { authorization: tokenFor(`${a.url}/`) } });
    const body = JSON.parse(got.body.toString());
    assert.equal(body.complete, true);
    const edgeB = body.nodes.find((n: { nodeId: string }) => n.nodeId === 'edge-b');
    assert.ok(edgeB, `edge b listed: ${body.nodes.map((n: { nodeId: string }) => n.nodeId)}`);
    assert.ok(edgeB.entitiesOmitted > 0 && edgeB.entities.length + edgeB.entitiesOmitted === 101, `${edgeB.entities.length} listed, ${edgeB.entitiesOmitted} omitted`);
    assert.ok(edgeB.entities.length > 20, `${edgeB.entities.length} listed`);
  });
});
