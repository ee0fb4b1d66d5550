// A REST call under way when a reload removes its hub (docs/security.md,
// "Reload without a restart"; docs/errors.md, HubNotFound): its body still
// arriving when the hub goes, it is answered 404 HubNotFound, as a call to a
// hub the relay does not serve is, and nothing is sent, on the memory bus or
// into a durable hub's JetStream stream; a hub of the same name added again
// meanwhile is another hub. A call to a hub the reload kept is answered as
// before. Each call asks `Expect: 100-continue`: the relay says "100 Continue"
// in the same turn as it finds the hub, so the reload comes after that, before
// the body.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { connect as natsConnect } from 'nats';
import { signJwt } from '../../src/auth/jwt.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import type { HttpResult } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { reloadableRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

/**
 * A REST send whose body waits: resolves once the relay said "100 Continue" (it has found the hub), with `finish`,
 * which sends the body and resolves with the answer.
 */
async function sendAwaitingBody(t: TestContext, relay: RunningRelay, hub: string, key: string, path: string, body: string): Promise<() => Promise<HttpResult>> {
  const url = `${relay.url}/api/hubs/${hub}/${path}?api-version=2024-12-01`;
  const req = request(url, {
    method: 'POST',
    agent: false,
    headers: {
      authorization: `Bearer ${signJwt({ aud: url }, key, 60)}`,
      'content-type': 'text/plain',
      'content-length': String(Buffer.byteLength(body)),
      expect: '100-continue',
    },
  });
  t.after(() => req.destroy());
  const answer = new Promise<HttpResult>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  // An answer before "100 Continue" would be a refusal: it fails the wait rather than hanging it.
  await withTimeout(Promise.race([new Promise<void>((resolve) => req.once('continue', () => resolve())), answer.then((a) => Promise.reject(new Error(`answered ${a.status} before 100 Continue`)))]), 5000, `100 Continue for ${path}`);
  return () => {
    req.end(body);
    return withTimeout(answer, 10000, `the answer to ${path}`);
  };
}

/** The code a REST error answer names (x-ms-error-code, as Azure's SDKs read it). */
function errorCode(answer: HttpResult): unknown {
  return answer.headers['x-ms-error-code'];
}

const BOTH = [
  { name: HUB, accessKey: HUB_KEY },
  { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
];
const CHAT_ONLY = [BOTH[0]];

/**
 * A relay on a real nats-server with JetStream serving BOTH as durable hubs, both reading their streams (a send
 * before that is refused 503, which is not what these tests are about); `stored(hub)` counts its stream's messages.
 */
async function durableRelay(t: TestContext): Promise<Awaited<ReturnType<typeof reloadableRelay>> & { durable: object[]; stored(hub: string): Promise<number> }> {
  const nats = await startNatsServer(t);
  const bus = { bus: { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: { storage: 'memory' } } };
  const durable = BOTH.map((h) => ({ ...h, durable: true }));
  const { relay, serve } = await reloadableRelay(t, durable, bus);
  await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hubs to read their streams');
  const nc = await natsConnect({ servers: nats.url });
  t.after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const stored = async (hub: string) => (await jsm.streams.info(`${relay.pubsub.config.bus.jetstream.streamPrefix}_${hub}`)).state.messages;
  return { relay, serve, durable, stored };
}

describe('a REST call under way when a reload removes its hub', () => {
  it('is answered 404 HubNotFound and sends nothing, while one to a hub the reload kept is answered and delivered (before: 202 for a send that reached nobody)', async (t) => {
    const { relay, serve } = await reloadableRelay(t, BOTH);
    // A member of a group of the same name in the kept hub: a send to the removed hub's group is not for it.
    const member = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await member.request({ type: 'joinGroup', group: 'g' });
    const toRemoved = await sendAwaitingBody(t, relay, OTHER_HUB, OTHER_HUB_KEY, 'groups/g/:send', 'for the removed hub');
    const toUser = await sendAwaitingBody(t, relay, OTHER_HUB, OTHER_HUB_KEY, 'users/u/:send', 'for its user');
    const groups = await sendAwaitingBody(t, relay, OTHER_HUB, OTHER_HUB_KEY, ':addToGroups', JSON.stringify({ groups: ['g'] }));
    const toKept = await sendAwaitingBody(t, relay, HUB, HUB_KEY, 'groups/g/:send', 'for the kept hub');
    serve(CHAT_ONLY);
    const removed = await toRemoved();
    assert.equal(removed.status, 404, removed.body.toString());
    assert.equal(errorCode(removed), 'HubNotFound');
    const user = await toUser();
    assert.deepEqual([user.status, errorCode(user)], [404, 'HubNotFound']);
    const changed = await groups();
    assert.deepEqual([changed.status, errorCode(changed)], [404, 'HubNotFound']);
    const kept = await toKept();
    assert.equal(kept.status, 202, kept.body.toString());
    await member.waitFor((m) => m.type === 'message' && m.data === 'for the kept hub', 5000, 'the kept hub\'s send');
    // Sent after the others were answered: had the removed hub's send gone anywhere, it would be here before it.
    assert.deepEqual(member.dataMessages().map((m) => m.data), ['for the kept hub']);
  });

  it('does not reach a hub of the same name that a second reload added while the body came', async (t) => {
    const { relay, serve } = await reloadableRelay(t, BOTH);
    const pending = await sendAwaitingBody(t, relay, OTHER_HUB, OTHER_HUB_KEY, ':send', 'for the old hub');
    serve(CHAT_ONLY);
    // Added again with another key: its clients are not the old hub's, whose token the call was checked against.
    const newKey = 'other-access-key-of-the-new-hub-0123';
    serve([...CHAT_ONLY, { name: OTHER_HUB, accessKey: newKey }]);
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: OTHER_HUB, key: newKey }), PLAIN, t);
    await client.waitFor((m) => m.event === 'connected');
    const answer = await pending();
    assert.deepEqual([answer.status, errorCode(answer)], [404, 'HubNotFound']);
    const url = `${relay.url}/api/hubs/${OTHER_HUB}/:send?api-version=2024-12-01`;
    const later = await withTimeout(
      fetch(url, { method: 'POST', headers: { authorization: `Bearer ${signJwt({ aud: url }, newKey, 60)}`, 'content-type': 'text/plain' }, body: 'for the new hub' }),
      5000,
      'a send to the new hub',
    );
    assert.equal(later.status, 202);
    await client.waitFor((m) => m.type === 'message' && m.data === 'for the new hub', 5000, 'the new hub\'s send');
    assert.deepEqual(client.dataMessages().map((m) => m.data), ['for the new hub']);
  });

  it('on a durable hub stores nothing in its stream (before: stored, and answered 202)', async (t) => {
    const { relay, serve, durable, stored } = await durableRelay(t);
    const member = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await member.request({ type: 'joinGroup', group: 'g' });
    const storedBefore = await stored(OTHER_HUB);
    const toRemoved = await sendAwaitingBody(t, relay, OTHER_HUB, OTHER_HUB_KEY, 'groups/g/:send', 'for the removed hub');
    const toKept = await sendAwaitingBody(t, relay, HUB, HUB_KEY, 'groups/g/:send', 'for the kept hub');
    serve(durable.slice(0, 1));
    const removed = await toRemoved();
    assert.deepEqual([removed.status, errorCode(removed)], [404, 'HubNotFound'], removed.body.toString());
    assert.equal((await toKept()).status, 202);
    await member.waitFor((m) => m.type === 'message' && m.data === 'for the kept hub', 10000, 'the kept hub\'s send');
    assert.equal(await stored(OTHER_HUB), storedBefore, 'nothing stored in the removed hub\'s stream');
  });
});

describe('a REST send stored when a reload removes its hub', () => {
  it('is answered 202, as what it did (stored, delivered by the edges still serving the hub), not 404 (before: 404 HubNotFound for a stored send, which a caller retries elsewhere)', async (t) => {
    const { relay, serve, durable, stored } = await durableRelay(t);
    const storedBefore = await stored(OTHER_HUB);
    // The reload lands while the send is being stored: its publish is out, and stored, before the call is answered.
    const events = relay.pubsub.hub(OTHER_HUB)!.durable!;
    const send = events.send.bind(events);
    events.send = async (...args) => {
      const sending = send(...args);
      serve(durable.slice(0, 1));
      return await sending;
    };
    const url = `${relay.url}/api/hubs/${OTHER_HUB}/groups/g/:send?api-version=2024-12-01`;
    const answer = await withTimeout(
      fetch(url, { method: 'POST', headers: { authorization: `Bearer ${signJwt({ aud: url }, OTHER_HUB_KEY, 60)}`, 'content-type': 'text/plain' }, body: 'stored' }),
      10000,
      'the send\'s answer',
    );
    assert.equal(await stored(OTHER_HUB), storedBefore + 1, 'the send was stored');
    assert.equal(answer.status, 202, `${answer.status} ${answer.headers.get('x-ms-error-code')}`);
    assert.equal(relay.pubsub.hub(OTHER_HUB), undefined, 'the hub was removed');
  });
});
