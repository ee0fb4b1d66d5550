// Upgrades waiting for their hub's `connect` event: at most
// limits.connectsPendingPerHub per hub and edge, past it 503
// TooManyPendingConnects at once (docs/limits.md). Each waiting upgrade is a
// WebSocket place of the node (limits.connectionsPerNode) and a request at
// the handler: before, a hub whose handler hung (up to its timeoutMs, 300 s
// at most) let anyone with that hub's tokens take every place of the node,
// and other hubs' clients and hybrid connections' listeners and senders were
// refused 503 ConnectionLimitReached (found by the event handler review).
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { describe, it, type TestContext } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startHycoWsListener } from '../helpers/hyco.ts';
import { HUB, HUB_KEY, OTHER_HUB, OTHER_HUB_KEY, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { captureLogger, configFile, metricValue, startTestRelay, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, waitEvent, withTimeout } from '../helpers/wait.ts';

/** A handler that lets every origin through abuse protection and answers no `connect` until told to. */
async function silentConnectHandler(t: TestContext): Promise<{ url: string; held: ServerResponse[]; answerAll(status: number): void }> {
  const state = {
    url: '',
    held: [] as ServerResponse[],
    answerAll(status: number) {
      for (const res of state.held.splice(0)) res.writeHead(status).end();
    },
  };
  const server = createServer((req, res) => {
    req.resume();
    if (req.method === 'OPTIONS') return void res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
    if (req.headers['ce-eventname'] === 'connect') state.held.push(res);
    else res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}/events/{event}`;
  return state;
}

/**
 * A pub/sub client's upgrade written by hand: `answer` resolves, once the relay has let go of the socket, with the
 * status and error code it was refused with and how long that took (never, while its connect event waits).
 */
function upgrade(t: TestContext, port: number, url: string): { answer: Promise<{ status: number; code?: string; ms: number }> } {
  const started = performance.now();
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  cleanupFor(t).after(() => socket.destroy());
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  // Once the relay has ended its side, a write tells whether it also let go of the socket (then it resets).
  socket.on('end', () => {
    const probe = setInterval(() => socket.write('still here?'), 20);
    socket.once('close', () => clearInterval(probe));
  });
  const target = new URL(url);
  socket.write(
    `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${PLAIN}\r\n\r\n`,
  );
  const answer = new Promise<{ status: number; code?: string; ms: number }>((resolve) =>
    socket.once('close', () => {
      const ms = performance.now() - started;
      resolve({ status: Number(text.split(' ')[1]), code: /"code":"(\w+)"/.exec(text)?.[1], ms });
    }),
  );
  return { answer };
}

describe('upgrades waiting for their connect event', () => {
  it('are at most limits.connectsPendingPerHub per hub, past it 503 TooManyPendingConnects at once: a hub whose handler hangs leaves other hubs and hybrid connections their places (limits.connectionsPerNode)', async (t) => {
    const handler = await silentConnectHandler(t);
    const hubs = [
      { name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate: handler.url, userEventPattern: '', systemEvents: ['connect'], timeoutMs: 60000 }] },
      { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
    ];
    const overrides = (pending: number) => ({
      metrics: { requireManage: false },
      // Nine places: two waiting, hub B's client, a listener, a sender and its rendezvous leg leave three (for the
      // refused, until the relay lets go of them); the nine hub A asks for fill them all when none are refused.
      limits: { connectionsPerNode: 9, connectsPendingPerHub: pending, connectRatePerAddress: 0 },
      pubsub: { hubs },
    });
    const file = configFile(t, overrides(2));
    const { loadConfig } = await import('../../src/config/load.ts');
    const logs = captureLogger();
    const relay = await startTestRelay(t, overrides(2), { log: logs.log, loadConfig: () => loadConfig(file, {}, {}) });
    const hubA = accessUrl(relay.url, { userId: 'a' });

    // Two wait for the handler, which does not answer.
    upgrade(t, relay.port, hubA);
    upgrade(t, relay.port, hubA);
    await until(() => handler.held.length === 2, 5000, 'two connect events at the handler');

    // Seven more at once: refused, each at once (the handler's timeoutMs is 60 s).
    const flood = await Promise.allSettled(Array.from({ length: 7 }, () => withTimeout(upgrade(t, relay.port, hubA).answer, 5000, "hub A's upgrade past the bound to be answered")));

    // Hub B's client, a listener and a sender are served (before: 503 ConnectionLimitReached, hub A's nine held every place).
    const b = await RawPubSubClient.connect(accessUrl(relay.url, { hub: OTHER_HUB }), PLAIN, t).catch((err: Error) => assert.fail(`hub B's client: ${err.message}`));
    await b.waitFor((m) => m.type === 'system' && m.event === 'connected', 5000, "hub B's connected");
    await startHycoWsListener(t, relay.url, (ws) => ws.on('message', (data: Buffer) => ws.send(data))).catch((err: Error) => assert.fail(`the listener: ${err.message}`));
    const senderUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect');
    const sender = await openWebSocket(senderUrl, { headers: { ServiceBusAuthorization: tokenFor(senderUrl) } }).catch((err: Error) => assert.fail(`the sender: ${err.message}`));
    cleanupFor(t).after(() => sender.terminate());
    sender.send('ping');
    const [echo] = await waitEvent<[Buffer]>(sender, 'message');
    assert.equal(String(echo), 'ping');

    for (const outcome of flood) {
      assert.equal(outcome.status, 'fulfilled', outcome.status === 'rejected' ? String(outcome.reason) : '');
      const { status, code, ms } = (outcome as PromiseFulfilledResult<{ status: number; code?: string; ms: number }>).value;
      assert.deepEqual({ status, code }, { status: 503, code: 'TooManyPendingConnects' });
      assert.ok(ms < 5000, `refused after ${ms} ms`);
    }
    assert.equal(handler.held.length, 2, 'the refused were not sent to the handler');

    // Ten more one after the other: counted each, logged ten times a minute per hub (the line after says how many were left out).
    for (let i = 0; i < 10; i++) assert.equal((await withTimeout(upgrade(t, relay.port, hubA).answer, 5000, 'a refusal')).code, 'TooManyPendingConnects');
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'connectsPendingPerHub' }), 17);
    const lines = logs.lines().filter((l) => l.event === 'limit.reached' && l.limit === 'connectsPendingPerHub');
    assert.equal(lines.length, 10);
    assert.deepEqual({ hub: lines[0].hub, pending: lines[0].pending }, { hub: HUB, pending: 2 });

    // A reload raises the bound: one more waits, the next is refused.
    writeFileSync(file, JSON.stringify(testConfig(overrides(3))));
    assert.ok(relay.reload('api').ok);
    upgrade(t, relay.port, hubA);
    await until(() => handler.held.length === 3, 5000, 'a third connect event at the handler');
    assert.equal((await withTimeout(upgrade(t, relay.port, hubA).answer, 5000, 'a refusal')).code, 'TooManyPendingConnects');

    // The handler answers (refuses) them: their places are free again.
    handler.answerAll(401);
    const next = upgrade(t, relay.port, hubA);
    await until(() => handler.held.length === 1, 5000, 'a connect event once the others were answered');
    handler.answerAll(401);
    assert.equal((await withTimeout(next.answer, 5000, 'the refusal of the handler')).status, 401);
  });
});
