// The pub/sub REST API through the published @azure/web-pubsub server SDK
// (which accepts our endpoint with allowInsecureConnection), plus plain HTTP
// for what the SDK cannot be made to send (bad tokens, odd bodies).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { signJwt } from '../../src/auth/jwt.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RawPubSubClient, accessUrl, pubsubOverrides, startPubSubRelay } from '../helpers/pubsub.ts';
import { tcp } from '../helpers/raw-socket.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

function sdk(url: string, hub = HUB, key = HUB_KEY): WebPubSubServiceClient {
  return new WebPubSubServiceClient(`Endpoint=${url};AccessKey=${key};Version=1.0;`, hub, { allowInsecureConnection: true });
}

describe('pub/sub REST API', () => {
  it('sends to the hub, a user and a connection as messages from the server, to a group as a group message from nobody', async (t) => {
    const relay = await startPubSubRelay(t);
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const bob = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob' }), PLAIN, t);
    const aliceId = (await alice.waitFor((m) => m.event === 'connected')).connectionId;
    await bob.request({ type: 'joinGroup', group: 'g' });
    const svc = sdk(relay.url);
    await svc.sendToAll({ to: 'all' });
    await svc.sendToAll('all but alice', { contentType: 'text/plain', filter: undefined, excludedConnections: [aliceId] } as never);
    await svc.group('g').sendToAll(new Uint8Array([1, 2, 3]));
    await svc.sendToUser('alice', 'for alice', { contentType: 'text/plain' });
    await svc.sendToConnection(aliceId, { only: 'alice' });
    await until(() => alice.dataMessages().length === 3 && bob.dataMessages().length === 3, 5000, 'deliveries');
    assert.deepEqual(
      alice.dataMessages().map((m) => [m.from, m.dataType, m.data]),
      [['server', 'json', { to: 'all' }], ['server', 'text', 'for alice'], ['server', 'json', { only: 'alice' }]],
    );
    assert.deepEqual(
      bob.dataMessages().map((m) => [m.from, m.group, m.fromUserId, m.dataType, m.data]),
      [
        ['server', undefined, undefined, 'json', { to: 'all' }],
        ['server', undefined, undefined, 'text', 'all but alice'],
        ['group', 'g', null, 'binary', 'AQID'],
      ],
    );
  });

  it('manages membership and connections, and answers exists checks', async (t) => {
    const relay = await startPubSubRelay(t);
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice', roles: [] }), PLAIN, t);
    const aliceId = (await alice.waitFor((m) => m.event === 'connected')).connectionId;
    const svc = sdk(relay.url);
    const group = svc.group('odd group.*>');
    assert.equal(await svc.groupExists('odd group.*>'), false);
    await group.addConnection(aliceId);
    assert.equal(await svc.groupExists('odd group.*>'), true);
    await group.sendToAll('in', { contentType: 'text/plain' });
    await group.removeConnection(aliceId);
    assert.equal(await svc.groupExists('odd group.*>'), false);
    await group.sendToAll('out', { contentType: 'text/plain' });
    await group.addUser('alice');
    await group.sendToAll('user in', { contentType: 'text/plain' });
    await group.removeUser('alice');
    await svc.group('second').addUser('alice');
    await svc.removeUserFromAllGroups('alice');
    await svc.group('second').sendToAll('gone', { contentType: 'text/plain' });
    assert.equal(await svc.userExists('alice'), true);
    assert.equal(await svc.userExists('nobody'), false);
    assert.equal(await svc.connectionExists(aliceId), true);
    assert.equal(await svc.connectionExists('no-such-connection'), false);
    await svc.grantPermission(aliceId, 'joinLeaveGroup', { targetName: 'granted' });
    assert.equal(await svc.hasPermission(aliceId, 'joinLeaveGroup', { targetName: 'granted' }), true);
    assert.equal((await alice.request({ type: 'joinGroup', group: 'granted' })).success, true);
    await svc.revokePermission(aliceId, 'joinLeaveGroup', { targetName: 'granted' });
    assert.equal((await alice.request({ type: 'leaveGroup', group: 'granted' })).error.name, 'Forbidden');
    // Without targetName a check asks about every group: alice has it for one only.
    assert.equal(await svc.hasPermission(aliceId, 'joinLeaveGroup'), false);

    await until(() => alice.dataMessages().length === 2, 5000, 'messages');
    assert.deepEqual(alice.dataMessages().map((m) => m.data), ['in', 'user in']);
    await svc.closeConnection(aliceId, { reason: 'done' });
    const closed = await alice.closed;
    assert.equal(closed.code, 1008);
    assert.equal((await alice.waitFor((m) => m.event === 'disconnected')).message, 'done');
    assert.equal(await svc.connectionExists(aliceId), false);
  });

  it('revokes one group out of a role that allows every group, and checks without targetName against every group', async (t) => {
    const relay = await startPubSubRelay(t);
    const bob = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob', roles: ['webpubsub.joinLeaveGroup'] }), PLAIN, t);
    const bobId = (await bob.waitFor((m) => m.event === 'connected')).connectionId;
    const svc = sdk(relay.url);
    assert.equal(await svc.hasPermission(bobId, 'joinLeaveGroup'), true);
    await svc.revokePermission(bobId, 'joinLeaveGroup', { targetName: 'secret' });
    assert.equal(await svc.hasPermission(bobId, 'joinLeaveGroup', { targetName: 'secret' }), false);
    assert.equal(await svc.hasPermission(bobId, 'joinLeaveGroup', { targetName: 'open' }), true);
    assert.equal(await svc.hasPermission(bobId, 'joinLeaveGroup'), false);
    assert.equal((await bob.request({ type: 'joinGroup', group: 'secret' })).error.name, 'Forbidden');
    assert.equal((await bob.request({ type: 'joinGroup', group: 'open' })).success, true);
    await svc.grantPermission(bobId, 'joinLeaveGroup', { targetName: 'secret' });
    assert.equal((await bob.request({ type: 'joinGroup', group: 'secret' })).success, true);
  });

  it('revokes a permission of a connection that does not exist without an error, as Azure does; a grant or check of one is 404 (before: revoke 404, the SDK threw)', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = sdk(relay.url);
    // Azure: "Service doesn't throw error for invalid connection-ids" (@azure/web-pubsub's live tests, revokePermission).
    await svc.revokePermission('no-such-connection', 'joinLeaveGroup', { targetName: 'x' });
    await svc.revokePermission('no-such-connection', 'sendToGroup');
    await assert.rejects(svc.grantPermission('no-such-connection', 'joinLeaveGroup', { targetName: 'x' }), (err: { statusCode?: number }) => err.statusCode === 404);
    assert.equal(await svc.hasPermission('no-such-connection', 'joinLeaveGroup'), false);
  });

  it('closes by user, group and hub with the reason and leaving out the excluded connections, through the SDK', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = sdk(relay.url);
    const open = async (userId: string, groups: string[]) => {
      const c = await RawPubSubClient.connect(accessUrl(relay.url, { userId, groups }), PLAIN, t);
      return { c, id: (await c.waitFor((m) => m.event === 'connected')).connectionId as string };
    };
    const [a1, a2, b1, b2] = [await open('a', ['g']), await open('a', ['g']), await open('b', ['g']), await open('b', [])];
    // `excluded` is a query parameter the SDK passes on though its close options do not declare it.
    const closedWith = async (c: RawPubSubClient) => [(await c.closed).code, (await c.waitFor((m) => m.event === 'disconnected')).message];
    await svc.closeUserConnections('a', { reason: 'user', excluded: [a2.id] } as never);
    assert.deepEqual(await closedWith(a1.c), [1008, 'user']);
    await svc.group('g').closeAllConnections({ reason: 'group', excluded: [b1.id] } as never);
    assert.deepEqual(await closedWith(a2.c), [1008, 'group']);
    await svc.closeAllConnections({ reason: 'hub', excluded: [b1.id] } as never);
    assert.deepEqual(await closedWith(b2.c), [1008, 'hub']);
    assert.equal(await svc.connectionExists(b1.id), true, 'excluded every time');
    // Calls about connections, users and groups that do not exist are answered as Azure answers them (its live SDK tests).
    await svc.closeConnection('no-such-connection', { reason: 'x' });
    await svc.closeUserConnections('nobody');
    await svc.group('empty').closeAllConnections();
    await svc.sendToConnection('no-such-connection', 'x', { contentType: 'text/plain', messageTtlSeconds: 60 });
    await svc.sendToUser('nobody', { x: 1 }, { filter: "userId ne 'user1'" });
    await svc.removeConnectionFromAllGroups('no-such-connection');
    await svc.removeUserFromAllGroups('nobody');
    await svc.group('empty').removeConnection('no-such-connection');
    await assert.rejects(svc.group('empty').addConnection('no-such-connection'), (err: { statusCode?: number }) => err.statusCode === 404);
    // removeConnectionFromAllGroups on one that exists.
    await svc.group('h').addConnection(b1.id);
    await svc.removeConnectionFromAllGroups(b1.id);
    assert.deepEqual([await svc.groupExists('g'), await svc.groupExists('h')], [false, false]);
  });

  it('cuts a long close reason at 120 characters without splitting one in two (before: half an emoji, a lone surrogate, ended it)', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = sdk(relay.url);
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const aliceId = (await alice.waitFor((m) => m.event === 'connected')).connectionId;
    // 'a' then emoji, two UTF-16 code units each: the 120th unit is the first half of one.
    const reason = `a${'😀'.repeat(100)}`;
    await svc.closeConnection(aliceId, { reason });
    assert.equal((await alice.closed).code, 1008);
    const told = (await alice.waitFor((m) => m.event === 'disconnected')).message as string;
    assert.doesNotMatch(told, /[\uD800-\uDBFF]$/, 'ends with the first half of a character');
    assert.equal(told, reason.slice(0, 119));
  });

  it('holds REST membership calls to limits.groupsPerConnection, as a client\'s own joins are', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { groupsPerConnection: 2 } });
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const aliceId = (await alice.waitFor((m) => m.event === 'connected')).connectionId;
    for (const group of ['a', 'b']) assert.equal((await alice.request({ type: 'joinGroup', group })).success, true);
    assert.equal((await alice.request({ type: 'joinGroup', group: 'c' })).error.name, 'Forbidden');
    const svc = sdk(relay.url);
    await svc.group('c').addConnection(aliceId);
    await svc.addConnectionsToGroups(Array.from({ length: 50 }, (_, i) => `many-${i}`), `connectionId eq '${aliceId}'`);
    // Before: 53 groups (each a cost of every later filter and every delivery).
    assert.deepEqual([...relay.pubsub.hub(HUB)!.local.connections.get(aliceId)!.groups].sort(), ['a', 'b']);
    assert.equal(await svc.groupExists('c'), false);
  });

  it('pages a group\'s members in connection id order, each once, whatever the page size', async (t) => {
    const relay = await startPubSubRelay(t);
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) {
      const member = await RawPubSubClient.connect(accessUrl(relay.url, { userId: `m${i}` }), PLAIN, t);
      ids.push((await member.waitFor((m) => m.event === 'connected')).connectionId);
      assert.equal((await member.request({ type: 'joinGroup', group: 'paged' })).success, true);
    }
    const svc = sdk(relay.url);
    for (const maxPageSize of [1, 3, 7, 25, 100]) {
      const listed: string[] = [];
      for await (const m of await svc.group('paged').listConnections({ maxPageSize })) listed.push(m.connectionId);
      assert.deepEqual(listed, [...ids].sort(), `pages of ${maxPageSize}`);
    }
  });

  it('holds the groups a connection\'s permissions name one by one to limits.groupsPerConnection (before: no bound, ~1 KiB each for good)', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { groupsPerConnection: 3 } });
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice', roles: [] }), PLAIN, t);
    const aliceId = (await alice.waitFor((m) => m.event === 'connected')).connectionId;
    const svc = sdk(relay.url);
    for (const group of ['a', 'b', 'c', 'a']) await svc.grantPermission(aliceId, 'sendToGroup', { targetName: group });
    await assert.rejects(svc.grantPermission(aliceId, 'sendToGroup', { targetName: 'd' }), (err: { statusCode?: number; message?: string }) => {
      assert.equal(err.statusCode, 400);
      assert.match(String(err.message), /limits\.groupsPerConnection/);
      return true;
    });
    assert.equal(await svc.hasPermission(aliceId, 'sendToGroup', { targetName: 'd' }), false);
    // Revoking one it names frees a place; every group at once is always taken.
    await svc.revokePermission(aliceId, 'sendToGroup', { targetName: 'c' });
    await svc.grantPermission(aliceId, 'sendToGroup', { targetName: 'd' });
    await svc.grantPermission(aliceId, 'joinLeaveGroup');
    // Revokes out of every group name groups too: held to the same bound.
    for (const group of ['x', 'y', 'z']) await svc.revokePermission(aliceId, 'joinLeaveGroup', { targetName: group });
    await assert.rejects(svc.revokePermission(aliceId, 'joinLeaveGroup', { targetName: 'w' }), (err: { statusCode?: number }) => err.statusCode === 400);
    assert.equal((await alice.request({ type: 'joinGroup', group: 'w' })).success, true, 'the refused revoke changed nothing');
    assert.equal((await alice.request({ type: 'joinGroup', group: 'x' })).error.name, 'Forbidden');
    await svc.revokePermission(aliceId, 'joinLeaveGroup');
    await svc.grantPermission(aliceId, 'joinLeaveGroup', { targetName: 'w' });
  });

  it('refuses bad credentials and requests, per hub', async (t) => {
    const relay = await startPubSubRelay(t);
    const path = `/api/hubs/${HUB}/:send?api-version=2024-12-01`;
    const url = `${relay.url}${path}`;
    const post = (token: string | undefined, body = '{}', type = 'application/json') =>
      httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': type, ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: Buffer.from(body),
      });
    assert.equal((await post(undefined)).status, 401);
    assert.equal((await post(signJwt({ aud: url }, 'wrong-key-0123456789abc', 60))).status, 401);
    assert.equal((await post(signJwt({ aud: url }, HUB_KEY, -120))).status, 401);
    assert.equal((await post(signJwt({ aud: `${relay.url}/api/hubs/${OTHER_HUB}/:send` }, HUB_KEY, 60))).status, 401);
    assert.equal((await post(signJwt({ aud: url }, OTHER_HUB_KEY, 60))).status, 401, 'other hub key');
    const good = signJwt({ aud: url }, HUB_KEY, 60);
    assert.equal((await post(good)).status, 202);
    assert.equal((await post(good, '{broken')).status, 400);
    assert.equal((await post(good, 'x', 'image/png')).status, 415);
    assert.equal((await post(good, 'x'.repeat(2 * 1048576))).status, 413);
    // The same size sent chunked (no Content-Length): found too large while read. Before: the 413 went out, then the
    // relay read the socket of the request it had let go and threw (relay.crash, the process gone).
    const chunked = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'transfer-encoding': 'chunked', authorization: `Bearer ${good}` },
      body: Array.from({ length: 64 }, () => Buffer.alloc(32768, 0x78)),
    }).catch((err: Error) => ({ status: 0, err }));
    assert.equal(chunked.status, 413, `chunked: ${(chunked as { err?: Error }).err?.message}`);
    assert.equal((await post(good)).status, 202, 'still serving');
    // A group's members come in pages; a continuation token is a connection id, a page size a positive count.
    for (const query of ['continuationToken=a%20b', 'maxpagesize=0', 'top=-1', 'maxpagesize=x']) {
      const list = `${relay.url}/api/hubs/${HUB}/groups/g/connections?api-version=2024-12-01&${query}`;
      assert.equal((await httpRequest(list, { headers: { authorization: `Bearer ${signJwt({ aud: list }, HUB_KEY, 60)}` } })).status, 400, query);
    }
    const missing = `${relay.url}/api/hubs/nohub/:send`;
    assert.equal((await httpRequest(missing, { method: 'POST' })).status, 404);
    const unknown = `${relay.url}/api/hubs/${HUB}/teleport`;
    assert.equal((await httpRequest(unknown, { headers: { authorization: `Bearer ${signJwt({ aud: unknown }, HUB_KEY, 60)}` } })).status, 404);
    // The other hub's own key works there.
    assert.equal((await sdk(relay.url, OTHER_HUB, OTHER_HUB_KEY).groupExists('g')), false);
  });

  it('takes Azure\'s optional parameters as Azure does, and names every error\'s code in x-ms-error-code (HEAD too)', async (t) => {
    const relay = await startPubSubRelay(t);
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const post = (query: string, path = ':send') => {
      const url = `${relay.url}/api/hubs/${HUB}/${path}?api-version=2024-12-01${query}`;
      return httpRequest(url, { method: 'POST', headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` }, body: Buffer.from(query) });
    };
    // An excluded id no connection can have excludes nobody (before: the whole send refused 400).
    const odd = `&excluded=${'x'.repeat(200)}&excluded=`;
    assert.equal((await post(odd)).status, 202);
    await until(() => alice.dataMessages().some((m) => m.data === odd), 5000, 'the send with odd excluded ids');
    // messageTtlSeconds: 0 to 300, as Azure takes it (before: anything, unchecked).
    assert.equal((await post('&messageTtlSeconds=300')).status, 202);
    for (const ttl of ['301', 'abc', '-1', '1.5']) {
      const refused = await post(`&messageTtlSeconds=${ttl}`);
      assert.equal(refused.status, 400, ttl);
      assert.match(String(refused.body), /messageTtlSeconds must be a whole number from 0 to 300/);
    }
    // A token for Azure's MQTT or Socket.IO clients would open nothing here: refused with the reason (before: a Web PubSub token).
    assert.equal((await post('&clientType=Default', ':generateToken')).status, 200);
    for (const clientType of ['MQTT', 'SocketIO']) {
      const refused = await post(`&clientType=${clientType}`, ':generateToken');
      assert.equal(refused.status, 400, clientType);
      assert.match(String(refused.body), /is not supported/);
    }
    // Every error names its code in a header; a HEAD answer has no body to carry it (before: a bare 401).
    const exists = `${relay.url}/api/hubs/${HUB}/connections/nobody?api-version=2024-12-01`;
    const head = await httpRequest(exists, { method: 'HEAD', headers: { authorization: `Bearer ${signJwt({ aud: exists }, 'wrong-key-0123456789abc', 60)}` } });
    assert.equal(head.status, 401);
    assert.equal(head.headers['x-ms-error-code'], 'TokenInvalid');
    const absent = await httpRequest(exists, { method: 'HEAD', headers: { authorization: `Bearer ${signJwt({ aud: exists }, HUB_KEY, 60)}` } });
    assert.equal(absent.status, 404);
    assert.equal(absent.headers['x-ms-error-code'], 'NotFound');
    const broken = await post('&messageTtlSeconds=301');
    assert.equal(broken.headers['x-ms-error-code'], 'BadRequest');
    // (The JS SDK reads a code from the body only; Azure.Core in .NET and Java's and Python's SDKs read this header.)
  });

  it('refuses a group named with white space only, as Azure\'s REST reference does (before: a group "  " made and sent to)', async (t) => {
    const relay = await startPubSubRelay(t);
    const alice = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const call = (method: string, path: string, body?: string) => {
      const url = `${relay.url}/api/hubs/${HUB}/${path}${path.includes('?') ? '&' : '?'}api-version=2024-12-01`;
      const headers: Record<string, string> = { authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      return httpRequest(url, { method, headers, body: body === undefined ? undefined : Buffer.from(body) });
    };
    for (const group of ['%20%20', '%20', '%09', '%E3%80%80']) {
      assert.equal((await call('PUT', `users/alice/groups/${group}`)).status, 400, `PUT users/alice/groups/${group}`);
      assert.equal((await call('POST', `groups/${group}/:send`, '{}')).status, 400, `POST groups/${group}/:send`);
      assert.equal((await call('HEAD', `groups/${group}`)).status, 400, `HEAD groups/${group}`);
      assert.equal((await call('POST', `:generateToken?group=${group}`)).status, 400, `:generateToken group=${group}`);
      assert.equal((await call('PUT', `permissions/sendToGroup/connections/c1?targetName=${group}`)).status, 400, `targetName=${group}`);
    }
    assert.equal((await call('POST', ':addToGroups', JSON.stringify({ groups: ['  '] }))).status, 400);
    assert.equal((await call('POST', ':removeFromGroups', JSON.stringify({ groups: ['ok', '\t'] }))).status, 400);
    // A name with white space in it, or around it, is a name.
    assert.equal((await call('PUT', 'users/alice/groups/%20a%20b%20')).status, 200);
    assert.equal((await call('POST', `groups/%20a%20b%20/:send`, '{"to":"spaced"}')).status, 202);
    await until(() => alice.dataMessages().some((m) => m.group === ' a b '), 5000, 'the send to group " a b "');
  });

  it(':generateToken names only a host in the audience: a Host header carrying a path cannot mint a REST token', async (t) => {
    const relay = await startPubSubRelay(t);
    const { host } = new URL(relay.url);
    const mint = (hostHeader: string) => {
      const url = `${relay.url}/api/hubs/${HUB}/:generateToken?api-version=2024-12-01`;
      return httpRequest(url, { method: 'POST', headers: { host: hostHeader, authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` } });
    };
    const minted = await mint(host);
    assert.equal(minted.status, 200);
    const token = JSON.parse(String(minted.body)).token as string;
    assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).aud, `http://${host}/client/hubs/${HUB}`);
    // Before: aud became http://{host}/api/hubs/{hub}/:closeConnections#/client/hubs/{hub}, which that endpoint took for its own (204).
    const forged = await mint(`${host}/api/hubs/${HUB}/:closeConnections#`);
    assert.equal(forged.status, 400);
    const close = `${relay.url}/api/hubs/${HUB}/:closeConnections?api-version=2024-12-01`;
    const withFragment = signJwt({ aud: `${close}#/client/hubs/${HUB}` }, HUB_KEY, 60);
    assert.equal((await httpRequest(close, { method: 'POST', headers: { authorization: `Bearer ${withFragment}` } })).status, 401);
  });

  it('posts client events to the upstream as CloudEvents and acks by its answer', async (t) => {
    const seen: { headers: Record<string, unknown>; body: string }[] = [];
    let answer = { status: 200, body: '', type: 'text/plain' };
    const upstream = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ headers: req.headers, body: Buffer.concat(chunks).toString() });
        res.writeHead(answer.status, { 'content-type': answer.type }).end(answer.body);
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    t.after(() => new Promise((r) => upstream.close(r)));
    const port = (upstream.address() as { port: number }).port;
    const relay = await startPubSubRelay(t, {
      pubsub: {
        hubs: [
          { name: HUB, accessKey: HUB_KEY, upstream: { url: `http://127.0.0.1:${port}/events` } },
          { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
        ],
      },
    });
    const c = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const id = (await c.waitFor((m) => m.event === 'connected')).connectionId;
    assert.equal((await c.request({ type: 'event', event: 'chat', dataType: 'json', data: { hi: 1 } })).success, true);
    assert.equal(seen[0].headers['ce-type'], 'azure.webpubsub.user.chat');
    assert.equal(seen[0].headers['ce-connectionid'], id);
    assert.equal(seen[0].headers['ce-userid'], 'alice');
    assert.equal(seen[0].headers['ce-hub'], HUB);
    assert.match(String(seen[0].headers['ce-signature']), /^sha256=[0-9a-f]{64}$/);
    assert.equal(seen[0].body, '{"hi":1}');
    answer = { status: 200, body: 'reply', type: 'text/plain' };
    assert.equal((await c.request({ type: 'event', event: 'ask', dataType: 'text', data: 'q' })).success, true);
    const reply = await c.waitFor((m) => m.type === 'message');
    assert.deepEqual([reply.from, reply.dataType, reply.data], ['server', 'text', 'reply']);
    answer = { status: 500, body: '', type: 'text/plain' };
    assert.equal((await c.request({ type: 'event', event: 'x', data: 1 })).error.name, 'UpstreamFailed');
    // A refusal's reason reaches the client; a failing handler's page (a stack trace) does not (before: its first 200 characters).
    answer = { status: 400, body: 'name is required', type: 'text/plain' };
    assert.deepEqual((await c.request({ type: 'event', event: 'x', data: 1 })).error, { name: 'UpstreamFailed', message: 'event handler answered 400: name is required' });
    answer = { status: 500, body: '<pre>TypeError: x is undefined\n    at /srv/app/handler.js:12:7</pre>', type: 'text/html' };
    assert.deepEqual((await c.request({ type: 'event', event: 'x', data: 1 })).error, { name: 'UpstreamFailed', message: 'event handler answered 500' });
    const other = await RawPubSubClient.connect(accessUrl(relay.url, { hub: OTHER_HUB }), PLAIN, t);
    assert.equal((await other.request({ type: 'event', event: 'x', data: 1 })).error.name, 'NoUpstream');
    // A user id that is not visible ASCII, or has a `%`, is percent-encoded whole: reversible, and two users never
    // look alike (before: `é` and `%C3%A9` both arrived as %C3%A9). A lone surrogate goes as U+FFFD.
    answer = { status: 200, body: '', type: 'text/plain' };
    const userIdSeen = async (userId: string) => {
      const u = await RawPubSubClient.connect(accessUrl(relay.url, { userId }), PLAIN, t);
      assert.equal((await u.request({ type: 'event', event: 'who', data: 1 })).success, true, userId);
      return seen[seen.length - 1].headers['ce-userid'];
    };
    assert.equal(await userIdSeen('é'), '%C3%A9');
    assert.equal(await userIdSeen('%C3%A9'), '%25C3%25A9');
    assert.equal(await userIdSeen('100% sure'), '100%25%20sure');
    assert.equal(await userIdSeen('a\ud800'), 'a%EF%BF%BD');
    // Spaces at either end (an HTTP client trims them: ` bob ` arrived as `bob`, another user).
    assert.equal(await userIdSeen(' bob '), '%20bob%20');
    assert.equal(await userIdSeen('bob'), 'bob');
    assert.equal(await userIdSeen('b o b'), 'b o b');
  });
});

describe('a REST caller that hangs up', () => {
  it('mid-body is not logged as a failure of the relay (before: an error line, 500 ServerError, for each)', async (t) => {
    const logs = captureLogger('info');
    const relay = await startTestRelay(t, pubsubOverrides(), { log: logs.log });
    const path = `/api/hubs/${HUB}/:send`;
    const token = signJwt({ aud: `${relay.url}${path}` }, HUB_KEY, 60);
    for (let i = 0; i < 5; i++) {
      const socket = await tcp(t, relay.port);
      socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nhello`);
      // Taken (its token checked, its body being read) before it hangs up.
      await new Promise((r) => setTimeout(r, 100));
      socket.destroy();
    }
    // A whole call after them, answered: the relay has seen the others end by then.
    const res = await httpRequest(`${relay.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: Buffer.from('whole') });
    assert.equal(res.status, 202);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(logs.events().filter((e) => e === 'pubsub.rest_call_failed'), []);
  });
});
