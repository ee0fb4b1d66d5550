// Deeply nested JSON from the network (issue 18, defect 3): a client's
// `sendToGroup` with `data` nested 10,000 deep (20 KB) made JSON.stringify
// throw out of the frame handler and ended the process. Nesting is bounded at
// parse (MAX_JSON_DEPTH): such a frame ends that client's connection alone
// (1008 InvalidMessage), a REST body is refused 400, an upstream reply is
// handed on as text; data nested within the bound is delivered intact.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { MAX_JSON_DEPTH } from '../../src/validation/bounded-json.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const nested = (depth: number, leaf = '1') => '['.repeat(depth) + leaf + ']'.repeat(depth);

describe('deeply nested JSON from a pub/sub client', () => {
  it('ends only the sending connection (1008 InvalidMessage) for sendToGroup and event data nested 10,000 deep', async (t) => {
    const relay = await startPubSubRelay(t);
    const member = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await member.request({ type: 'joinGroup', group: 'g' })).success, true);
    for (const type of ['sendToGroup', 'event']) {
      const hostile = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
      await hostile.waitFor((m) => m.event === 'connected');
      hostile.send(`{"type":"${type}","group":"g","event":"e","ackId":1,"data":${nested(10000)}}`);
      const closed = await withTimeout(hostile.closed, 5000, `close after a deep ${type}`);
      assert.equal(closed.code, 1008, type);
      assert.equal(closed.reason, 'InvalidMessage', type);
    }
    // The node kept serving everyone else.
    const sender = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await sender.request({ type: 'sendToGroup', group: 'g', data: { still: 'here' } })).success, true);
    await until(() => member.dataMessages().length === 1, 5000, 'delivery');
    assert.deepEqual(member.dataMessages()[0].data, { still: 'here' });
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });

  it('delivers data nested up to the bound intact', async (t) => {
    const relay = await startPubSubRelay(t);
    const member = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await member.request({ type: 'joinGroup', group: 'g' })).success, true);
    // The frame itself is one level: its data may nest MAX_JSON_DEPTH - 1 deep.
    const data = JSON.parse(nested(MAX_JSON_DEPTH - 1, '"leaf"'));
    assert.equal((await member.request({ type: 'sendToGroup', group: 'g', data })).success, true);
    await until(() => member.dataMessages().length === 1, 5000, 'delivery');
    assert.deepEqual(member.dataMessages()[0].data, data);
  });
});

describe('deeply nested JSON over REST and from the upstream', () => {
  it('refuses a REST body nested past the bound with 400, and an :addToGroups body too', async (t) => {
    const relay = await startPubSubRelay(t);
    for (const op of [':send', ':addToGroups']) {
      const url = `${relay.url}/api/hubs/${HUB}/${op}`;
      const res = await httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` },
        body: Buffer.from(op === ':send' ? nested(10000) : `{"groups":["g"],"filter":"userId eq 'a'","x":${nested(10000)}}`),
      });
      assert.equal(res.status, 400, op);
      assert.equal(JSON.parse(String(res.body)).code, 'BadRequest', op);
    }
  });

  it('hands on an upstream reply nested past the bound as text', async (t) => {
    const upstream = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(nested(10000)));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => upstream.close(r)));
    const port = (upstream.address() as { port: number }).port;
    const relay = await startPubSubRelay(t, {
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, upstream: { url: `http://127.0.0.1:${port}/events` } }, { name: OTHER_HUB, accessKey: OTHER_HUB_KEY }] },
    });
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    assert.equal((await c.request({ type: 'event', event: 'ask', data: 1 })).success, true);
    const reply = await c.waitFor((m) => m.type === 'message');
    assert.deepEqual([reply.from, reply.dataType, reply.data], ['server', 'text', nested(10000)]);
  });
});
