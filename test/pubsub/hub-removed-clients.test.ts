// A client connection being admitted when a reload removes its hub (docs/security.md, "Reload without a
// restart"; docs/errors.md, HubNotFound and ClosedByServer): it never lands in the removed hub, nor in a hub of the
// same name added again (another hub, with other keys). Each await between the token check and the admission:
//   - the hub's connect event handler, which the test holds open across the reload: the upgrade is refused 404
//     HubNotFound, as an upgrade to a hub the relay does not serve is;
//   - on the NATS bus, the wait for the connection's subscriptions to reach the NATS server (the upgrade is
//     answered already): closed 1008 ClosedByServer after `disconnected`, as the hub's connected clients are;
//   - a recovery taking a durable hub's session from another edge (the upgrade answered already): closed 1008
//     ClosedByServer, and the session it claimed ended, so no hub of the same name added again takes it back.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { decodeEdgeMessage } from '../../src/bus/messages.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { edgeOverrides } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { reloadableRelay, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const NEW_KEY = 'other-access-key-of-the-new-hub-0123';
const CHAT = { name: HUB, accessKey: HUB_KEY };

/** The answer to a WebSocket upgrade offering `protocol`: 101, or the refusal's status and code. */
function upgradeAnswer(t: TestContext, url: string, protocol: string): Promise<{ status: number; code?: string }> {
  const ws = new WebSocket(url, [protocol]);
  t.after(() => ws.terminate());
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => resolve({ status: 101 }));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, code: (JSON.parse(body) as { code?: string }).code }));
      });
      ws.once('error', reject);
    }),
    10000,
    'the upgrade answer',
  );
}

/** A connect event handler that holds each `connect` until `release()`, then says yes; other events get 204. */
async function heldConnectHandler(t: TestContext): Promise<{ urlTemplate: string; held(): number; release(): void }> {
  const waiting: (() => void)[] = [];
  const server = createServer((req, res) => {
    if (req.method === 'OPTIONS') return res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
    req.resume();
    req.on('end', () => {
      if (req.headers['ce-eventname'] !== 'connect') return res.writeHead(204).end();
      waiting.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  const { port } = server.address() as { port: number };
  return {
    urlTemplate: `http://127.0.0.1:${port}/events/{event}`,
    held: () => waiting.length,
    release: () => {
      for (const answer of waiting.splice(0)) answer();
    },
  };
}

describe('a client connecting while a reload removes its hub', () => {
  for (const readded of [false, true]) {
    const how = readded ? ', not let into a hub of the same name added again with another key meanwhile' : ' when the hub went while its connect event was answered, reliable and plain';
    it(`is refused 404 HubNotFound${how}`, async (t) => {
      const handler = await heldConnectHandler(t);
      const other = { name: OTHER_HUB, accessKey: OTHER_HUB_KEY, eventHandlers: [{ urlTemplate: handler.urlTemplate, userEventPattern: '', systemEvents: ['connect'] }] };
      const { relay, serve } = await reloadableRelay(t, [CHAT, other]);
      const url = accessUrl(relay.url, { hub: OTHER_HUB });
      const answers = [upgradeAnswer(t, url, RELIABLE), upgradeAnswer(t, url, PLAIN)];
      await until(() => handler.held() === 2, 5000, 'both connect events at the handler');
      serve([CHAT]);
      if (readded) serve([CHAT, { name: OTHER_HUB, accessKey: NEW_KEY }]);
      handler.release();
      assert.deepEqual(await Promise.all(answers), [
        { status: 404, code: 'HubNotFound' },
        { status: 404, code: 'HubNotFound' },
      ]);
      if (!readded) return;
      assert.equal(relay.pubsub.hub(OTHER_HUB)!.local.connections.size, 0);
      // The new hub's own clients come in.
      const fresh = await RawPubSubClient.connect(accessUrl(relay.url, { hub: OTHER_HUB, key: NEW_KEY }), PLAIN, t);
      await fresh.waitFor((m) => m.event === 'connected');
    });
  }

  for (const durable of [false, true]) {
    it(`is closed 1008 ClosedByServer, never connected, when the hub went while its subscriptions reached NATS (${durable ? 'durable hub' : 'core NATS'})`, async (t) => {
      const nats = await startNatsServer(t);
      const bus = { kind: 'nats', servers: [nats.url], requestTimeoutMs: 2000, gatherStallMs: 50, jetstream: durable ? { storage: 'memory' } : { enabled: false } };
      const { relay, serve } = await reloadableRelay(t, [CHAT, { name: OTHER_HUB, accessKey: OTHER_HUB_KEY, durable }], { bus });
      if (durable) await until(() => relay.pubsub.followsStreams(), 20000, 'the durable hubs to read their streams');
      // The flush that admits the connection first sees the hub removed and added again with another key.
      const flush = relay.bus.flush.bind(relay.bus);
      let during: (() => void) | undefined;
      relay.bus.flush = () => {
        // Only once the connection is in the hub, waiting for this flush.
        if (during && relay.pubsub.hub(OTHER_HUB)!.local.connections.size > 0) {
          const reload = during;
          during = undefined;
          reload();
        }
        return flush();
      };
      for (const protocol of [RELIABLE, PLAIN]) {
        const url = accessUrl(relay.url, { hub: OTHER_HUB, key: protocol === RELIABLE ? OTHER_HUB_KEY : NEW_KEY });
        during = () => {
          serve([CHAT]);
          serve([CHAT, { name: OTHER_HUB, accessKey: protocol === RELIABLE ? NEW_KEY : OTHER_HUB_KEY, durable }]);
        };
        const client = await RawPubSubClient.connect(url, protocol, t);
        assert.deepEqual(await withTimeout(client.closed, 5000, 'the client to be closed'), { code: 1008, reason: 'ClosedByServer' }, protocol);
        assert.equal(during, undefined, 'the reload ran during the admission');
        assert.deepEqual(
          client.messages.map((m) => [m.event, m.message]),
          [['disconnected', 'the hub was removed from the configuration']],
        );
        assert.equal(relay.pubsub.hub(OTHER_HUB)!.local.connections.size, 0);
        if (durable) await until(() => relay.pubsub.hub(OTHER_HUB)!.durable!.started, 20000, 'the hub added again to read its stream');
      }
    });
  }

  it('recovering a durable session held by another edge is closed 1008 ClosedByServer at once, and the session ends: a hub of the same name added again does not take it (before: 1013 after the take timed out, then recovered into the new hub)', async (t) => {
    const nats = await startNatsServer(t);
    const durableBus = { bus: { jetstream: { storage: 'memory', publishTimeoutMs: 1500 } }, log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' } };
    const durableHubs = [CHAT, { name: OTHER_HUB, accessKey: OTHER_HUB_KEY, durable: true }];
    const a = await startTestRelay(t, edgeOverrides('edge-a', [nats.url], { ...durableBus, pubsub: { hubs: durableHubs } }));
    const { bus, ...rest } = edgeOverrides('edge-b', [nats.url], durableBus) as { bus: object; pubsub: unknown };
    delete (rest as { pubsub?: unknown }).pubsub;
    const { relay: b, serve } = await reloadableRelay(t, durableHubs, { ...rest, bus });
    await until(() => a.pubsub.followsStreams() && b.pubsub.followsStreams(), 20000, 'both edges to read the hub streams');

    // A session on edge A, its socket dropped: A keeps it for its client.
    const held = await RawPubSubClient.connect(accessUrl(a.url, { hub: OTHER_HUB, userId: 'roamer' }), RELIABLE, t);
    const connected = await held.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await held.request({ type: 'joinGroup', group: 'g' });
    held.ws.terminate();
    await until(() => a.pubsub.hub(OTHER_HUB)!.local.connections.get(connected.connectionId)?.socket === undefined, 5000, 'edge A to keep the dropped session');

    // Edge B's claim of the session: the hub is removed as it is stored.
    const js = b.jetstream!;
    const publish = js.publish.bind(js);
    let claims = 0;
    js.publish = (subject, data, msgId) => {
      if (decodeEdgeMessage(data, 'ps.claim') && claims++ === 0) serve([CHAT]);
      return publish(subject, data, msgId);
    };
    const recovery = recoveryQuery(connected.connectionId, connected.reconnectionToken);
    const started = performance.now();
    const recovering = await RawPubSubClient.connect(accessUrl(b.url, { hub: OTHER_HUB }) + recovery, RELIABLE, t);
    assert.deepEqual(await withTimeout(recovering.closed, 10000, 'the recovery to be closed'), { code: 1008, reason: 'ClosedByServer' });
    assert.equal(claims, 1);
    assert.deepEqual(recovering.messages.map((m) => [m.event, m.message]), [['disconnected', 'the hub was removed from the configuration']]);
    // Not after the take's deadline (publishTimeoutMs + requestTimeoutMs, 3.5 s).
    assert.ok(performance.now() - started < 3000, `closed after ${Math.round(performance.now() - started)} ms`);

    // Added again with another key: the old session's token recovers nothing in it.
    serve([CHAT, { name: OTHER_HUB, accessKey: NEW_KEY, durable: true }]);
    await until(() => b.pubsub.hub(OTHER_HUB)!.durable!.started, 20000, 'the new hub to read its stream');
    const again = await RawPubSubClient.connect(accessUrl(b.url, { hub: OTHER_HUB, key: NEW_KEY }) + recovery, RELIABLE, t);
    assert.deepEqual(await withTimeout(again.closed, 10000, 'the second recovery to be closed'), { code: 1008, reason: 'SessionNotFound' });
    assert.ok(!again.messages.some((m) => m.event === 'connected'), JSON.stringify(again.messages));
    assert.equal(b.pubsub.hub(OTHER_HUB)!.local.connections.size, 0);
  });
});
