// The NATS user the edges connect as (deploy/nats.conf) may do only what the
// edges do: its permissions block allows the relay's subjects, their inboxes,
// the JetStream API calls the edges make and the session bucket, and nothing
// else (no stream delete or purge, no listing, no other bucket). The compose
// topology runs here as processes: the shipped nats.conf as three clustered
// nodes (ports moved, as compose.test.ts runs it) and two edges from
// deploy/edge-1.json and edge-2.json with only their address, publicUrl and
// NATS servers changed. They serve what the compose setup is for across each
// other, and nothing they do is refused: a refused call is logged by the NATS
// node ("Publish Violation", "Subscription Violation") and by the edge
// (bus.error, PERMISSIONS_VIOLATION), and what needed it fails or waits.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from 'nats';
import WebSocket from 'ws';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { signJwt } from '../../src/auth/jwt.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { readiness, waitReady } from '../helpers/cluster.ts';
import { hycoHttps, listenUrl, startHycoWsListener } from '../helpers/hyco.ts';
import { freePort } from '../helpers/nats.ts';
import { RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { startServeProcess, tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';
import { until, untilAnswered, waitEvent, withTimeout } from '../helpers/wait.ts';
import { edges, environmentOf, mount, natsServices, root, routeCount, secretsFrom, startDeployNats, type ComposeService, type DeployNats } from './compose-setup.ts';

const SECRETS = secretsFrom('5d'.repeat(32));
const HUB = 'chat';
const GROUP = 'room';
/** This test's own NATS connection: the violations it makes on purpose are not the edges'. */
const TEST_CLIENT = 'nats-permissions.test';

interface DeployEdge extends RelayProcess {
  name: string;
}

/**
 * An edge of the compose file as a local process: its deploy/edge-N.json with the address it listens on, the
 * publicUrl listeners dial back to and the NATS servers (its own node first) moved to this machine, and the
 * environment compose gives it. (`startEdge`, called once per edge: test/run-suite.ts runs a file that starts
 * two or more edges in the clusters' lane.)
 */
async function startEdge(t: TestContext, [name, service]: [string, ComposeService], servers: string[]): Promise<DeployEdge> {
  const file = mount(service.volumes, '/etc/edge-relay/config.json');
  assert.ok(file, `${name} mounts its config`);
  const config = JSON.parse(readFileSync(root + file, 'utf8'));
  const port = await freePort();
  config.listen = { ...config.listen, host: '127.0.0.1', port };
  config.publicUrl = `http://127.0.0.1:${port}`;
  config.bus.servers = servers;
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-deploy-edge-'));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  // The child takes this process's environment, as it is when it is spawned (at once): compose's for the edges.
  const env = environmentOf(service, SECRETS);
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  let edge: Promise<RelayProcess>;
  try {
    edge = startServeProcess(t, ['--config', join(dir, 'config.json')]);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  return { ...(await edge), name };
}

/** A SAS token for `url`, signed with the compose edges' root key. */
const rootToken = (url: string) => tokenFor(url, { keyName: 'RootManageSharedAccessKey', key: SECRETS.EDGE_RELAY_ROOT_KEY });

/** A hyco-https listener for `echo` (which the compose configs list) on `edge`: answers each request with its path. */
async function httpListenerOn(t: TestContext, edge: DeployEdge): Promise<void> {
  const url = wsUrl(edge.url, '/$hc/echo?sb-hc-action=listen');
  const server = hycoHttps.createRelayedServer({ server: url, token: () => rootToken(url) }, (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => res.end(`${req.url} answered on ${edge.name}`));
  });
  server.on('error', () => {});
  const listening = waitEvent(server, 'listening', 10000);
  server.listen();
  cleanupFor(t).after(() => server.close());
  await listening;
}

/** Opens a sender WebSocket, again while the sender's edge does not know the listener's yet (interest travels between NATS servers). */
async function dialRoutable(t: TestContext, url: string): Promise<WebSocket> {
  let refused = '';
  for (const deadline = Date.now() + 10000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
    const ws = new WebSocket(url, { headers: { ServiceBusAuthorization: rootToken(url) } });
    cleanupFor(t).after(() => ws.terminate());
    const outcome = await withTimeout(
      new Promise<string>((resolve) => {
        ws.once('open', () => resolve('open'));
        ws.once('unexpected-response', (_req, res) => {
          res.resume();
          resolve(`${res.statusCode} ${res.headers['x-ms-error-code'] ?? ''}`);
        });
        ws.once('error', (err) => resolve(err.message));
      }),
      10000,
      'the sender upgrade',
    );
    if (outcome === 'open') return ws;
    refused = outcome;
    if (!/NoListener|EntityNotFound/.test(outcome)) break;
  }
  throw new Error(`the sender was refused: ${refused}`);
}

/** A REST bearer token for `path` on `edge`, signed with the hub's key. */
function bearer(edge: DeployEdge, path: string): string {
  return `Bearer ${signJwt({ aud: `${edge.url}${path}` }, SECRETS.EDGE_RELAY_CHAT_KEY, 600)}`;
}

async function reliableClient(t: TestContext, url: string): Promise<{ client: RawPubSubClient; id: string; token: string }> {
  // Closed before the edges stop (clean-up runs last added first): their drains wait on no client.
  const client = await RawPubSubClient.connect(url, RELIABLE, cleanupFor(t));
  const connected = await client.waitFor((m) => m.type === 'system', 10000, 'connected');
  assert.equal(connected.event, 'connected', JSON.stringify(connected));
  return { client, id: connected.connectionId, token: connected.reconnectionToken };
}

const texts = (client: RawPubSubClient) => client.dataMessages().map((m) => m.data);

describe("deploy/nats.conf's permissions for the edges' user", () => {
  it('let the compose edges serve across each other, durable hub and moving session included, with no violation', { timeout: 60000 }, async (t) => {
    const names = natsServices.map(([name]) => name);
    const ports = await Promise.all(names.map(async () => ({ port: await freePort(), routePort: await freePort(), monitorPort: await freePort() })));
    const routePorts = Object.fromEntries(names.map((name, i) => [name, ports[i].routePort]));
    const nodes: DeployNats[] = await Promise.all(natsServices.map(([name, s], i) => startDeployNats(t, name, environmentOf(s, SECRETS), ports[i], routePorts)));
    await untilAnswered(async () => (await Promise.all(nodes.map((n) => routeCount(n.monitor)))).every((c) => c === 2), 15000, 'the three nodes to route to each other');
    const servers = (first: number) => [nodes[first], ...nodes.filter((_, i) => i !== first)].map((n) => n.url);
    assert.equal(edges.length, 2);
    const started: DeployEdge[] = [];
    const problems = () => [
      ...nodes.flatMap((n, i) => n.violations().map((line) => `${names[i]}: ${line}`)),
      ...started.flatMap((e) => e.stderr().split('\n').filter((line) => /permissions[ _]violation/i.test(line)).map((line) => `${e.name}: ${line}`)),
    ].filter((line) => !line.includes(`:${TEST_CLIENT}"`));
    // Said with whatever failed: the first thing a missing permission breaks may be a wait.
    t.after(() => {
      if (problems().length > 0) t.diagnostic(problems().join('\n'));
    });
    const key = SECRETS.EDGE_RELAY_CHAT_KEY;
    const rest = (edge: DeployEdge) => new WebPubSubServiceClient(`Endpoint=${edge.url};AccessKey=${key};Version=1.0;`, HUB, { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } });

    // JetStream (streams, the session bucket) is made sure of before an edge says it is ready. Edge 2 starts on a
    // stream that holds an event already: it reads that one's place before following what comes after.
    const one = await startEdge(t, edges[0], servers(0));
    started.push(one);
    await waitReady(one, 200, 30000);
    await rest(one).group('earlier').sendToAll('zero', { contentType: 'text/plain' });
    const two = await startEdge(t, edges[1], servers(1));
    started.push(two);
    await waitReady(two, 200, 30000);

    // Hybrid connections: listeners on edge 1 take a request and a WebSocket sent through edge 2. hyco-https takes
    // requests only (a WebSocket's accept ends its process), so the WebSocket goes to a hyco-ws listener on an entity
    // it makes (autoCreate is on in the compose configs).
    await httpListenerOn(t, one);
    let answer: Response | undefined;
    await untilAnswered(
      async () => {
        answer = await fetch(`${two.url}/echo/hello?x=1`, { signal: AbortSignal.timeout(10000) });
        if (answer.status === 200) return true;
        await answer.body?.cancel();
        return false;
      },
      10000,
      'a request through edge 2 to reach the listener on edge 1',
    );
    assert.equal(await answer!.text(), '/echo/hello?x=1 answered on edge-1');
    await startHycoWsListener(t, one.url, (ws) => ws.on('message', (data: unknown) => ws.send(data)), 'sockets', () => rootToken(listenUrl(one.url, 'sockets')));
    const sender = await dialRoutable(t, wsUrl(two.url, '/$hc/sockets?sb-hc-action=connect'));
    sender.send('over the rendezvous');
    const [echoed] = await waitEvent<[Buffer]>(sender, 'message', 10000);
    assert.equal(String(echoed), 'over the rendezvous');

    // Pub/sub on the durable hub: a subscriber on edge 2, a reliable client on edge 1 that moves later, a publisher on edge 1.
    const subscriber = await reliableClient(t, accessUrl(two.url, { hub: HUB, key, userId: 'sub' }));
    const roamer = await reliableClient(t, accessUrl(one.url, { hub: HUB, key, userId: 'roamer' }));
    for (const c of [subscriber, roamer]) assert.equal((await c.client.request({ type: 'joinGroup', group: GROUP }, 10000)).success, true);
    const publisher = await reliableClient(t, accessUrl(one.url, { hub: HUB, key, userId: 'pub' }));
    const sent = await publisher.client.request({ type: 'sendToGroup', group: GROUP, dataType: 'text', data: 'one' }, 10000);
    assert.equal(sent.success, true, JSON.stringify(sent));
    await rest(two).group(GROUP).sendToAll('two', { contentType: 'text/plain' });
    for (const c of [subscriber, roamer]) await c.client.waitFor(() => texts(c.client).includes('two'), 10000, 'the REST send');
    assert.deepEqual(texts(subscriber.client), ['one', 'two']);
    assert.deepEqual(texts(roamer.client), ['one', 'two']);
    const last = roamer.client.dataMessages().at(-1);
    roamer.client.send({ type: 'sequenceAck', sequenceId: last.sequenceId });

    // The reliable session moves from edge 1 to edge 2 (its socket cut, the client back through the other edge),
    // with an event sent while it was away.
    roamer.client.ws.terminate();
    assert.equal((await publisher.client.request({ type: 'sendToGroup', group: GROUP, dataType: 'text', data: 'three' }, 10000)).success, true);
    const back = `${wsUrl(two.url, `/client/hubs/${HUB}`)}?awps_connection_id=${encodeURIComponent(roamer.id)}&awps_reconnection_token=${encodeURIComponent(roamer.token)}`;
    const moved = await reliableClient(t, back);
    assert.equal(moved.id, roamer.id, 'the same session, taken over by edge 2');
    await rest(one).group(GROUP).sendToAll('four', { contentType: 'text/plain' });
    await moved.client.waitFor(() => texts(moved.client).includes('four'), 10000, 'an event after the move');
    // Its sequence ids go on: what it missed, then what came after (before them, again, what its acknowledgement
    // cut with the socket may not have told edge 1, under the same ids).
    const got = moved.client.dataMessages().map((m) => [m.sequenceId, m.data]);
    const before = roamer.client.dataMessages().map((m) => [m.sequenceId, m.data]);
    assert.deepEqual(got.slice(-2), [[last.sequenceId + 1, 'three'], [last.sequenceId + 2, 'four']], JSON.stringify(got));
    assert.deepEqual(got.slice(0, -2), before.slice(before.length - (got.length - 2)), JSON.stringify(got));
    await subscriber.client.waitFor(() => texts(subscriber.client).includes('four'), 10000, 'the subscriber');
    assert.deepEqual(texts(subscriber.client), ['one', 'two', 'three', 'four']);

    // History: the group's stored events, read through either edge.
    for (const edge of [one, two]) {
      const path = `/api/hubs/${HUB}/groups/${GROUP}/messages`;
      const res = await fetch(`${edge.url}${path}?after=0&limit=10`, { headers: { authorization: bearer(edge, path) }, signal: AbortSignal.timeout(10000) });
      const body = (await res.json()) as { messages: { data: unknown }[] };
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.deepEqual(
        body.messages.map((m) => m.data),
        ['one', 'two', 'three', 'four'],
      );
    }

    for (const edge of [one, two]) {
      const { status, body } = await readiness(edge);
      assert.equal(status, 200, `${edge.name}: ${JSON.stringify(body)}`);
    }

    // What the edges never do is refused to their user: deleting or purging a stream, listing the account's.
    const nc = await connect({ servers: nodes[2].url, user: 'edge', pass: SECRETS.NATS_EDGE_PASSWORD, name: TEST_CLIENT, reconnect: false });
    cleanupFor(t).after(() => nc.close());
    const jsm = await nc.jetstreamManager({ timeout: 1000 });
    const refused: [string, () => Promise<unknown>][] = [
      ['STREAM.DELETE.RELAY_chat', () => jsm.streams.delete('RELAY_chat')],
      ['STREAM.PURGE.KV_RELAY_sessions', () => jsm.streams.purge('KV_RELAY_sessions')],
      ['STREAM.NAMES', () => jsm.streams.names().next()],
    ];
    for (const [subject, call] of refused) {
      await assert.rejects(call(), `${subject} is not answered`);
      await until(() => nodes[2].violations().some((line) => line.includes(`"$JS.API.${subject}"`)), 5000, `${subject} logged as a violation`);
    }
    assert.ok((await jsm.streams.info('RELAY_chat')).state.messages >= 4, 'the hub keeps its events');

    // Asked last: what an edge sent last (a read's consumer deleted after its page went out) is logged by then.
    assert.deepEqual(problems(), []);
  });
});
