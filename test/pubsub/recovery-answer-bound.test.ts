// A reliable client's recovery is answered within a bound (session-recovery.ts, answerWithinMs: 3 x
// bus.requestTimeoutMs + bus.jetstream.publishTimeoutMs), whatever the take under way waits for. The upgrade is
// answered at once, so the client's socket is open; @azure/web-pubsub-client then waits for a message for its
// keep-alive timeout (120 s) before it tries again. Here the take's claim goes out unanswered (the hub's stream
// changed by hand to acknowledge no write, as a frozen stream leader would leave it): the claim is tried again with
// the same id for bus.jetstream.unsureRetryMs (60 s). Before, the client heard nothing all that time (a chaos soak
// saw five sessions silent for ~125 s after an edge's shutdown); now it is told to try again (1013), and its next
// try, once the stream answers, finds the session this edge took meanwhile.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { connect } from 'nats';
import { cleanupFor } from '../helpers/cleanup.ts';
import { edgeEvents, startEdge, waitOnRoster } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { withTimeout } from '../helpers/wait.ts';

const REQUEST_TIMEOUT_MS = 500;
const PUBLISH_TIMEOUT_MS = 1000;
const ANSWER_WITHIN_MS = 3 * REQUEST_TIMEOUT_MS + PUBLISH_TIMEOUT_MS;

it('answers a recovery whose take waits on an unanswered claim within its bound (1013), and recovers it on the next try', async (t) => {
  const nats = await startNatsServer(t);
  const config = { bus: { requestTimeoutMs: REQUEST_TIMEOUT_MS, jetstream: { publishTimeoutMs: PUBLISH_TIMEOUT_MS } }, pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY }] } };
  const [a, b] = await Promise.all(['edge-a', 'edge-b'].map((name) => startEdge(t, name, [nats.url], config)));
  await waitOnRoster(b, a);
  const first = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'u1' }), RELIABLE, t);
  const connected = await first.waitFor((m) => m.type === 'system' && m.event === 'connected');
  const recoveryUrl = `${b.url.replace('http', 'ws')}/client/hubs/${HUB}?awps_connection_id=${encodeURIComponent(connected.connectionId)}&awps_reconnection_token=${encodeURIComponent(connected.reconnectionToken)}`;
  // The edge that held it is gone: edge B takes the session from its checkpoint, with a claim in the hub's stream.
  await a.kill();

  const nc = await connect({ servers: nats.url });
  cleanupFor(t).after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const streams = await jsm.streams.list().next();
  const hubStream = streams.map((s) => s.config.name).find((name) => !name.startsWith('KV_'));
  assert.ok(hubStream, `the hub's stream among ${streams.map((s) => s.config.name).join(', ')}`);
  await jsm.streams.update(hubStream, { no_ack: true });

  const started = performance.now();
  const deferred = await RawPubSubClient.connect(recoveryUrl, RELIABLE, t);
  const closed = await withTimeout(deferred.closed, ANSWER_WITHIN_MS + 5000, 'the recovery to be answered while its claim goes unanswered');
  const answeredAfter = performance.now() - started;
  assert.equal(closed.code, 1013, JSON.stringify({ closed, messages: deferred.messages }));
  assert.equal(deferred.messages[0]?.type, 'system');
  assert.equal(deferred.messages[0]?.event, 'disconnected');
  assert.ok(answeredAfter >= ANSWER_WITHIN_MS - 100, `answered after ${Math.round(answeredAfter)} ms: by the bound, not by the take`);
  assert.match(edgeEvents([b], /pubsub\.recovery_deferred/), new RegExp(`no answer within ${ANSWER_WITHIN_MS} ms`));

  // The stream answers again: the claim's next try is stored and acknowledged, and the take ends on its own.
  await jsm.streams.update(hubStream, { no_ack: false });
  const recovered = await RawPubSubClient.connect(recoveryUrl, RELIABLE, t);
  const back = await recovered.waitFor((m) => m.type === 'system', 10000, 'the next try to be answered');
  assert.equal(back.event, 'connected', JSON.stringify(back));
  assert.equal(back.connectionId, connected.connectionId);
});
