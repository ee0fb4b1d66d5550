// /$relay/metrics: Prometheus text that moves with what the relay does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { cleanupFor } from '../helpers/cleanup.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener, startHycoWsListener } from '../helpers/hyco.ts';
import { RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { startEdge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { withTimeout } from '../helpers/wait.ts';
import { LISTENER_SERIES_MAX } from '../../src/telemetry/metrics.ts';
import { PubSubService } from '../../src/pubsub/pubsub-service.ts';

/** The value of one sample (metric name with its labels as printed), or 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function scrape(relayUrl: string, token?: string): Promise<string> {
  const r = await httpRequest(`${relayUrl}/$relay/metrics`, { headers: token ? { authorization: token } : {} });
  assert.equal(r.status, 200, r.body.toString());
  assert.match(String(r.headers['content-type']), /text\/plain/);
  return r.body.toString();
}

describe('/$relay/metrics', () => {
  it('needs a Manage token by default, and not when the config says so', async (t) => {
    const relay = await startTestRelay(t, { sas: [{ keyName: 'root', key: 'root-key-0123456789abcdef', rights: ['Manage'] }, { keyName: 'sender', key: 'sender-key-0123456789abcdef', rights: ['Send'] }] });
    assert.equal((await httpRequest(`${relay.url}/$relay/metrics`)).status, 401);
    const sendOnly = tokenFor(`${relay.url}/`, { keyName: 'sender', key: 'sender-key-0123456789abcdef' });
    assert.equal((await httpRequest(`${relay.url}/$relay/metrics`, { headers: { authorization: sendOnly } })).status, 403);
    const text = await scrape(relay.url, tokenFor(`${relay.url}/`));
    assert.match(text, /# TYPE edge_relay_rendezvous_opened_total counter/);
    assert.match(text, /edge_relay_process_resident_memory_bytes/);
    const open = await startTestRelay(t, { metrics: { requireManage: false } });
    assert.match(await scrape(open.url), /edge_relay_connections/);
  });

  it('counts rendezvous, HTTP requests by status, bytes and listeners', async (t) => {
    const relay = await startTestRelay(t, {
      metrics: { requireManage: false },
      hybridConnections: [
        { name: 'echo', requiresClientAuthorization: false },
        { name: 'web', requiresClientAuthorization: false },
        { name: 'empty', requiresClientAuthorization: false },
      ],
    });
    await startHycoWsListener(t, relay.url, (ws) => ws.on('message', (m: Buffer) => ws.send(m)));
    await startHycoHttpsListener(t, relay.url, (_req, res) => res.end('hello'), 'web');

    const sender = new WebSocket(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect'));
    cleanupFor(t).after(() => sender.terminate());
    await withTimeout(new Promise((r, j) => (sender.once('open', r), sender.once('error', j))), 5000, 'sender open');
    sender.send(Buffer.alloc(1000));
    await withTimeout(new Promise((r) => sender.once('message', r)), 5000, 'echo');
    const closed = withTimeout(new Promise((r) => sender.once('close', r)), 5000, 'sender close');
    sender.close();
    await closed;
    assert.equal((await httpRequest(`${relay.url}/web/x`)).status, 200);
    assert.equal((await httpRequest(`${relay.url}/empty/x`)).status, 404);
    const refused = await httpRequest(`${relay.url}/$hc/empty?sb-hc-action=connect`, { headers: { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    assert.equal(refused.status, 404);

    // The splice's byte counts land when it has closed on the relay's side too.
    let text = '';
    for (let i = 0; i < 50; i++) {
      text = await scrape(relay.url);
      if (sample(text, 'edge_relay_bytes_relayed_total{direction="to_listener",node="dev"}') > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const nodeLabel = /node="([^"]+)"/.exec(text)![1];
    const s = (series: string) => sample(text, series.replace('}', `,node="${nodeLabel}"}`));
    assert.equal(sample(text, `edge_relay_rendezvous_opened_total{node="${nodeLabel}"}`), 1);
    assert.equal(s('edge_relay_rendezvous_failed_total{reason="NoListener"}'), 1);
    assert.equal(s('edge_relay_http_requests_total{status="200"}'), 1);
    assert.equal(s('edge_relay_http_requests_total{status="404"}'), 1);
    assert.equal(s('edge_relay_bytes_relayed_total{direction="to_listener"}'), 1000);
    assert.equal(s('edge_relay_bytes_relayed_total{direction="to_sender"}'), 1000);
    assert.equal(s('edge_relay_listeners{entity="echo"}'), 1);
    assert.equal(s('edge_relay_listeners{entity="web"}'), 1);
    assert.equal(s('edge_relay_connections{kind="listener"}'), 2);
  });

  it(`keeps ${LISTENER_SERIES_MAX} listener series, the entities with the most listeners, and sums the rest under entity="" (before: one per entity its listeners named)`, async (t) => {
    const relay = await startTestRelay(t, { autoCreate: true, limits: { connectRatePerAddress: 100_000, connectBurstPerAddress: 100_000 } });
    const open = (entity: string) =>
      withTimeout(
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(wsUrl(relay.url, `/$hc/${entity}?sb-hc-action=listen`), { headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/${entity}`) } });
          cleanupFor(t).after(() => ws.terminate());
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
        10000,
        `listener of ${entity}`,
      );
    const names = Array.from({ length: LISTENER_SERIES_MAX + 10 }, (_, i) => `made-up-${i}`);
    for (let i = 0; i < names.length; i += 50) await Promise.all(names.slice(i, i + 50).map(open));
    await open('busy');
    await open('busy');
    const series = (await scrape(relay.url, tokenFor(`${relay.url}/`))).split('\n').filter((l) => l.startsWith('edge_relay_listeners{'));
    assert.equal(series.length, LISTENER_SERIES_MAX + 1);
    assert.equal(series.reduce((n, l) => n + Number(l.split(' ').pop()), 0), names.length + 2);
    assert.ok(series.some((l) => /entity="busy"/.test(l) && l.endsWith(' 2')), 'the entity with the most listeners keeps its series');
    assert.equal(series.filter((l) => /entity=""/.test(l)).length, 1);
  });

  it('counts pub/sub events in and out, acks by result, and attached connections', async (t) => {
    const relay = await startTestRelay(t, pubsubOverrides({ metrics: { requireManage: false } }));
    const a = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'] }), undefined, t);
    const b = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroup'] }), undefined, t);
    for (const c of [a, b]) assert.equal((await c.request({ type: 'joinGroup', group: 'room' })).success, true);
    assert.equal((await a.request({ type: 'sendToGroup', group: 'room', dataType: 'text', data: 'hi' })).success, true);
    assert.equal((await b.request({ type: 'sendToGroup', group: 'room', dataType: 'text', data: 'no' })).success, false);
    await b.waitFor((m) => m.type === 'message' && m.data === 'hi');
    const text = await scrape(relay.url);
    const node = /node="([^"]+)"/.exec(text)![1];
    const s = (series: string) => sample(text, series.replace('}', `,node="${node}"}`));
    assert.equal(s('edge_relay_pubsub_events_in_total{source="local"}'), 1);
    assert.equal(sample(text, `edge_relay_pubsub_events_out_total{node="${node}"}`), 2);
    assert.equal(s('edge_relay_pubsub_acks_total{result="success"}'), 3);
    assert.equal(s('edge_relay_pubsub_acks_total{result="Forbidden"}'), 1);
    assert.equal(s('edge_relay_connections{kind="pubsub"}'), 2);
    assert.equal(sample(text, `edge_relay_pubsub_publish_to_deliver_seconds_count{node="${node}"}`), 1);
  });

  it("scans the pub/sub connections once for a scrape's three gauges of them, and again for the next scrape", async (t) => {
    let scans = 0;
    const counts = PubSubService.prototype.openCounts;
    PubSubService.prototype.openCounts = function (this: PubSubService, only?: Parameters<typeof counts>[0]) {
      scans++;
      return counts.call(this, only);
    };
    t.after(() => (PubSubService.prototype.openCounts = counts));
    const relay = await startTestRelay(t, pubsubOverrides({ metrics: { requireManage: false } }));
    const first = await scrape(relay.url);
    // Before: one scan per gauge (connections, sessions retained, sessions behind).
    assert.equal(scans, 1);
    assert.match(first, /edge_relay_pubsub_sessions_behind\{[^}]*\} 0/);
    await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
    const second = await scrape(relay.url);
    assert.equal(scans, 2);
    const node = /node="([^"]+)"/.exec(second)![1];
    assert.equal(sample(second, `edge_relay_connections{kind="pubsub",node="${node}"}`), 1);
  });

  it('reports the round trip to the NATS bus, and none while it is gone', async (t) => {
    const nats = await startNatsServer(t);
    const edge = await startEdge(t, 'edge-m', [nats.url], { metrics: { requireManage: false } });
    const series = 'edge_relay_bus_round_trip_seconds{bus="nats",node="edge-m"}';
    const first = await scrape(edge.url);
    const rtt = sample(first, series);
    assert.ok(rtt > 0 && rtt < 1, `round trip ${rtt}`);
    assert.equal(sample(first, 'edge_relay_bus_connected{bus="nats",node="edge-m"}'), 1);
    await nats.kill();
    // Gone once the edge has noticed the loss (bounded: 5 s).
    const deadline = Date.now() + 5000;
    let text = await scrape(edge.url);
    while (text.includes(series) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      text = await scrape(edge.url);
    }
    assert.ok(!text.includes(series), 'round trip still reported with the bus gone');
    assert.equal(sample(text, 'edge_relay_bus_connected{bus="nats",node="edge-m"}'), 0);
  });
});
