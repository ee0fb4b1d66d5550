// A cluster-wide REST call that loses NATS while it waits for the other
// edges: it answers 503 BusUnavailable (it acted on this edge and on those
// that answered before), not what this edge alone found. One nats-server, an
// edge in this process and one in its own process, stopped (SIGSTOP) so the
// call is still waiting on it when the server is killed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { CORE_NATS, edgeOverrides, startEdge, whilePaused } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

describe('a cluster-wide REST call that loses NATS', () => {
  it('answers 503 BusUnavailable, not what this edge alone found (before: 404 for a group held on the edge it waited on)', async (t) => {
    const nats = await startNatsServer(t, 'n1');
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], CORE_NATS));
    const b = await startEdge(t, 'edge-b', [nats.url], CORE_NATS);
    await until(() => a.bus.connected, 10000, 'edge a on NATS');
    const member = await RawPubSubClient.connect(accessUrl(b.url, { hub: HUB, userId: 'm' }), PLAIN, t);
    assert.equal((await member.request({ type: 'joinGroup', group: 'ng' })).success, true);
    const head = `${a.url}/api/hubs/${HUB}/groups/ng`;
    const ask = () => httpRequest(head, { method: 'HEAD', headers: { authorization: `Bearer ${signJwt({ aud: head }, HUB_KEY, 600)}` } });
    await untilAnswered(async () => (await ask()).status === 200, 10000, 'the group seen through edge a');
    const answer = await whilePaused(t, b, 5000, async () => {
      const call = ask();
      await new Promise((r) => setTimeout(r, 300));
      await nats.kill();
      return call;
    });
    assert.equal(answer.status, 503);
    assert.equal(answer.headers['x-ms-error-code'], 'BusUnavailable');
  });
});
