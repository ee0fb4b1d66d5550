// /$relay/ready's decision (src/ops/health.ts) for each state an edge can be
// in, answered over a real HTTP server: the reasons a load balancer's health
// check and an operator read. The states come from a relay in the cluster
// tests (test/cluster/jetstream.test.ts, session-moves.test.ts); here each is
// set directly, including the short one between JetStream ready and the
// durable hubs reading their streams, which a running relay passes in
// milliseconds.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { handleOps, type Readiness } from '../../src/ops/health.ts';
import { httpRequest } from '../helpers/http.ts';

describe('/$relay/ready', () => {
  let readiness: Readiness;
  let server: Server;
  let url: string;
  before(async () => {
    server = createServer((req, res) => {
      if (!handleOps(req.url!.slice(1), req, res, readiness)) res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => new Promise((r) => (server.closeAllConnections(), server.close(r))));

  async function ready(state: Partial<Readiness>): Promise<{ status: number; body: { ready: boolean; reasons: string[]; degraded: string[]; jetstream?: { state: string; storing: boolean } } }> {
    readiness = { shuttingDown: () => false, bus: () => ({ kind: 'nats', connected: true }), ...state };
    const res = await httpRequest(`${url}/ready`);
    assert.equal(res.headers['cache-control'], 'no-store');
    return { status: res.status, body: JSON.parse(String(res.body)) };
  }

  it('is ready with the bus connected, JetStream ready and the durable hubs reading their streams', async () => {
    const got = await ready({ jetstream: () => ({ state: 'ready', storeFailures: [] }), followsStreams: () => true });
    assert.deepEqual([got.status, got.body.reasons, got.body.degraded, got.body.jetstream], [200, [], [], { state: 'ready', storing: true }]);
    assert.equal((await ready({})).status, 200, 'without durable hubs');
  });

  it('is not ready while the durable hubs do not read their streams yet, though JetStream is ready', async () => {
    const got = await ready({ jetstream: () => ({ state: 'ready', storeFailures: [] }), followsStreams: () => false });
    assert.deepEqual([got.status, got.body.ready, got.body.reasons], [503, false, ['the durable hubs do not read their streams yet']]);
  });

  it('gives one reason per cause: JetStream\'s own problem before the streams, the bus before JetStream', async () => {
    const waiting = await ready({ jetstream: () => ({ state: 'waiting', problem: 'JetStream has not answered yet', storeFailures: [] }), followsStreams: () => false });
    assert.deepEqual([waiting.status, waiting.body.reasons], [503, ['JetStream has not answered yet']]);
    const noBus = await ready({ bus: () => ({ kind: 'nats', connected: false }), jetstream: () => ({ state: 'waiting', storeFailures: [] }), followsStreams: () => false });
    assert.deepEqual([noBus.status, noBus.body.reasons], [503, ['no connection to the nats bus']]);
    // Connected, but its server takes nothing (frozen before the pings tell): what the edge publishes is dropped.
    const backlogged = await ready({ bus: () => ({ kind: 'nats', connected: true, backlogged: true }), jetstream: () => ({ state: 'ready', storeFailures: [] }), followsStreams: () => true });
    assert.deepEqual([backlogged.status, backlogged.body.reasons], [503, ['the nats bus takes nothing this edge sends']]);
    const draining = await ready({ shuttingDown: () => true, jetstream: () => ({ state: 'ready', storeFailures: [] }), followsStreams: () => true });
    assert.deepEqual([draining.status, draining.body.reasons], [503, ['shutting down']]);
  });

  it('stays ready while a stream stores nothing, and says which in degraded: the rest of the edge serves on', async () => {
    const failing = ['RELAY_chat: no answer from the stream'];
    const got = await ready({ jetstream: () => ({ state: 'ready', storeFailures: failing }), followsStreams: () => true });
    // Before: 503 on every edge alike (the stream has no leader anywhere), so a load balancer dropped the hybrid connections too.
    assert.deepEqual(
      [got.status, got.body.reasons, got.body.degraded, got.body.jetstream],
      [200, [], ['JetStream stores nothing in stream RELAY_chat: no answer from the stream'], { state: 'ready', storing: false }],
    );
    // Without the bus the edge cannot tell: the bus is the reason, nothing more.
    const noBus = await ready({ bus: () => ({ kind: 'nats', connected: false }), jetstream: () => ({ state: 'ready', storeFailures: failing }), followsStreams: () => true });
    assert.deepEqual([noBus.status, noBus.body.reasons, noBus.body.degraded], [503, ['no connection to the nats bus'], []]);
  });
  it('answers GET and HEAD only: another method is 405 with Allow, not an answer as if it were a GET', async () => {
    readiness = { shuttingDown: () => false, bus: () => ({ kind: 'memory', connected: true }) };
    for (const name of ['health', 'ready']) {
      assert.equal((await httpRequest(`${url}/${name}`, { method: 'HEAD' })).status, 200, name);
      for (const method of ['POST', 'DELETE', 'PUT']) {
        const res = await httpRequest(`${url}/${name}`, { method });
        assert.equal(res.status, 405, `${method} ${name}`);
        assert.equal(res.headers.allow, 'GET, HEAD');
        assert.equal(JSON.parse(String(res.body)).code, 'MethodNotAllowed');
      }
    }
  });
});
