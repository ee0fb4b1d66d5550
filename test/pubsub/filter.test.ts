// REST `filter`: the OData subset Azure Web PubSub documents, parsed by
// connection-filter.ts, on sends and on :addToGroups / :removeFromGroups,
// through the published @azure/web-pubsub server SDK.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { signJwt } from '../../src/auth/jwt.ts';
import { ConnectionFilter, FilterSyntaxError, type FilterSubject } from '../../src/pubsub/connection-filter.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';

const alice = { id: 'c1', userId: 'alice', groups: new Set(['g1', "it's"]) };
const anonymous = { id: 'c2', userId: null, groups: new Set<string>() };

function selects(text: string, subject: FilterSubject = alice): boolean {
  return ConnectionFilter.parse(text).matches(subject);
}

function syntaxError(text: string): FilterSyntaxError {
  try {
    ConnectionFilter.parse(text);
  } catch (err) {
    if (err instanceof FilterSyntaxError) return err;
    throw err;
  }
  throw new Error(`${text} parsed`);
}

describe('OData filter: what it selects', () => {
  it('compares userId and connectionId with eq and ne, literal on either side, null for no user', () => {
    assert.equal(selects("userId eq 'alice'"), true);
    assert.equal(selects("'alice' eq userId"), true);
    assert.equal(selects("userId ne 'alice'"), false);
    assert.equal(selects("connectionId eq 'c1'"), true);
    assert.equal(selects('userId eq null', anonymous), true);
    assert.equal(selects('userId ne null'), true);
  });

  it('tests membership with in: a list of values, or a literal in groups', () => {
    assert.equal(selects("userId in ('bob', 'alice')"), true);
    assert.equal(selects("connectionId in ('x')"), false);
    assert.equal(selects("'g1' in groups"), true);
    assert.equal(selects("'g2' in groups"), false);
    assert.equal(selects("'it''s' in groups"), true, 'a quote written twice');
  });

  it('ranges over groups with any(), with or without a lambda', () => {
    assert.equal(selects("groups/any(g: g eq 'g1')"), true);
    assert.equal(selects("groups/any(g: g ne 'g1' and g ne 'it''s')"), false);
    assert.equal(selects('groups/any()'), true);
    assert.equal(selects('groups/any()', anonymous), false);
    assert.equal(selects("groups/any(x: x in ('a', 'g1'))"), true);
  });

  it('combines with not, and, or and parentheses; and binds tighter than or', () => {
    assert.equal(selects("not('g1' in groups)"), false);
    assert.equal(selects("not 'g2' in groups"), true);
    assert.equal(selects("userId eq 'bob' or userId eq 'alice' and 'g1' in groups"), true);
    assert.equal(selects("(userId eq 'bob' or userId eq 'alice') and 'g2' in groups"), false);
    assert.equal(selects("userId ne 'user1' and userId ne 'user2'"), true);
  });
});

describe('OData filter: malformed filters name the position', () => {
  it('reports where the parser stopped', () => {
    assert.equal(syntaxError("userId eq 'a").position, 10);
    assert.equal(syntaxError("userId eq 'a' oops").position, 14);
    assert.equal(syntaxError("userId gt 'a'").position, 7);
    assert.equal(syntaxError("name eq 'a'").position, 0);
    assert.equal(syntaxError("(userId eq 'a'").position, 14);
    assert.equal(syntaxError("groups eq 'a'").position, 7);
    assert.equal(syntaxError('').position, 0);
    assert.match(syntaxError("userId eq 'a' and").message, /at position 17$/);
  });

  it('bounds length and nesting', () => {
    assert.match(syntaxError("userId eq '" + 'x'.repeat(5000) + "'").message, /longer than/);
    assert.match(syntaxError('not '.repeat(40) + "userId eq 'a'").message, /nested deeper/);
    assert.match(syntaxError('('.repeat(40) + "userId eq 'a'" + ')'.repeat(40)).message, /nested deeper/);
  });
});

describe('REST filter', () => {
  it('filters sends to all, to a group and to a user, and :addToGroups / :removeFromGroups', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=${HUB_KEY};Version=1.0;`, HUB, { allowInsecureConnection: true });
    const a = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const b = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob' }), PLAIN, t);
    const b2 = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob' }), PLAIN, t);
    const b2Id = (await b2.waitFor((m) => m.event === 'connected')).connectionId;
    await a.request({ type: 'joinGroup', group: 'vip' });
    await b.request({ type: 'joinGroup', group: 'vip' });
    await svc.sendToAll('not alice', { contentType: 'text/plain', filter: "userId ne 'alice'" });
    await svc.sendToAll('not vip', { contentType: 'text/plain', filter: "not('vip' in groups)" });
    await svc.group('vip').sendToAll('vip bob', { contentType: 'text/plain', filter: "userId eq 'bob'" });
    await svc.sendToUser('bob', 'bob not b2', { contentType: 'text/plain', filter: `connectionId ne '${b2Id.replace(/'/g, "''")}'` });
    await svc.addConnectionsToGroups(['late'], "userId eq 'bob' and groups/any()");
    await svc.group('late').sendToAll('late', { contentType: 'text/plain' });
    await svc.removeConnectionsFromGroups(['vip'], "userId in ('alice')");
    await svc.group('vip').sendToAll('vip after', { contentType: 'text/plain' });
    await until(() => b.dataMessages().length === 5, 5000, 'bob');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(a.dataMessages().map((m) => m.data), []);
    assert.deepEqual(b.dataMessages().map((m) => m.data), ['not alice', 'vip bob', 'bob not b2', 'late', 'vip after']);
    assert.deepEqual(b2.dataMessages().map((m) => m.data), ['not alice', 'not vip']);
  });

  it('answers a malformed filter 400 FilterInvalid with the position, and sends nothing', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const url = `${relay.url}/api/hubs/${HUB}/:send?filter=${encodeURIComponent("userId eq 'a' and")}`;
    const res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: url.split('?')[0] }, HUB_KEY, 60)}` },
      body: Buffer.from('x'),
    });
    assert.equal(res.status, 400);
    const body = JSON.parse(String(res.body));
    assert.equal(body.code, 'FilterInvalid');
    assert.match(body.message, /at position 17/);
    const groups = `${relay.url}/api/hubs/${HUB}/:addToGroups`;
    const bad = await httpRequest(groups, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: groups }, HUB_KEY, 60)}` },
      body: Buffer.from(JSON.stringify({ groups: ['g'], filter: 'userId eq' })),
    });
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(String(bad.body)).code, 'FilterInvalid');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.dataMessages().length, 0);
  });
});
