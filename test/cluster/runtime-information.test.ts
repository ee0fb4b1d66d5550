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
import { startTestRelay, tokenFor } from '../helpers/relay.ts';
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
});
