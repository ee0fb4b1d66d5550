// What NATS's max_payload (here 64 KiB, below limits.pubsubMessageBytes) does
// to messages that must cross it: a pub/sub event that fits the relay's limit
// but not the bus is refused before anyone has it (REST 413
// BusPayloadTooLarge, the client's ack BadRequest), on core NATS and on a
// durable hub; a relayed HTTP request's body too large to go with its notice
// is fetched by the listener over a rendezvous. Two edges in this process on
// one nats-server started with that max_payload.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay, tokenFor } from '../helpers/relay.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

const MAX_PAYLOAD = 65536;
/** `chat` on core NATS, `other` durable (JetStream). */
const hubs = {
  pubsub: {
    hubs: [
      { name: HUB, accessKey: HUB_KEY, durable: false },
      { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
    ],
  },
};

describe("NATS's max_payload below the relay's limits", () => {
  const cleanup = new Cleanup();
  let a: RunningRelay, b: RunningRelay;
  const logA = captureLogger('info');
  before(async () => {
    const nats = await startNatsServer(cleanup, 'n1', undefined, { config: `max_payload: ${MAX_PAYLOAD}\n` });
    a = await startTestRelay(cleanup, edgeOverrides('edge-a', [nats.url], hubs), { log: logA.log });
    b = await startTestRelay(cleanup, edgeOverrides('edge-b', [nats.url], hubs));
    await until(() => a.bus.connected && b.bus.connected && a.bus.maxPayload === MAX_PAYLOAD, 10000, 'both edges on NATS');
  });
  after(() => cleanup.run());

  it('says so when an edge connects', () => {
    const warning = logA.lines().find((e) => e.event === 'bus.max_payload_below_limits');
    assert.ok(warning, 'logged');
    assert.equal(warning.maxPayload, MAX_PAYLOAD);
    // A listener's control-channel answer (head and body, each up to limits.controlMessageBytes) may not cross it.
    const answers = logA.lines().find((e) => e.event === 'bus.max_payload_below_answers');
    assert.ok(answers, 'logged');
    assert.deepEqual([answers.maxPayload, answers.controlMessageBytes], [MAX_PAYLOAD, 65536]);
  });

  for (const hub of [HUB, OTHER_HUB]) {
    it(`refuses an event too large for the bus before anyone has it (${hub === HUB ? 'core NATS' : 'durable hub'})`, async (t) => {
      const group = `big-${hub}`;
      const sender = await RawPubSubClient.connect(accessUrl(a.url, { hub, userId: 'sender' }), PLAIN, t);
      const local = await RawPubSubClient.connect(accessUrl(a.url, { hub, userId: 'local' }), PLAIN, t);
      const remote = await RawPubSubClient.connect(accessUrl(b.url, { hub, userId: 'remote' }), PLAIN, t);
      for (const client of [local, remote]) assert.equal((await client.request({ type: 'joinGroup', group })).success, true);
      await untilAnswered(async () => {
        await sender.request({ type: 'sendToGroup', group, dataType: 'text', data: 'probe' });
        return remote.messages.some((m) => m.type === 'message' && m.data === 'probe');
      }, 5000, 'a small event to cross');

      const big = 'x'.repeat(100 * 1024);
      const ack = await sender.request({ type: 'sendToGroup', group, dataType: 'text', data: big }, 10000);
      // Before: core NATS acked success and only `local` had it; a durable hub answered InternalServerError (retry).
      assert.equal(ack.success, false);
      assert.equal(ack.error.name, 'BadRequest');
      // On core NATS an event leaves room for a replay answer's header (replaying-feed.ts largestEvent).
      assert.match(ack.error.message, hub === HUB ? /max_payload, 65536, less the header of a replay's answer/ : /max_payload \(65536\)/);

      const path = `/api/hubs/${hub}/groups/${group}/:send`;
      const key = hub === HUB ? HUB_KEY : OTHER_HUB_KEY;
      const rest = await httpRequest(`${a.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: `${a.url}${path}` }, key, 600)}` },
        body: Buffer.from(big),
      });
      assert.equal(rest.status, 413, rest.body.toString());
      assert.equal(JSON.parse(rest.body.toString()).code, 'BusPayloadTooLarge');

      // A small one after: the last either member got (nothing of the refused two reached anyone).
      await sender.request({ type: 'sendToGroup', group, dataType: 'text', data: 'after' });
      for (const client of [local, remote]) {
        await client.waitFor((m) => m.type === 'message' && m.data === 'after', 5000, 'the event after');
        assert.ok(!client.messages.some((m) => m.type === 'message' && m.data.length > 1000), 'the refused event reached a member');
      }
    });
  }

  it("lists a group's members held on another edge whose answer would pass max_payload: cut to fit, paged on (before: that edge left out, 200)", async (t) => {
    // 90 members on edge b with 1,024-character user ids: ~95 KiB of answer, more than the bus takes.
    const members = await Promise.all(Array.from({ length: 90 }, (_, i) => RawPubSubClient.connect(accessUrl(b.url, { hub: HUB, userId: `${String(i).padStart(4, '0')}${'u'.repeat(1020)}` }), PLAIN, t)));
    const ids = new Map<string, string>();
    for (const [i, m] of members.entries()) {
      ids.set(String(i).padStart(4, '0'), (await m.waitFor((x) => x.event === 'connected')).connectionId);
      assert.equal((await m.request({ type: 'joinGroup', group: 'many' })).success, true);
    }
    const listed: string[] = [];
    let next: string | undefined = `/api/hubs/${HUB}/groups/many/connections`;
    for (let pages = 0; next && pages < 20; pages++) {
      const url = `${a.url}${next}`;
      const res = await httpRequest(url, { headers: { authorization: `Bearer ${signJwt({ aud: url.split('?')[0] }, HUB_KEY, 600)}` } });
      assert.equal(res.status, 200, res.body.toString());
      const body = JSON.parse(res.body.toString()) as { value: { connectionId: string; userId: string }[]; nextLink?: string };
      listed.push(...body.value.map((v) => v.userId.slice(0, 4)));
      next = body.nextLink;
    }
    // Every member once, in connection id order, across pages.
    assert.deepEqual(listed, [...ids.keys()].sort((x, y) => (ids.get(x)! < ids.get(y)! ? -1 : 1)));
  });

  it(':addToGroups too large for the bus is refused whole, before this edge applies it (before: applied here, then 413)', async (t) => {
    const here = await RawPubSubClient.connect(accessUrl(a.url, { hub: HUB, userId: 'here' }), PLAIN, t);
    await here.waitFor((m) => m.event === 'connected');
    const groups = Array.from({ length: 80 }, (_, i) => `g${i}-${'n'.repeat(1000)}`);
    const url = `${a.url}/api/hubs/${HUB}/:addToGroups`;
    const res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 600)}` },
      body: Buffer.from(JSON.stringify({ groups, filter: "userId eq 'here'" })),
    });
    assert.equal(res.status, 413, res.body.toString());
    assert.equal(JSON.parse(res.body.toString()).code, 'BusPayloadTooLarge');
    const head = `${a.url}/api/hubs/${HUB}/groups/${encodeURIComponent(groups[0])}`;
    assert.equal((await httpRequest(head, { method: 'HEAD', headers: { authorization: `Bearer ${signJwt({ aud: head }, HUB_KEY, 600)}` } })).status, 404);
  });

  it(':addToGroups that fits the bus is applied on the edge holding the connection too, the message encoded once for both checks', async (t) => {
    const there = await RawPubSubClient.connect(accessUrl(b.url, { hub: HUB, userId: 'there' }), PLAIN, t);
    await there.waitFor((m) => m.event === 'connected');
    const group = `fits-${'n'.repeat(1000)}`;
    const url = `${a.url}/api/hubs/${HUB}/:addToGroups`;
    const res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 600)}` },
      body: Buffer.from(JSON.stringify({ groups: [group], filter: "userId eq 'there'" })),
    });
    assert.equal(res.status, 200, res.body.toString());
    const send = `${a.url}/api/hubs/${HUB}/groups/${encodeURIComponent(group)}/:send`;
    const sent = await httpRequest(send, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: send }, HUB_KEY, 600)}` },
      body: Buffer.from('to the group'),
    });
    assert.equal(sent.status, 202, sent.body.toString());
    const got = await there.waitFor((m) => m.type === 'message' && m.group === group);
    assert.equal(got.data, 'to the group');
  });

  it('moves a reliable session holding an event as large as the bus takes to another edge, whole (it is more than one page of the hand-over)', async (t) => {
    const group = 'big-session';
    const member = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'member' }), RELIABLE, t);
    const { connectionId, reconnectionToken } = await member.waitFor((m) => m.type === 'system' && m.event === 'connected');
    assert.equal((await member.request({ type: 'joinGroup', group })).success, true);
    const sender = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'sender' }), PLAIN, t);
    const send = (data: string) => sender.request({ type: 'sendToGroup', group, dataType: 'text', data }, 10000);
    // The largest text event the bus takes, from what the refusal of a larger one says.
    const probe = 100 * 1024;
    const refused = await send('p'.repeat(probe));
    const [, takes, limit] = /takes (\d+) bytes on the bus, more than the (\d+)/.exec(refused.error?.message ?? '') ?? [];
    assert.ok(takes && limit, JSON.stringify(refused));
    const largest = probe - (Number(takes) - Number(limit));
    const data = 'f' + 'x'.repeat(largest - 1);
    for (const payload of ['small', data, 'last']) {
      const ack = await send(payload);
      assert.equal(ack.success, true, JSON.stringify(ack));
    }
    await until(() => member.dataMessages().length === 3, 10000, 'three events on A');
    member.ws.terminate();
    // Nothing acknowledged: B takes the session and pages all three from A.
    const recovery = recoveryQuery(connectionId, reconnectionToken);
    const moved = await RawPubSubClient.connect(accessUrl(b.url, { userId: 'member' }) + recovery, RELIABLE, t);
    const system = await moved.waitFor((m) => m.type === 'system', 15000, 'the session on B');
    // Before: A's page with the large event was more than NATS carries; the take timed out and the session was lost.
    assert.equal(system.event, 'connected', JSON.stringify(system));
    assert.equal(system.connectionId, connectionId);
    await until(() => moved.dataMessages().length === 3, 10000, 'the three events again on B');
    const got = moved.dataMessages();
    assert.deepEqual(got.map((m) => m.sequenceId), [1, 2, 3]);
    assert.deepEqual(got.map((m) => m.data.length), [5, largest, 4]);
    assert.ok(got[1].data === data, 'the large event came whole');
  });

  it('has the listener fetch a request body too large for the bus with its notice', async (t) => {
    await startHycoHttpsListener(t, a.url, (req, res) => {
      let bytes = 0;
      req.on('data', (chunk: Buffer) => (bytes += chunk.length));
      req.on('end', () => res.end(String(bytes)));
    }, 'upload');
    const size = MAX_PAYLOAD - 100;
    for (const edge of [a, b]) {
      const url = `${edge.url}/upload/x`;
      // Before: through B (the bus) 400 BadRequest "Malformed request"; through A, the listener's own edge, 200.
      const answer = await httpRequest(url, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(url) }, body: Buffer.alloc(size, 97), timeoutMs: 10000 });
      assert.equal(answer.status, 200, answer.body.toString());
      assert.equal(answer.body.toString(), String(size));
    }
  });

  it("answers 502 BadListenerResponse to a sender on another edge whose listener's control-channel answer the bus cannot carry (200 on the listener's edge), as logged at connect", async (t) => {
    // hyco-https sends an answer of up to 64 KiB on its control channel: with the head, more than this max_payload.
    const size = MAX_PAYLOAD - 100;
    await startHycoHttpsListener(t, a.url, (_req, res) => res.end(Buffer.alloc(size, 98)), 'download');
    const get = (edge: RunningRelay) => {
      const url = `${edge.url}/download/x`;
      return httpRequest(url, { headers: { ServiceBusAuthorization: tokenFor(url) }, timeoutMs: 10000 });
    };
    const here = await get(a);
    assert.equal(here.status, 200);
    assert.equal(here.body.length, size);
    const there = await get(b);
    assert.equal(there.status, 502, `${there.body.length} bytes`);
    assert.equal(JSON.parse(there.body.toString()).code, 'BadListenerResponse');
  });
});
