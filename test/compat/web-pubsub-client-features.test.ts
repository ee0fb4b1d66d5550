// The published @azure/web-pubsub-client 1.0.4, unmodified, against the relay
// on 127.0.0.1: the client features web-pubsub-client.test.ts does not cover
// (its events and their fields, leaveGroup, autoRejoinGroups, autoReconnect,
// stop() and start() again, keep-alive, sendEvent and its reply, invokeEvent and its answer,
// a send retried after a recovery, sequence acks).
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { WebPubSubJsonProtocol, type WebPubSubClient } from '@azure/web-pubsub-client';
import { CuttableProxy, HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl, startPubSubRelay, recoveryQuery } from '../helpers/pubsub.ts';
import { eventHandlerApp, serveApp, serveEventHandler, serveHoldingEventHandler } from '../helpers/event-handler-app.ts';
import { metricValue } from '../helpers/relay.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

/** A hub config whose every user event goes to `urlTemplate`. */
function hubWith(urlTemplate: string) {
  return {
    pubsub: {
      hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [], timeoutMs: 5000 }] }],
    },
  };
}

/** Every event the client raises, in order, by name. */
function recordEvents(client: WebPubSubClient) {
  const events: { name: string; args: any }[] = [];
  for (const name of ['connected', 'disconnected', 'stopped', 'rejoin-group-failed'] as const) {
    client.on(name as 'connected', (args: any) => events.push({ name, args }));
  }
  return events;
}

const localIds = (relay: Awaited<ReturnType<typeof startPubSubRelay>>) => [...(relay.pubsub.hub(HUB)?.local.connections.keys() ?? [])];

describe('connection events', () => {
  it("connected carries the connection id the relay knows and the token's userId (null without one), again after stop() and start()", async (t) => {
    const relay = await startPubSubRelay(t);
    const userIds: unknown[] = [];
    const named = await startClient(t, accessUrl(relay.url, { userId: 'alice' }));
    const anonymous = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    for (const c of [named, anonymous]) {
      assert.ok(localIds(relay).includes(c.connectionIds[0]));
      assert.equal(await serviceClient(relay).connectionExists(c.connectionIds[0]), true);
      c.client.on('connected', (e) => userIds.push(e.userId ?? null));
      c.client.stop();
      await until(() => c.client['_state'] === 'Stopped', 5000, 'stopped');
      await withTimeout(c.client.start(), 5000, 'start again');
      await until(() => c.connectionIds.length === 2, 5000, 'connected after start()');
    }
    assert.deepEqual(userIds, ['alice', null]);
  });

  it('autoReconnect false: disconnected carries the connection id and the reason the server gave, then stopped', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), { autoReconnect: false });
    const events = recordEvents(c.client);
    await serviceClient(relay).closeConnection(c.connectionIds[0], { reason: 'maintenance window' });
    await until(() => events.some((e) => e.name === 'stopped'), 5000, 'stopped');
    assert.deepEqual(events.map((e) => e.name), ['disconnected', 'stopped']);
    assert.equal(events[0].args.connectionId, c.connectionIds[0]);
    assert.equal(events[0].args.message?.message, 'maintenance window');
    assert.equal(c.connectionIds.length, 1, 'no new connection');
  });

  it('stop(): disconnected then stopped; the relay forgets a plain connection, and start() again rejoins the groups', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    const events = recordEvents(c.client);
    await c.client.joinGroup('g');
    const first = c.connectionIds[0];
    c.client.stop();
    await until(() => events.some((e) => e.name === 'stopped'), 5000, 'stopped');
    assert.deepEqual(events.map((e) => e.name), ['disconnected', 'stopped']);
    assert.equal(events[0].args.connectionId, first);
    await until(() => !localIds(relay).includes(first), 5000, 'the relay to forget the connection');
    await withTimeout(c.client.start(), 5000, 'start again');
    await until(() => c.connectionIds.length === 2, 5000, 'connected again');
    assert.notEqual(c.connectionIds[1], first);
    await serviceClient(relay).group('g').sendToAll('after restart', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 1, 5000, 'group message after start()');
    assert.equal(c.groupData[0].data, 'after restart');
  });

  it('keeps a client whose own keep-alive is off: its socket answers the relay\'s WebSocket pings', async (t) => {
    const relay = await startPubSubRelay(t, { timeouts: { keepAliveIntervalMs: 150, idleMs: 800 } });
    const c = await startClient(t, accessUrl(relay.url), { keepAliveIntervalInMs: 0, keepAliveTimeoutInMs: 0 });
    const events = recordEvents(c.client);
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(events.map((e) => e.name), []);
    assert.ok(relay.pubsub.hub(HUB)?.local.connections.get(c.connectionIds[0])?.socket, 'still attached');
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 0);
  });

  it('reconnectRetryOptions: gives up after maxRetries fresh attempts the relay cannot answer, then stopped', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    let attempts = 0;
    const c = await startClient(t, () => (attempts++, accessUrl(proxy.url)), {
      protocol: WebPubSubJsonProtocol(),
      reconnectRetryOptions: { maxRetries: 2, retryDelayInMs: 100 },
    });
    const events = recordEvents(c.client);
    proxy.refuse();
    await serviceClient(relay).closeConnection(c.connectionIds[0]);
    await until(() => events.some((e) => e.name === 'stopped'), 10000, 'stopped');
    assert.deepEqual(events.map((e) => e.name), ['disconnected', 'stopped']);
    assert.equal(attempts, 1 + 3, 'the first connection, then one try and two retries');
  });

  it('messageRetryOptions: a refused send is sent again maxRetries times (new ackIds), each answered', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url, { roles: [] }), { messageRetryOptions: { maxRetries: 2, retryDelayInMs: 50 } });
    await assert.rejects(withTimeout(c.client.sendToGroup('g', 'x', 'text'), 5000, 'the send'), (err: any) => err.errorDetail?.name === 'Forbidden');
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_acks_total', { result: 'Forbidden' }), 3);
  });

  it('keeps a quiet connection: the pongs to its pings count for its keep-alive timeout', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), { keepAliveIntervalInMs: 200, keepAliveTimeoutInMs: 1500 });
    const events = recordEvents(c.client);
    // Without a pong the client closes the socket once 1.5 s pass with nothing read (checked every 500 ms).
    await new Promise((r) => setTimeout(r, 3500));
    assert.deepEqual(events.map((e) => e.name), []);
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 0, 'no recovery either');
    await c.client.joinGroup('g');
  });
});

describe('groups', () => {
  it('leaveGroup stops group messages; leaving a group not joined and joining twice are acked', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url));
    const svc = serviceClient(relay);
    assert.equal((await c.client.leaveGroup('never-joined')).isDuplicated, false);
    await c.client.joinGroup('g');
    await c.client.joinGroup('g');
    await svc.group('g').sendToAll('one', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 1, 5000, 'message while a member');
    await c.client.leaveGroup('g');
    await svc.group('g').sendToAll('two', { contentType: 'text/plain' });
    await svc.sendToAll('marker', { contentType: 'text/plain' });
    await until(() => c.serverData.length === 1, 5000, 'marker');
    assert.deepEqual(c.groupData.map((m) => m.data), ['one']);
  });

  it('autoRejoinGroups: a fresh connection rejoins the groups still joined, not those left', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol(), reconnectRetryOptions: { retryDelayInMs: 100 } });
    await c.client.joinGroup('kept');
    await c.client.joinGroup('left');
    await c.client.leaveGroup('left');
    const svc = serviceClient(relay);
    await svc.closeConnection(c.connectionIds[0]);
    await until(() => c.connectionIds.length === 2, 10000, 'fresh connection');
    await svc.group('left').sendToAll('to left', { contentType: 'text/plain' });
    await svc.group('kept').sendToAll('to kept', { contentType: 'text/plain' });
    await until(() => c.groupData.length >= 1, 5000, 'group message');
    await svc.sendToAll('marker', { contentType: 'text/plain' });
    await until(() => c.serverData.length === 1, 5000, 'marker');
    assert.deepEqual(c.groupData.map((m) => [m.group, m.data]), [['kept', 'to kept']]);
  });

  it("the groups in a server SDK token are joined at connect and again on a fresh connection; a REST removal holds until then", async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = serviceClient(relay);
    const { url } = await svc.getClientAccessToken({ groups: ['from-token'] });
    const c = await startClient(t, () => url, {
      protocol: WebPubSubJsonProtocol(),
      reconnectRetryOptions: { retryDelayInMs: 100 },
    });
    await svc.group('from-token').sendToAll('one', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 1, 5000, 'message to the token group');
    await svc.group('from-token').removeConnection(c.connectionIds[0]);
    await svc.group('from-token').sendToAll('not me', { contentType: 'text/plain' });
    await svc.closeConnection(c.connectionIds[0]);
    await until(() => c.connectionIds.length === 2, 10000, 'fresh connection');
    await svc.group('from-token').sendToAll('two', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 2, 5000, 'message after the fresh connection');
    assert.deepEqual(c.groupData.map((m) => m.data), ['one', 'two']);
  });

  it('rejoins many groups at once (more than limits.requestsInFlightPerConnection) before connected', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol(), reconnectRetryOptions: { retryDelayInMs: 100 } });
    const events = recordEvents(c.client);
    const groups = Array.from({ length: 300 }, (_, i) => `g${i}`);
    await Promise.all(groups.map((g) => c.client.joinGroup(g)));
    const svc = serviceClient(relay);
    await svc.closeConnection(c.connectionIds[0]);
    await until(() => c.connectionIds.length === 2, 10000, 'fresh connection');
    assert.deepEqual(events.map((e) => e.name), ['disconnected', 'connected']);
    assert.equal(relay.pubsub.hub(HUB)?.local.connections.get(c.connectionIds[1])?.groups.size, groups.length);
    await svc.group('g299').sendToAll('last', { contentType: 'text/plain' });
    await until(() => c.groupData.length === 1, 5000, 'message to the last group');
  });

  it('autoRejoinGroups false: a fresh connection is in no group', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url), {
      protocol: WebPubSubJsonProtocol(),
      autoRejoinGroups: false,
      reconnectRetryOptions: { retryDelayInMs: 100 },
    });
    await c.client.joinGroup('g');
    const svc = serviceClient(relay);
    await svc.closeConnection(c.connectionIds[0]);
    await until(() => c.connectionIds.length === 2, 10000, 'fresh connection');
    await svc.group('g').sendToAll('to g', { contentType: 'text/plain' });
    await svc.sendToAll('marker', { contentType: 'text/plain' });
    await until(() => c.serverData.length === 1, 5000, 'marker');
    assert.equal(c.groupData.length, 0);
  });

  it('rejoin-group-failed names the group and the Forbidden ack when the fresh token no longer allows it; connected follows', async (t) => {
    const relay = await startPubSubRelay(t);
    let roles = ['webpubsub.joinLeaveGroup'];
    const c = await startClient(t, () => accessUrl(relay.url, { roles }), {
      protocol: WebPubSubJsonProtocol(),
      reconnectRetryOptions: { retryDelayInMs: 100 },
    });
    const events = recordEvents(c.client);
    await c.client.joinGroup('g');
    roles = [];
    await serviceClient(relay).closeConnection(c.connectionIds[0]);
    await until(() => c.connectionIds.length === 2, 10000, 'fresh connection');
    const names = events.map((e) => e.name);
    assert.deepEqual(names, ['disconnected', 'rejoin-group-failed', 'connected']);
    assert.equal(events[1].args.group, 'g');
    assert.equal(events[1].args.error?.errorDetail?.name, 'Forbidden');
  });
});

describe('sendToGroup data', () => {
  it('delivers every kind of json value as it was sent, with fireAndForget and noEcho', async (t) => {
    const relay = await startPubSubRelay(t);
    const a = await startClient(t, accessUrl(relay.url));
    const b = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    await a.client.joinGroup('g');
    await b.client.joinGroup('g');
    // Not null: the SDK drops a message whose data parses to null (its parsePayload's "unknown type" answer); the relay sends it.
    const values = [0, -1.5, false, true, '', 'ü "q"', [], {}, [1, [2, { three: null }]], { 'a b': { c: [] } }];
    for (const v of values) await a.client.sendToGroup('g', v, 'json', { noEcho: true });
    for (const v of values) await a.client.sendToGroup('g', v, 'json', { noEcho: true, fireAndForget: true });
    await until(() => b.groupData.length === values.length * 2, 5000, 'every value twice');
    assert.deepEqual(b.groupData.map((m) => m.data), [...values, ...values]);
    assert.ok(b.groupData.every((m) => m.dataType === 'json' && m.fromUserId === null));
    await a.client.sendToGroup('g', '', 'text');
    await a.client.sendToGroup('g', new ArrayBuffer(0), 'binary');
    await until(() => a.groupData.length === 2, 5000, 'echoes of the empty text and binary');
    assert.equal(a.groupData[0].data, '');
    assert.equal((a.groupData[1].data as ArrayBuffer).byteLength, 0);
  });
});

describe('group names', () => {
  it('joins, sends to and hears groups of any name the protocol allows', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await startClient(t, accessUrl(relay.url));
    const names = ['with space', 'ü/é', 'a.b.*', '>', '*', '..', '%2F', 'a\\b"c', '$sys', 'x'.repeat(1024)];
    for (const name of names) await c.client.joinGroup(name);
    for (const name of names) await c.client.sendToGroup(name, name, 'text');
    await until(() => c.groupData.length >= names.length, 5000, 'one message per group');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(c.groupData.map((m) => [m.group, m.data]), names.map((n) => [n, n]));
  });
});

describe('sendEvent and invokeEvent', () => {
  async function relayWithEcho(t: TestContext) {
    const { app, record } = eventHandlerApp(HUB, HUB_KEY);
    const served = await serveApp(t, app);
    const relay = await startPubSubRelay(t, hubWith(`${served.url}/api/webpubsub/hubs/{hub}/{event}`));
    return { relay, record };
  }

  it('acks sendEvent once the handler answered, and its reply comes back as a server-message of the reply\'s type', async (t) => {
    const { relay, record } = await relayWithEcho(t);
    const c = await startClient(t, accessUrl(relay.url, { userId: 'u' }));
    assert.equal((await c.client.sendEvent('ask', { q: [1, 'two'] }, 'json')).isDuplicated, false);
    await c.client.sendEvent('ask', 'hi', 'text');
    await c.client.sendEvent('ask', new Uint8Array([0, 255, 7]).buffer, 'binary');
    await until(() => c.serverData.length === 3, 5000, 'three replies');
    assert.deepEqual(c.serverData.map((m) => m.dataType), ['json', 'text', 'binary']);
    assert.deepEqual(c.serverData[0].data, { echo: { q: [1, 'two'] } });
    assert.equal(c.serverData[1].data, 'echo: hi');
    assert.deepEqual([...new Uint8Array(c.serverData[2].data as ArrayBuffer)], [0, 255, 7]);
    assert.deepEqual(record.user.map((u) => [u.context.eventName, u.context.userId, u.dataType]), [
      ['ask', 'u', 'json'],
      ['ask', 'u', 'text'],
      ['ask', 'u', 'binary'],
    ]);
    assert.equal(c.groupData.length, 0);
  });

  it('sends a fireAndForget event (no ackId) to the handler, and still delivers its reply', async (t) => {
    const { relay, record } = await relayWithEcho(t);
    const c = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    const result = await c.client.sendEvent('tell', 'no ack wanted', 'text', { fireAndForget: true });
    assert.equal(result.isDuplicated, false);
    await until(() => c.serverData.length === 1, 5000, 'reply');
    assert.equal(c.serverData[0].data, 'echo: no ack wanted');
    assert.equal(record.user.length, 1);
  });

  it("invokeEvent resolves with the handler's answer in the answer's type, through web-pubsub-express, on both subprotocols", async (t) => {
    const { relay, record } = await relayWithEcho(t);
    const reliable = await startClient(t, accessUrl(relay.url, { userId: 'u' }));
    const plain = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    for (const c of [reliable, plain]) {
      const json = await withTimeout(c.client.invokeEvent('ask', { q: [1, 'two'], big: 12345678901234567890 }, 'json'), 5000, 'json');
      assert.equal(json.dataType, 'json');
      assert.deepEqual(json.data, { echo: { q: [1, 'two'], big: 12345678901234567890 } });
      assert.equal(typeof json.invocationId, 'string');
      const text = await withTimeout(c.client.invokeEvent('ask', 'hi', 'text'), 5000, 'text');
      assert.deepEqual([text.dataType, text.data], ['text', 'echo: hi']);
      const binary = await withTimeout(c.client.invokeEvent('ask', new Uint8Array([0, 255, 7]).buffer, 'binary'), 5000, 'binary');
      assert.equal(binary.dataType, 'binary');
      assert.deepEqual([...new Uint8Array(binary.data as ArrayBuffer)], [0, 255, 7]);
      const named = await withTimeout(c.client.invokeEvent('ask', 'x', 'text', { invocationId: 'mine-1' }), 5000, 'own id');
      assert.equal(named.invocationId, 'mine-1');
    }
    assert.deepEqual(record.user.map((u) => [u.context.eventName, u.context.userId, u.dataType]).slice(0, 4), [
      ['ask', 'u', 'json'],
      ['ask', 'u', 'text'],
      ['ask', 'u', 'binary'],
      ['ask', 'u', 'text'],
    ]);
    // An answer is the invocation's, not a server message as well.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(reliable.serverData.length + plain.serverData.length, 0);
  });

  it('invokeEvent rejects with the reason when the handler refuses, fails, is missing or the invocation is malformed; resolves without data on an empty or null answer', async (t) => {
    const handler = await serveEventHandler(t, (req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.on('end', () => {
        if (req.headers['ce-eventname'] === 'refuse') return res.writeHead(400, { 'content-type': 'text/plain' }).end('no such order');
        if (req.headers['ce-eventname'] === 'empty') return res.writeHead(204).end();
        if (req.headers['ce-eventname'] === 'null') return res.writeHead(200, { 'content-type': 'application/json' }).end(' null ');
        res.writeHead(500).end('stack trace');
      });
    });
    const relay = await startPubSubRelay(t, {
      pubsub: {
        hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: handler.urlTemplate, userEventPattern: 'refuse,empty,null,crash', systemEvents: [], timeoutMs: 5000 }] }],
      },
    });
    const c = await startClient(t, accessUrl(relay.url));
    const rejected = async (event: string, dataType: 'text' | 'json' = 'text') => {
      const err: any = await withTimeout(c.client.invokeEvent(event, 'x', dataType), 5000, event).then(
        () => assert.fail(`${event} resolved`),
        (e) => e,
      );
      assert.equal(err.name, 'InvocationError', event);
      return err.errorDetail as { name: string; message: string };
    };
    assert.deepEqual(await rejected('refuse'), { name: 'UpstreamFailed', message: 'event handler answered 400: no such order' });
    assert.deepEqual(await rejected('crash'), { name: 'UpstreamFailed', message: 'event handler answered 500' });
    assert.equal((await rejected('unheard')).name, 'NoUpstream');
    // Not a name the handler URL can carry: refused by the relay, answered by its id.
    assert.equal((await rejected('..')).name, 'BadRequest');
    // A 204 is an answer without data.
    const empty = await withTimeout(c.client.invokeEvent('empty', 'x', 'text'), 5000, 'empty');
    assert.deepEqual([empty.dataType, empty.data], [undefined, undefined]);
    // So is JSON null: the SDK drops an answer whose json data is null, and would wait for good (found by review).
    const nothing = await withTimeout(c.client.invokeEvent('null', 'x', 'text'), 5000, 'null');
    assert.deepEqual([nothing.dataType, nothing.data], [undefined, undefined]);
  });

  it('an invokeEvent aborted while at the handler rejects at once, and the next one gets its own answer', async (t) => {
    const handler = await serveHoldingEventHandler(t);
    const relay = await startPubSubRelay(t, hubWith(handler.urlTemplate));
    const c = await startClient(t, accessUrl(relay.url));
    const abort = new AbortController();
    const slow = c.client.invokeEvent('ask', 'slow', 'text', { abortSignal: abort.signal });
    await until(() => handler.held.has('slow'), 5000, 'the slow invocation at the handler');
    abort.abort();
    await assert.rejects(withTimeout(slow, 5000, 'aborted'));
    const next = c.client.invokeEvent('ask', 'next', 'text');
    // The next waits its turn at the relay, behind the cancelled one still at the handler.
    const connection = relay.pubsub.hub(HUB)!.local.connections.get(c.connectionIds[0])!;
    await until(() => connection.eventsWaiting?.length === 1, 5000, 'the next invocation to wait its turn');
    handler.held.get('slow')!();
    assert.equal((await withTimeout(next, 5000, 'next')).data, 're next');
    assert.deepEqual(handler.bodies, ['slow', 'next']);
  });

  it('answers pings and group requests while an event waits at a slow handler, and takes concurrent events in order', async (t) => {
    const seen: string[] = [];
    const handler = await serveEventHandler(t, (req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        seen.push(body);
        const delay = body === 'slow' ? 3000 : 0;
        setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end(`re ${body}`), delay);
      });
    });
    const relay = await startPubSubRelay(t, hubWith(handler.urlTemplate));
    // Without a pong for 1.2 s the client would close its socket while the slow event is at the handler.
    const c = await startClient(t, accessUrl(relay.url), { keepAliveIntervalInMs: 200, keepAliveTimeoutInMs: 1200 });
    const events = recordEvents(c.client);
    const slow = c.client.sendEvent('e', 'slow', 'text');
    const rest = Array.from({ length: 10 }, (_, i) => c.client.sendEvent('e', `n${i}`, 'text'));
    await withTimeout(c.client.joinGroup('g'), 2000, 'a join while the event waits');
    await withTimeout(c.client.sendToGroup('g', 'x', 'text'), 2000, 'a send while the event waits');
    await withTimeout(Promise.all([slow, ...rest]), 10000, 'every event acked');
    await until(() => c.serverData.length === 11, 5000, 'every reply');
    assert.deepEqual(seen, ['slow', ...Array.from({ length: 10 }, (_, i) => `n${i}`)], 'the handler had them in order, one at a time');
    assert.deepEqual(c.serverData.map((m) => m.data), seen.map((b) => `re ${b}`));
    assert.deepEqual(events.map((e) => e.name), [], 'never disconnected');
    // A reliable client that closes its socket recovers without a disconnected event: it did not close at all.
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 0, 'no recovery either');
  });

  it('a send whose ack a cut lost is retried after recovery with its ackId and done once (Duplicate resolves it)', async (t) => {
    let calls = 0;
    let answer: (() => void) | undefined;
    const handler = await serveEventHandler(t, (req: IncomingMessage, res: ServerResponse) => {
      calls++;
      req.resume();
      // The first answer waits for the test; later ones (there must be none) at once.
      const reply = () => res.writeHead(200, { 'content-type': 'text/plain' }).end(`reply ${calls}`);
      if (calls === 1) answer = reply;
      else reply();
    });
    const relay = await startPubSubRelay(t, hubWith(handler.urlTemplate));
    const proxy = await CuttableProxy.start(relay.port, t);
    const c = await startClient(t, accessUrl(proxy.url), { messageRetryOptions: { maxRetries: 3, retryDelayInMs: 200 } });
    const sent = c.client.sendEvent('slow', 'once', 'text', { ackId: 42 });
    await until(() => answer !== undefined, 5000, 'the event at the handler');
    proxy.cut();
    // The SDK rejects the pending ack at the cut, recovers the session, and sends the event again with ackId 42.
    await untilAnswered(async () => (await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total')) === 1, 5000, 'recovered');
    await new Promise((r) => setTimeout(r, 400));
    answer!();
    const result = await withTimeout(sent, 5000, 'sendEvent');
    assert.equal(typeof result.isDuplicated, 'boolean');
    await until(() => c.serverData.length >= 1, 5000, 'the reply');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(calls, 1, 'the handler had the event once');
    assert.deepEqual(c.serverData.map((m) => m.data), ['reply 1']);
    assert.equal(c.connectionIds.length, 1, 'recovered, not replaced');
  });
});

/**
 * A TCP proxy to the relay whose cut() drops only the client's side: the
 * relay's side stays open, what the relay writes to it is read and thrown
 * away, and the relay learns nothing (a NAT or Wi-Fi drop seen by the client
 * first).
 */
async function halfCutProxy(t: TestContext, targetPort: number) {
  const pairs: { inbound: Socket; outbound: Socket }[] = [];
  const server = createServer((inbound) => {
    const outbound = connect(targetPort, '127.0.0.1');
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    for (const s of [inbound, outbound]) s.on('error', () => {});
    pairs.push({ inbound, outbound });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const { inbound, outbound } of pairs) inbound.destroy(), outbound.destroy();
    await new Promise((r) => server.close(r));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    cut() {
      for (const { inbound, outbound } of pairs.splice(0)) {
        outbound.unpipe(inbound);
        inbound.unpipe(outbound);
        inbound.destroy();
        outbound.resume();
        t.after(() => outbound.destroy());
      }
    },
  };
}

describe('reliable subprotocol', () => {
  it('recovers onto a new socket while the relay still holds the old one open: nothing lost, nothing twice', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await halfCutProxy(t, relay.port);
    const sub = await startClient(t, accessUrl(proxy.url));
    await sub.client.joinGroup('feed');
    const publisher = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    const total = 200;
    for (let i = 1; i <= total; i++) {
      await publisher.client.sendToGroup('feed', i, 'json');
      if (i === 50 || i === 120) proxy.cut();
    }
    await until(() => sub.groupData.length >= total, 10000, `${total} messages`);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(sub.groupData.map((m) => m.data), Array.from({ length: total }, (_, i) => i + 1));
    assert.equal(sub.connectionIds.length, 1, 'recovered, not replaced');
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 2);
  });


  it('a session closed through REST while its client is away is not recovered: the client starts afresh and rejoins', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    const sub = await startClient(t, accessUrl(proxy.url), { reconnectRetryOptions: { retryDelayInMs: 100 } });
    const events = recordEvents(sub.client);
    await sub.client.joinGroup('g');
    proxy.cut(1500);
    const svc = serviceClient(relay);
    await until(() => !relay.pubsub.hub(HUB)?.local.connections.get(sub.connectionIds[0])?.socket, 5000, 'the socket gone');
    await svc.closeConnection(sub.connectionIds[0], { reason: 'kicked while away' });
    await until(() => sub.connectionIds.length === 2, 15000, 'a fresh connection');
    assert.deepEqual(events.map((e) => e.name), ['disconnected', 'connected']);
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 0);
    await svc.group('g').sendToAll('back', { contentType: 'text/plain' });
    await until(() => sub.groupData.length === 1, 5000, 'message after rejoin');
  });

  it('ends the session of a client that closes with 1000 (the .NET client\'s StopAsync), keeps that of one closing without a code (stop() here)', async (t) => {
    const { app, record } = eventHandlerApp(HUB, HUB_KEY);
    const served = await serveApp(t, app);
    const relay = await startPubSubRelay(t, {
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: `${served.url}/api/webpubsub/hubs/{hub}/{event}`, systemEvents: ['disconnected'] }] }] },
    });
    // Azure.Messaging.WebPubSub.Client's StopAsync closes NormalClosure (1000); Microsoft's emulator then ends the
    // session ("The client closed the connection"), and keeps it for any other close.
    const dotnet = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const { connectionId, reconnectionToken } = await dotnet.waitFor((m) => m.event === 'connected');
    assert.equal((await dotnet.request({ type: 'joinGroup', group: 'g' })).success, true);
    dotnet.ws.close(1000);
    await until(() => record.disconnected.length === 1, 5000, 'the disconnected event');
    assert.equal(record.disconnected[0].context.connectionId, connectionId);
    assert.ok(!localIds(relay).includes(connectionId), 'the session is gone');
    const recovery = recoveryQuery(connectionId, reconnectionToken);
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    assert.equal((await again.closed).code, 1008, 'its recovery is refused');
    // The JavaScript client's stop() closes without a code: its session stays for a recovery, as on the emulator.
    const js = await startClient(t, accessUrl(relay.url));
    js.client.stop();
    await until(() => js.client['_state'] === 'Stopped', 5000, 'stopped');
    await until(() => relay.pubsub.hub(HUB)?.local.connections.get(js.connectionIds[0])?.socket === undefined, 5000, 'its socket gone');
    assert.ok(localIds(relay).includes(js.connectionIds[0]), 'its session is kept');
    assert.equal(record.disconnected.length, 1);
  });

  it('keeps REST sends to the connection and to its user made while it is away, and delivers them on recovery', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    const sub = await startClient(t, accessUrl(proxy.url, { userId: 'roamer' }));
    proxy.cut(1000);
    await until(() => !relay.pubsub.hub(HUB)?.local.connections.get(sub.connectionIds[0])?.socket, 5000, 'the socket gone');
    const svc = serviceClient(relay);
    await svc.sendToConnection(sub.connectionIds[0], { to: 'connection' });
    await svc.sendToUser('roamer', 'to user', { contentType: 'text/plain' });
    await svc.sendToAll(new Uint8Array([7]));
    await until(() => sub.serverData.length === 3, 10000, 'the three sends after recovery');
    assert.deepEqual(sub.serverData.map((m) => m.dataType), ['json', 'text', 'binary']);
    assert.deepEqual(sub.serverData[0].data, { to: 'connection' });
    assert.equal(sub.serverData[1].data, 'to user');
    assert.equal(sub.connectionIds.length, 1, 'recovered, not replaced');
  });

  it('recovers a session opened on the /client/?hub= form of the endpoint', async (t) => {
    const relay = await startPubSubRelay(t);
    const proxy = await CuttableProxy.start(relay.port, t);
    const url = accessUrl(proxy.url).replace(`/client/hubs/${HUB}?`, `/client/?hub=${HUB}&`);
    const sub = await startClient(t, url);
    await sub.client.joinGroup('g');
    proxy.cut();
    await serviceClient(relay).group('g').sendToAll('while away', { contentType: 'text/plain' });
    await until(() => sub.groupData.length === 1, 10000, 'the message sent while away');
    assert.equal(sub.connectionIds.length, 1, 'recovered, not replaced');
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_sessions_recovered_total'), 1);
  });

  it('frees the session buffer by the client\'s sequence acks: more than its 1000 messages over time never fill it', async (t) => {
    const relay = await startPubSubRelay(t);
    const sub = await startClient(t, accessUrl(relay.url));
    const events = recordEvents(sub.client);
    await sub.client.joinGroup('feed');
    const publisher = await startClient(t, accessUrl(relay.url), { protocol: WebPubSubJsonProtocol() });
    const total = 1800;
    for (let i = 1; i <= total; i++) {
      await publisher.client.sendToGroup('feed', i, 'json', { fireAndForget: true });
      // 300 at a time, the client's acks (every second) in between.
      if (i % 300 === 0) {
        await until(() => sub.groupData.length === i, 5000, `${i} messages`);
        await new Promise((r) => setTimeout(r, 1300));
      }
    }
    assert.deepEqual(events.map((e) => e.name), [], 'never disconnected');
    assert.equal(sub.groupData.length, total);
    assert.deepEqual(sub.groupData.map((m) => m.data).slice(-3), [total - 2, total - 1, total]);
    const session = relay.pubsub.hub(HUB)?.local.connections.get(sub.connectionIds[0])?.session;
    assert.ok(session, 'the session is there');
    await until(() => session.firstSequenceId > total - 300, 3000, 'the last acks to free the buffer');
  });
});

