// Reload without a restart (docs/security.md, "Reload without a restart"):
// the config file is read again and applied to a relay with live listeners
// and pub/sub clients. Connections whose token still passes stay; a listener
// whose rule was removed is closed 1008 AccessRevoked with the reason; a
// rotated key keeps signing for rotationGraceSeconds; entities and hubs come
// and go; limits and the log level change; a config that does not load
// changes nothing and says which key failed. In process (relay.reload), over
// POST /$relay/reload, and with SIGHUP on a `serve` process.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { connect as natsConnect } from 'nats';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config/load.ts';
import type { ListenTlsConfig, RelayConfig } from '../../src/config/types.ts';
import { restartOnlyChanges } from '../../src/server/reload.ts';
import { delayStreamBounds } from '../helpers/cluster.ts';
import { serveEventHandler } from '../helpers/event-handler-app.ts';
import { httpRequest } from '../helpers/http.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { RawListener, openWebSocket, upgradeRefusal } from '../helpers/raw-listener.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { ROOT_KEY, ROOT_KEY_NAME, captureLogger, startRelayProcess, startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, untilAnswered, waitEvent, withTimeout } from '../helpers/wait.ts';

const FACTORY_KEY = 'factory-key-0123456789abcdef-first';
const FACTORY_KEY_NEW = 'factory-key-0123456789abcdef-second';
const OPS_KEY = 'ops-key-0123456789abcdef0123';
const CHAT_KEY = 'chat-key-0123456789abcdef-first';
const CHAT_KEY_NEW = 'chat-key-0123456789abcdef-second';
const OTHER_KEY = 'other-key-0123456789abcdef0123';
const FRESH_KEY = 'fresh-key-0123456789abcdef0123';

/** The config before the reload. */
function before(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return testConfig({
    rotationGraceSeconds: 2,
    sas: [
      { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
      { keyName: 'factory', key: FACTORY_KEY, rights: ['Listen', 'Send'], entity: 'echo' },
      { keyName: 'ops', key: OPS_KEY, rights: ['Listen'] },
    ],
    hybridConnections: [
      { name: 'echo', requiresClientAuthorization: true },
      { name: 'legacy', requiresClientAuthorization: true },
    ],
    pubsub: {
      hubs: [
        { name: 'chat', accessKey: CHAT_KEY },
        { name: 'other', accessKey: OTHER_KEY },
      ],
    },
    ...extra,
  });
}

/** The config after: ops removed, factory's key rotated, legacy removed and newbie added, other hub removed, fresh added, chat's key rotated. */
function after(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return testConfig({
    rotationGraceSeconds: 2,
    sas: [
      { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
      { keyName: 'factory', key: FACTORY_KEY_NEW, rights: ['Listen', 'Send'], entity: 'echo' },
    ],
    hybridConnections: [
      { name: 'echo', requiresClientAuthorization: true },
      { name: 'newbie', requiresClientAuthorization: true },
    ],
    pubsub: {
      hubs: [
        { name: 'chat', accessKey: CHAT_KEY_NEW },
        { name: 'fresh', accessKey: FRESH_KEY },
      ],
    },
    limits: { listenersPerEntity: 4 },
    log: { level: 'warn' },
    ...extra,
  });
}

function configFile(t: Pick<TestContext, 'after'>, content: Record<string, unknown>): { file: string; write(c: Record<string, unknown> | string): void } {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-reload-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'relay.json');
  const write = (c: Record<string, unknown> | string) => writeFileSync(file, typeof c === 'string' ? c : JSON.stringify(c));
  write(content);
  return { file, write };
}

async function listen(base: string, entity: string, key: { keyName: string; key: string }): Promise<RawListener> {
  const url = wsUrl(base, `/$hc/${entity}?sb-hc-action=listen`);
  return RawListener.connect(url, tokenFor(url, key));
}

describe('reload without a restart', () => {
  it('keeps what still passes, closes what does not, rotates keys with a grace, adds and removes entities and hubs', async (t) => {
    const { file, write } = configFile(t, before());
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, before(), { log, loadConfig: () => loadConfig(file, {}, {}) });
    const base = relay.url;
    const factory = { keyName: 'factory', key: FACTORY_KEY };
    const factoryNew = { keyName: 'factory', key: FACTORY_KEY_NEW };
    const ops = { keyName: 'ops', key: OPS_KEY };
    const root = { keyName: ROOT_KEY_NAME, key: ROOT_KEY };

    const byFactory = await listen(base, 'echo', factory);
    const byOps = await listen(base, 'echo', ops);
    const byRoot = await listen(base, 'echo', root);
    const onLegacy = await listen(base, 'legacy', root);
    const chatClient = await RawPubSubClient.connect(accessUrl(base, { hub: 'chat', key: CHAT_KEY }), undefined, t);
    // A logger made before the reload (as every service's is) takes the new level too.
    const early = log.child({ component: 'early' }).child({ part: 'nested' });
    const otherClient = await RawPubSubClient.connect(accessUrl(base, { hub: 'other', key: OTHER_KEY }), undefined, t);
    for (const l of [byFactory, byOps, byRoot, onLegacy]) t.after(() => l.close());
    assert.equal((await chatClient.request({ type: 'joinGroup', group: 'g' })).success, true);
    assert.equal((await upgradeRefusal(wsUrl(base, '/$hc/newbie?sb-hc-action=listen'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(base, '/$hc/newbie'), root) } })).status, 404);
    // A relayed WebSocket on the entity the reload removes.
    const legacyConnect = wsUrl(base, '/$hc/legacy?sb-hc-action=connect');
    const relayedSender = openWebSocket(legacyConnect, { headers: { ServiceBusAuthorization: tokenFor(legacyConnect, root) } });
    const { accept } = await onLegacy.next<{ accept: { address: string } }>();
    const relayedLeg = await openWebSocket(accept.address);
    const sender = await relayedSender;
    t.after(() => sender.terminate());
    t.after(() => relayedLeg.terminate());
    const senderClosed = waitEvent<[number, Buffer]>(sender, 'close', 5000);

    write(after());
    const outcome = relay.reload('api');
    assert.ok(outcome.ok);
    assert.deepEqual(
      { ...outcome.changes, changed: undefined },
      {
        changed: undefined,
        entitiesRemoved: ['legacy'],
        listenersClosed: 2,
        sasKeysRotated: ['factory'],
        hubsAdded: ['fresh'],
        hubsRemoved: ['other'],
        hubKeysRotated: ['chat'],
        restartNeeded: [],
      },
    );

    // The listener whose rule is gone is closed with the reason; the one on the removed entity too.
    assert.deepEqual(await withTimeout(byOps.closed, 5000, 'ops listener closed'), { code: 1008, reason: 'AccessRevoked: SignatureInvalid' });
    assert.equal((await withTimeout(onLegacy.closed, 5000, 'legacy listener closed')).code, 1001);
    // Its relayed WebSocket ends with it, the sender told why.
    const [code, reason] = await senderClosed;
    assert.deepEqual([code, String(reason)], [1001, 'The hybrid connection was removed from the configuration']);
    // Still valid: the root token, and the factory token during its key's grace.
    assert.equal(byRoot.ws.readyState, byRoot.ws.OPEN);
    assert.equal(byFactory.ws.readyState, byFactory.ws.OPEN);
    // During the grace both of factory's keys sign; the removed rule signs nothing.
    const echoListen = wsUrl(base, '/$hc/echo?sb-hc-action=listen');
    assert.equal((await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, factory) } })).status, 101);
    assert.deepEqual(await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, ops) } }), { status: 401, code: 'SignatureInvalid' });
    const moved = await listen(base, 'newbie', root);
    const renewed = await listen(base, 'echo', factoryNew);
    t.after(() => moved.close());
    t.after(() => renewed.close());

    // Pub/sub: the chat client stays and still gets messages; the removed hub's client is closed; tokens with either chat key connect.
    assert.deepEqual(await withTimeout(otherClient.closed, 5000, 'other hub client closed'), { code: 1008, reason: 'ClosedByServer' });
    assert.equal(otherClient.messages.find((m) => m.event === 'disconnected').message, 'the hub was removed from the configuration');
    const lateOld = await RawPubSubClient.connect(accessUrl(base, { hub: 'chat', key: CHAT_KEY }), undefined, t);
    const lateNew = await RawPubSubClient.connect(accessUrl(base, { hub: 'chat', key: CHAT_KEY_NEW }), undefined, t);
    assert.equal((await lateNew.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'after the reload' })).success, true);
    assert.equal((await chatClient.waitFor((m) => m.type === 'message')).data, 'after the reload');
    lateOld.ws.terminate();
    const fresh = await RawPubSubClient.connect(accessUrl(base, { hub: 'fresh', key: FRESH_KEY }), undefined, t);
    await fresh.waitFor((m) => m.event === 'connected');
    const rest = await httpRequest(`${base}/api/hubs/other/:send`, { method: 'POST', body: Buffer.from('x') });
    assert.equal(JSON.parse(String(rest.body)).code, 'HubNotFound');

    // The new limit: four listeners on echo (byFactory, byRoot, renewed, and one more).
    const fourth = await listen(base, 'echo', root);
    t.after(() => fourth.close());
    assert.deepEqual(await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, root) } }), { status: 403, code: 'ListenerLimitReached' });

    // When the grace ends, the listener still on the old key goes; the one on the new key stays.
    assert.deepEqual(await withTimeout(byFactory.closed, 10000, 'old-key listener closed at the end of the grace'), { code: 1008, reason: 'AccessRevoked: SignatureInvalid' });
    assert.equal(renewed.ws.readyState, renewed.ws.OPEN);
    assert.deepEqual(await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, factory) } }), { status: 401, code: 'SignatureInvalid' });
    await assert.rejects(RawPubSubClient.connect(accessUrl(base, { hub: 'chat', key: CHAT_KEY }), undefined, t), /HTTP 401/);
    assert.equal(chatClient.ws.readyState, chatClient.ws.OPEN, 'a pub/sub client stays: its token was checked when it connected');

    // log.level warn: the info lines stopped at the reload.
    early.info({ event: 'early.info' });
    early.warn({ event: 'early.warn' });
    const reloaded = lines().findIndex((l) => l.event === 'config.reloaded');
    assert.ok(reloaded >= 0);
    assert.ok(lines().some((l) => l.event === 'early.warn'));
    assert.deepEqual(lines().slice(reloaded + 1).filter((l) => (l.level as number) < 40).map((l) => l.event), []);
  });

  it('removes the entities listeners created once autoCreate is turned off, closing their listeners 1001 (before: they took new listeners as long as one stayed)', async (t) => {
    const config = (autoCreate: boolean) => before({ autoCreate });
    const { file, write } = configFile(t, config(true));
    const relay = await startTestRelay(t, config(true), { loadConfig: () => loadConfig(file, {}, {}) });
    const root = { keyName: ROOT_KEY_NAME, key: ROOT_KEY };
    const dynamic = await listen(relay.url, 'made-by-listener', root);
    t.after(() => dynamic.close());
    const listed = await listen(relay.url, 'echo', root);
    t.after(() => listed.close());
    write(config(false));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual(outcome.changes.entitiesRemoved, ['made-by-listener']);
    assert.equal((await withTimeout(dynamic.closed, 5000, 'the listener closed')).code, 1001);
    const again = wsUrl(relay.url, '/$hc/made-by-listener?sb-hc-action=listen');
    assert.equal((await upgradeRefusal(again, { headers: { ServiceBusAuthorization: tokenFor(again, root) } })).status, 404);
    assert.equal(listed.ws.readyState, listed.ws.OPEN, 'a listed entity keeps its listener');
  });

  it('answers a sender still waiting for its accept at once when a reload removes the entity, and refuses the leg dialed after (before: spliced, and the WebSocket outlived the entity; found by review)', async (t) => {
    const config = (legacy: boolean) => testConfig({ hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }, ...(legacy ? [{ name: 'legacy', requiresClientAuthorization: false }] : [])] });
    const { file, write } = configFile(t, config(true));
    const relay = await startTestRelay(t, config(true), { loadConfig: () => loadConfig(file, {}, {}) });
    const listenUrl = wsUrl(relay.url, '/$hc/legacy?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const outcomeOf = (ws: WebSocket) =>
      new Promise<string>((resolve) => {
        ws.once('open', () => resolve('open'));
        ws.once('unexpected-response', (_req, res) => resolve(`HTTP ${res.statusCode}`));
        ws.once('error', (err) => resolve(`error ${err.message}`));
      });
    const sender = new WebSocket(wsUrl(relay.url, '/$hc/legacy?sb-hc-action=connect'));
    t.after(() => sender.terminate());
    const senderOutcome = outcomeOf(sender);
    const { accept } = await listener.next<{ accept: { address: string } }>();
    write(config(false));
    assert.ok(relay.reload('api').ok);
    // The listener dials at once, as a real one would, while its control channel's close handshake runs.
    const leg = new WebSocket(accept.address);
    t.after(() => leg.terminate());
    assert.equal(await withTimeout(senderOutcome, 5000, "the sender's answer"), 'HTTP 404');
    assert.equal(await withTimeout(outcomeOf(leg), 5000, "the leg's answer"), 'HTTP 404');
  });

  it('bounds reliable sessions already open by a session buffer a reload lowered', async (t) => {
    // Before (found by review): a session kept the limits of when it opened; lowered to 5, one held 20 and stayed.
    const config = (messages: number) => testConfig({ limits: { sessionBufferMessages: messages }, pubsub: { hubs: [{ name: 'chat', accessKey: CHAT_KEY }] } });
    const { file, write } = configFile(t, config(100));
    const relay = await startTestRelay(t, config(100), { loadConfig: () => loadConfig(file, {}, {}) });
    const member = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: CHAT_KEY }), 'json.reliable.webpubsub.azure.v1', t);
    await member.request({ type: 'joinGroup', group: 'g' });
    const sender = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: CHAT_KEY }), undefined, t);
    for (let n = 1; n <= 10; n++) await sender.request({ type: 'sendToGroup', group: 'g', data: n, noEcho: true });
    await member.waitFor((m) => m.type === 'message' && m.data === 10, 5000, 'the ten, unacknowledged');
    write(config(5));
    assert.ok(relay.reload('api').ok);
    await sender.request({ type: 'sendToGroup', group: 'g', data: 11, noEcho: true });
    assert.deepEqual(await withTimeout(member.closed, 5000, 'the session over the new bound to end'), { code: 1008, reason: 'SessionBufferFull' });
  });

  it('stops every key a rotation with a grace of 0 replaces, keys replaced before it too (a leak), and says it rotated', async (t) => {
    // Before: K1 -> K2 with a grace of 600 s, then K2 -> K3 with 0 (after a leak): K2 stopped, K1 was
    // accepted for the rest of its 600 s, and the answer listed no rotation.
    const KEYS = ['factory-key-0123456789abcdef-one', 'factory-key-0123456789abcdef-two', 'factory-key-0123456789abcdef-three'];
    const HUB_KEYS = ['chat-key-0123456789abcdef-one', 'chat-key-0123456789abcdef-two', 'chat-key-0123456789abcdef-three'];
    const config = (i: number, grace: number) =>
      testConfig({
        rotationGraceSeconds: grace,
        sas: [
          { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
          { keyName: 'factory', key: KEYS[i], rights: ['Listen', 'Send'], entity: 'echo' },
        ],
        hybridConnections: [{ name: 'echo', requiresClientAuthorization: true }],
        pubsub: { hubs: [{ name: 'chat', accessKey: HUB_KEYS[i] }] },
      });
    const { file, write } = configFile(t, config(0, 600));
    const relay = await startTestRelay(t, config(0, 600), { loadConfig: () => loadConfig(file, {}, {}) });
    const echoListen = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listenStatus = async (i: number) =>
      (await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, { keyName: 'factory', key: KEYS[i] }) } })).status;
    const hubStatus = (i: number) =>
      RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: HUB_KEYS[i] }), undefined, t).then(
        () => 101,
        (err: Error) => Number(/HTTP (\d+)/.exec(err.message)?.[1] ?? 0),
      );
    write(config(1, 600));
    relay.reload('api');
    assert.deepEqual([await listenStatus(0), await listenStatus(1)], [101, 101], 'during the first grace both keys sign');
    assert.deepEqual([await hubStatus(0), await hubStatus(1)], [101, 101]);
    write(config(2, 0));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok);
    assert.deepEqual([outcome.changes.sasKeysRotated, outcome.changes.hubKeysRotated], [['factory'], ['chat']]);
    assert.deepEqual([await listenStatus(0), await listenStatus(1), await listenStatus(2)], [401, 401, 101]);
    assert.deepEqual([await hubStatus(0), await hubStatus(1), await hubStatus(2)], [401, 401, 101]);
  });

  it('gives a rotated rule its grace while another rule of the same key name keeps the old key (found by review)', async (t) => {
    // Before: a token signed with echo's old key matched the other rule's current key first, was never checked
    // against echo's retired one, and was refused RightMissing: echo's listener closed at the reload, no grace.
    const config = (echoKey: string) =>
      testConfig({
        rotationGraceSeconds: 600,
        sas: [
          { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
          { keyName: 'factory', key: echoKey, rights: ['Listen'], entity: 'echo' },
          { keyName: 'factory', key: FACTORY_KEY, rights: ['Listen'], entity: 'legacy' },
        ],
        hybridConnections: [
          { name: 'echo', requiresClientAuthorization: true },
          { name: 'legacy', requiresClientAuthorization: true },
        ],
      });
    const { file, write } = configFile(t, config(FACTORY_KEY));
    const relay = await startTestRelay(t, config(FACTORY_KEY), { loadConfig: () => loadConfig(file, {}, {}) });
    const factory = { keyName: 'factory', key: FACTORY_KEY };
    const onEcho = await listen(relay.url, 'echo', factory);
    t.after(() => onEcho.close());
    write(config(FACTORY_KEY_NEW));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual([outcome.changes.sasKeysRotated, outcome.changes.listenersClosed], [['factory'], 0]);
    const echoListen = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    assert.equal((await upgradeRefusal(echoListen, { headers: { ServiceBusAuthorization: tokenFor(echoListen, factory) } })).status, 101, 'the old key signs for echo during its grace');
    assert.equal(onEcho.ws.readyState, onEcho.ws.OPEN, 'the listener on the old key stays during the grace');
  });

  it('bounds an event handler\'s answer by the limits.pubsubMessageBytes a reload set (before: the one at start)', async (t) => {
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end('y'.repeat(2000)));
    });
    const config = (bytes: number) => ({
      pubsub: { hubs: [{ name: 'chat', accessKey: CHAT_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
      limits: { pubsubMessageBytes: bytes },
    });
    const { file, write } = configFile(t, testConfig(config(1024)));
    const relay = await startTestRelay(t, config(1024), { loadConfig: () => loadConfig(file, {}, {}) });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: CHAT_KEY, userId: 'u' }), undefined, t);
    const refused = await client.request({ type: 'event', event: 'big', dataType: 'text', data: 'x', ackId: 1 });
    assert.equal(refused.success, false, JSON.stringify(refused));
    write(testConfig(config(4096)));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok && (outcome.changes.changed as string[]).includes('limits'), JSON.stringify(outcome));
    const answered = await client.request({ type: 'event', event: 'big', dataType: 'text', data: 'x', ackId: 2 });
    assert.equal(answered.success, true, JSON.stringify(answered));
    const reply = await client.waitFor((m) => m.type === 'message' && m.from === 'server');
    assert.equal(String(reply.data).length, 2000);
  });

  it('changes nothing for a config that does not load, and says which key failed', async (t) => {
    const { file, write } = configFile(t, before());
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(t, before(), { log, loadConfig: () => loadConfig(file, {}, {}) });
    const byOps = await listen(relay.url, 'echo', { keyName: 'ops', key: OPS_KEY });
    t.after(() => byOps.close());
    for (const [bad, key] of [
      [{ ...after(), limits: { listenersPerEntity: 0 } }, /\/limits\/listenersPerEntity/],
      [{ ...after(), sas: [{ keyName: 'x', keyFile: 'missing.key', rights: ['Listen'] }] }, /\/sas\/0\/keyFile: cannot read missing\.key/],
      ['{ not json', /is not valid JSON/],
    ] as const) {
      write(bad as Record<string, unknown> | string);
      const outcome = relay.reload('signal');
      assert.equal(outcome.ok, false);
      assert.match((outcome as { problem: string }).problem, key);
      assert.match(String(lines().at(-1)!.err), key);
      assert.equal(lines().at(-1)!.event, 'config.reload_refused');
    }
    // Nothing changed: the ops rule still signs, the removed-in-vain hub still serves.
    assert.equal(byOps.ws.readyState, byOps.ws.OPEN);
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    assert.equal((await upgradeRefusal(url, { headers: { ServiceBusAuthorization: tokenFor(url, { keyName: 'ops', key: OPS_KEY }) } })).status, 101);
    (await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'other', key: OTHER_KEY }), undefined, t)).ws.terminate();
  });

  it('POST /$relay/reload needs a Manage token, answers what changed or 422 ConfigInvalid, and lists what needs a restart', async (t) => {
    const { file, write } = configFile(t, before());
    const relay = await startTestRelay(t, before(), { loadConfig: () => loadConfig(file, {}, {}) });
    const endpoint = `${relay.url}/$relay/reload`;
    const manage = { authorization: tokenFor(`${relay.url}/`) };
    assert.equal((await httpRequest(endpoint, { method: 'POST' })).status, 401);
    const ops = { authorization: tokenFor(`${relay.url}/`, { keyName: 'ops', key: OPS_KEY }) };
    assert.equal((await httpRequest(endpoint, { method: 'POST', headers: ops })).status, 403);
    const get = await httpRequest(endpoint, { headers: manage });
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'POST');

    write(after({ listen: { host: '127.0.0.1', port: 1 }, timeouts: { acceptMs: 1000 } }));
    const ok = await httpRequest(endpoint, { method: 'POST', headers: manage });
    assert.equal(ok.status, 200);
    const body = JSON.parse(String(ok.body));
    assert.equal(body.reloaded, true);
    assert.deepEqual(body.restartNeeded, ['listen.port', 'timeouts']);
    assert.deepEqual(body.hubsAdded, ['fresh']);
    assert.ok(body.changed.includes('sas') && body.changed.includes('limits') && body.changed.includes('pubsub'));
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200, 'still on its port');

    write({ ...after(), bus: { kind: 'kafka' } });
    const refused = await httpRequest(endpoint, { method: 'POST', headers: manage });
    assert.equal(refused.status, 422);
    const why = JSON.parse(String(refused.body));
    assert.equal(why.code, 'ConfigInvalid');
    assert.match(why.message, /\/bus\/kind/);

    // While the relay drains (held here by a request whose head is still coming), a reload means nothing: 503 ShuttingDown.
    const holding = netConnect(relay.port, '127.0.0.1');
    holding.on('error', () => {});
    t.after(() => holding.destroy());
    await once(holding, 'connect');
    holding.write('GET /$relay/health HTTP/1.1\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const closed = relay.close();
    const draining = await httpRequest(endpoint, { method: 'POST', headers: manage });
    assert.equal(draining.status, 503);
    assert.equal(JSON.parse(String(draining.body)).code, 'ShuttingDown');
    holding.destroy();
    await closed;
  });

  it('closes a listener in its renewal grace (token just expired) whose rule a reload took Listen from', async (t) => {
    const config = (rights: string[]) =>
      testConfig({
        sas: [
          { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
          { keyName: 'factory', key: FACTORY_KEY, rights, entity: 'echo' },
        ],
        timeouts: { tokenGraceMs: 60_000 },
      });
    const { file, write } = configFile(t, config(['Listen', 'Send']));
    const relay = await startTestRelay(t, config(['Listen', 'Send']), { loadConfig: () => loadConfig(file, {}, {}) });
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    // A token that expires a second from now: the listener then stays, in timeouts.tokenGraceMs, until it renews.
    const listener = await RawListener.connect(url, tokenFor(url, { keyName: 'factory', key: FACTORY_KEY, ttl: 1 }));
    t.after(() => listener.close());
    await new Promise((resolve) => setTimeout(resolve, 2100));
    assert.equal(listener.ws.readyState, listener.ws.OPEN, 'the listener is in its renewal grace');
    write(config(['Send']));
    const reloaded = await httpRequest(`${relay.url}/$relay/reload`, { method: 'POST', headers: { authorization: tokenFor(relay.url) } });
    assert.equal(reloaded.status, 200, String(reloaded.body));
    // Before: its token was judged expired first (TokenExpired, left to the keep-alive), and it was given senders
    // for the rest of the grace (60 s here, up to 10 min) with a rule that no longer has Listen.
    assert.deepEqual(await withTimeout(listener.closed, 5000, 'the listener closed'), { code: 1008, reason: 'AccessRevoked: RightMissing' });
  });

  it('closes a listener whose token names a host a reload dropped from namespaceHosts', async (t) => {
    const config = (namespaceHosts: string[]) => testConfig({ namespaceHosts });
    const { file, write } = configFile(t, config(['relay.example', 'other.example']));
    const relay = await startTestRelay(t, config(['relay.example', 'other.example']), { loadConfig: () => loadConfig(file, {}, {}) });
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(url, tokenFor('http://relay.example/echo'));
    t.after(() => listener.close());
    write(config(['other.example']));
    const reloaded = await httpRequest(`${relay.url}/$relay/reload`, { method: 'POST', headers: { authorization: tokenFor('http://other.example/') } });
    assert.equal(reloaded.status, 200, String(reloaded.body));
    // Before: the hosts were taken when the listener connected, and the dropped host stayed good for it.
    assert.deepEqual(await withTimeout(listener.closed, 5000, 'the listener closed'), { code: 1008, reason: 'AccessRevoked: TokenScopeInvalid' });
  });

  it('reloads on SIGHUP: a rotated key file, and a new log level for every logger', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-reload-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'factory.key'), `${FACTORY_KEY}\n`);
    const content = (level: string) =>
      testConfig({
        log: { level },
        rotationGraceSeconds: 0,
        sas: [
          { keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] },
          { keyName: 'factory', keyFile: join(dir, 'factory.key'), rights: ['Listen'] },
        ],
      });
    const relay = await startRelayProcess(t, content('warn'));
    const configPath = /--config (\S+)/.exec(relay.child.spawnargs.join(' '))![1];
    const url = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen');
    const first = await RawListener.connect(url, tokenFor(url, { keyName: 'factory', key: FACTORY_KEY }));
    t.after(() => first.close());
    assert.doesNotMatch(relay.stderr(), /listener\.connected/, 'info lines are off at warn');

    writeFileSync(join(dir, 'factory.key'), `${FACTORY_KEY_NEW}\n`);
    writeFileSync(configPath, JSON.stringify(content('info')));
    relay.child.kill('SIGHUP');
    // No grace: the listener on the old key goes at once.
    assert.deepEqual(await withTimeout(first.closed, 10000, 'old-key listener closed'), { code: 1008, reason: 'AccessRevoked: SignatureInvalid' });
    const second = await RawListener.connect(url, tokenFor(url, { keyName: 'factory', key: FACTORY_KEY_NEW }));
    t.after(() => second.close());
    await until(() => /"event":"listener\.connected"/.test(relay.stderr()), 10000, 'info lines after the reload');
    assert.match(relay.stderr(), /"event":"config\.reloaded","reason":"signal"/);
  });

  it('leaves a kept hub\'s durable and history as they run until a restart, and says so (before: JetStream was started and a stream made for it, the hub still on core NATS)', async (t) => {
    const nats = await startNatsServer(t);
    const bus = { kind: 'nats', servers: [nats.url], jetstream: { storage: 'memory' } };
    const config = (durable: boolean) => testConfig({ bus, pubsub: { hubs: [{ name: 'chat', accessKey: CHAT_KEY, durable, ...(durable ? { history: { maxMessages: 10 } } : {}) }] } });
    const { file, write } = configFile(t, config(false));
    const relay = await startTestRelay(t, config(false), { loadConfig: () => loadConfig(file, {}, {}) });
    write(config(true));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual(outcome.changes.restartNeeded, ['pubsub.hubs[chat].durable', 'pubsub.hubs[chat].history']);
    assert.deepEqual(outcome.changes.changed, [], 'nothing else changed');
    assert.equal(relay.jetstream, undefined, 'no JetStream for a hub that is not durable until a restart');
    assert.equal(relay.pubsub.hub('chat')!.durable, undefined);
    // The same config again: still waiting for the restart, still nothing started.
    const again = relay.reload('api');
    assert.ok(again.ok && (again.changes.restartNeeded as string[]).length === 2, JSON.stringify(again));
    assert.equal(relay.jetstream, undefined);
    const nc = await natsConnect({ servers: nats.url });
    t.after(() => nc.close());
    const names: string[] = [];
    for await (const s of (await nc.jetstreamManager()).streams.list()) names.push(s.config.name);
    assert.deepEqual(names, []);
  });

  it('creates the JetStream streams of durable hubs added on reload, starting JetStream for the first one', async (t) => {
    const nats = await startNatsServer(t);
    const bus = { kind: 'nats', servers: [nats.url], jetstream: { storage: 'memory' } };
    const hubs = [{ name: 'chat', accessKey: CHAT_KEY, durable: false }];
    const { file, write } = configFile(t, testConfig({ bus, pubsub: { hubs } }));
    const relay = await startTestRelay(t, testConfig({ bus, pubsub: { hubs } }), { loadConfig: () => loadConfig(file, {}, {}) });
    assert.equal(relay.jetstream, undefined, 'no durable hub, no JetStream');

    /** Sends to the hub until a send is acked (stored in its stream), then checks the hub read it back. */
    const storedIn = async (hub: string, key: string) => {
      const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub, key }), undefined, t);
      const deadline = Date.now() + 20000;
      for (;;) {
        const ack = await client.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'stored' }, 10000);
        if (ack.success) break;
        assert.ok(Date.now() < deadline, `never stored in ${hub}: ${JSON.stringify(ack)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const durable = relay.pubsub.hub(hub)!.durable as unknown as { position: number };
      await until(() => durable.position > 0, 10000, `${hub}'s stream read back`);
      client.ws.terminate();
    };

    hubs.push({ name: 'fresh', accessKey: FRESH_KEY, durable: true, history: { maxMessages: 100 } } as never);
    write(testConfig({ bus, pubsub: { hubs } }));
    assert.ok(relay.reload('api').ok);
    assert.ok(relay.jetstream, 'JetStream started for the first durable hub');
    await storedIn('fresh', FRESH_KEY);
    assert.ok(relay.pubsub.hub('fresh')!.history, 'it keeps history in its stream');

    hubs.push({ name: 'third', accessKey: OTHER_KEY, durable: true } as never);
    write(testConfig({ bus, pubsub: { hubs } }));
    assert.ok(relay.reload('api').ok);
    await storedIn('third', OTHER_KEY);

    // Removed again: its stream is not made again when the edge makes sure of its streams (here a NATS
    // server with memory storage restarted, losing them all; before: 'third' came back with the others).
    hubs.pop();
    write(testConfig({ bus, pubsub: { hubs } }));
    const removed = relay.reload('api');
    assert.ok(removed.ok && (removed.changes as { hubsRemoved: string[] }).hubsRemoved.includes('third'), JSON.stringify(removed));
    await nats.kill();
    await nats.restart();
    const nc = await natsConnect({ servers: nats.url });
    t.after(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const exists = (name: string) => jsm.streams.info(name).then(() => true, () => false);
    await untilAnswered(async () => (await exists('RELAY_fresh')) && (await exists('KV_RELAY_sessions')), 15000, 'the streams made again');
    assert.equal(await exists('RELAY_third'), false, "the removed hub's stream was made again");
  });

  it('refuses a durable hub added on reload when the NATS server has no JetStream, as start-up does, and stays ready (before: taken, and the whole edge not ready until a restart)', async (t) => {
    const nats = await startNatsServer(t);
    await nats.kill();
    await nats.restart({ jetstream: false });
    const bus = { kind: 'nats', servers: [nats.url], jetstream: { storage: 'memory' } };
    const hubs: Record<string, unknown>[] = [{ name: 'chat', accessKey: CHAT_KEY, durable: false }];
    const { file, write } = configFile(t, testConfig({ bus, pubsub: { hubs } }));
    const relay = await startTestRelay(t, testConfig({ bus, pubsub: { hubs } }), { loadConfig: () => loadConfig(file, {}, {}) });
    const ready = async () => {
      const res = await httpRequest(`${relay.url}/$relay/ready`);
      return { status: res.status, body: JSON.parse(String(res.body)) };
    };
    await until(() => relay.bus.connected, 10000, 'the bus connected');
    assert.equal((await ready()).status, 200);
    write(testConfig({ bus, pubsub: { hubs: [...hubs, { name: 'news', accessKey: FRESH_KEY }] } }));
    const outcome = relay.reload('api');
    assert.equal(outcome.ok, false);
    assert.match((outcome as { problem: string }).problem, /^pubsub\.hubs: news would be durable: JetStream is not enabled on the NATS server/);
    assert.equal(relay.jetstream, undefined);
    assert.equal(relay.pubsub.hub('news'), undefined, 'nothing of the refused config applied');
    assert.equal((await ready()).status, 200);
    // bus.jetstream.enabled turned off in the same file waits for a restart (bus.*): the hub would still be durable.
    write(testConfig({ bus: { ...bus, jetstream: { enabled: false } }, pubsub: { hubs: [...hubs, { name: 'news', accessKey: FRESH_KEY }] } }));
    const again = relay.reload('api');
    assert.equal(again.ok, false, JSON.stringify(again));
    assert.equal(relay.jetstream, undefined);
    assert.equal((await ready()).status, 200);
  });

  it('leaves JetStream out of readiness once no hub is durable (a durable hub added, then removed, on reload)', async (t) => {
    const nats = await startNatsServer(t);
    const bus = { kind: 'nats', servers: [nats.url], jetstream: { storage: 'memory' } };
    const hubs: Record<string, unknown>[] = [{ name: 'chat', accessKey: CHAT_KEY, durable: false }];
    const { file, write } = configFile(t, testConfig({ bus, pubsub: { hubs } }));
    const relay = await startTestRelay(t, testConfig({ bus, pubsub: { hubs } }), { loadConfig: () => loadConfig(file, {}, {}) });
    const readyBody = async () => JSON.parse(String((await httpRequest(`${relay.url}/$relay/ready`)).body));
    write(testConfig({ bus, pubsub: { hubs: [...hubs, { name: 'news', accessKey: FRESH_KEY }] } }));
    assert.ok(relay.reload('api').ok);
    assert.ok(relay.jetstream);
    await untilAnswered(async () => (await readyBody()).jetstream?.state === 'ready', 15000, 'JetStream in readiness');
    write(testConfig({ bus, pubsub: { hubs } }));
    assert.ok(relay.reload('api').ok);
    const body = await readyBody();
    assert.equal(body.jetstream, undefined, JSON.stringify(body));
    assert.equal(body.ready, true);
  });

  it('acknowledges a join on a durable hub added on reload only once the edge reads its stream, so the join takes effect', async (t) => {
    const nats = await startNatsServer(t);
    const bus = { kind: 'nats', servers: [nats.url], jetstream: { storage: 'memory' } };
    const hubs = [{ name: 'chat', accessKey: CHAT_KEY }];
    const { file, write } = configFile(t, testConfig({ bus, pubsub: { hubs } }));
    const relay = await startTestRelay(t, testConfig({ bus, pubsub: { hubs } }), { loadConfig: () => loadConfig(file, {}, {}) });
    await until(() => relay.pubsub.hub('chat')!.durable!.started, 10000, "chat's stream read");
    delayStreamBounds(relay.jetstream!, 1000);
    hubs.push({ name: 'fresh', accessKey: FRESH_KEY } as never);
    write(testConfig({ bus, pubsub: { hubs } }));
    assert.ok(relay.reload('api').ok);
    // A hub added by a reload does not take the edge out of its load balancer while it starts reading.
    const ready = await httpRequest(`${relay.url}/$relay/ready`);
    assert.equal(ready.status, 200, String(ready.body));
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'fresh', key: FRESH_KEY }), undefined, t);
    const joined = await client.request({ type: 'joinGroup', group: 'g' }, 10000);
    assert.equal(joined.success, true, JSON.stringify(joined));
    const sent = await client.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'to the group', noEcho: false }, 10000);
    assert.equal(sent.success, true, JSON.stringify(sent));
    // Before: the join was stored (and acknowledged) before the edge asked where the stream ends, so it never applied it.
    await client.waitFor((m) => m.type === 'message' && m.data === 'to the group', 5000, 'the event to the group it joined');
  });

  it('reports what a reload changed truly: not `log` again after a log.bufferBytes edit, and TLS turned off as listen.tls alone (found by review)', async (t) => {
    const config = (bufferBytes: number) => ({ log: { level: 'warn', bufferBytes } });
    const { file, write } = configFile(t, testConfig(config(1 << 20)));
    const relay = await startTestRelay(t, config(1 << 20), { loadConfig: () => loadConfig(file, {}, {}) });
    write(testConfig(config(2 << 20)));
    const first = relay.reload('api');
    assert.ok(first.ok, JSON.stringify(first));
    assert.deepEqual([first.changes.changed, first.changes.restartNeeded], [[], ['log.bufferBytes']]);
    // Again, nothing new: before, `log` was listed as changed on every reload from then on.
    const second = relay.reload('api');
    assert.ok(second.ok, JSON.stringify(second));
    assert.deepEqual([second.changes.changed, second.changes.restartNeeded], [[], ['log.bufferBytes']]);
    const plain = loadConfig(file, {}, {});
    const tls: ListenTlsConfig = { certFile: '/c.pem', keyFile: '/k.pem', minVersion: 'TLSv1.2', requestCert: false, requireClientCert: 'none' };
    const withTls: RelayConfig = { ...plain, listen: { ...plain.listen, tls } };
    assert.deepEqual(restartOnlyChanges(withTls, plain), ['listen.tls']);
    assert.deepEqual(restartOnlyChanges(plain, withTls), ['listen.tls']);
  });
});
