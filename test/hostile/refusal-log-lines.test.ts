// Log lines of refusals anyone can cause, before a token is read: a
// connection past limits.httpConnectionsPerAddress, an upgrade past
// limits.connectRatePerAddress. Each refusal is counted
// (edge_relay_limit_refusals_total); its limit.reached line is not written
// for every one: ten a minute per limit, the next line saying how many were
// left out (`suppressed`). Before, one warn line per refused connection: a
// client connecting in a loop (a TCP connect, nothing sent) wrote as many lines
// as it could open connections, to disk and to whatever ships the logs.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { HUB, PLAIN, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { captureLogger, metricValue, startTestRelay } from '../helpers/relay.ts';
import { rawUpgrade, tcp } from '../helpers/raw-socket.ts';
import { withTimeout } from '../helpers/wait.ts';

const ATTEMPTS = 200;
const LINES_PER_MINUTE = 10;

/** Opens a TCP connection and waits for the relay to close it (its refusal); sends nothing. */
function refusedConnection(port: number): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      const socket = connect({ port, host: '127.0.0.1' });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
      socket.resume();
    }),
    10000,
    'a refused connection closed',
  );
}

describe('limit.reached lines of refusals before a token is read', () => {
  it(`are at most ${LINES_PER_MINUTE} a minute per limit, each refusal still counted (before: one line per refused connection)`, async (t) => {
    const { log, lines } = captureLogger('warn');
    const relay = await startTestRelay(t, { metrics: { requireManage: false }, limits: { httpConnectionsPerAddress: 2 }, timeouts: { firstByteMs: 60000, headersMs: 60000 } }, { log });
    // Two held connections (sending nothing, within timeouts.firstByteMs, made long for a loaded machine) fill the address's place; every next one is refused.
    await tcp(t, relay.port);
    await tcp(t, relay.port);
    for (let i = 0; i < ATTEMPTS; i += 20) await Promise.all(Array.from({ length: 20 }, () => refusedConnection(relay.port)));
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'httpConnectionsPerAddress' }), ATTEMPTS);
    const perAddress = lines().filter((l) => l.event === 'limit.reached' && l.limit === 'httpConnectionsPerAddress');
    assert.ok(perAddress.length >= 1 && perAddress.length <= LINES_PER_MINUTE, `${perAddress.length} lines for ${ATTEMPTS} refused connections`);
    assert.equal(perAddress[0].address, '127.0.0.1', 'a line names the address');
  });

  it('of upgrades past the connect rate: likewise', async (t) => {
    const { log, lines } = captureLogger('warn');
    const relay = await startTestRelay(t, { metrics: { requireManage: false }, limits: { connectRatePerAddress: 0.01, connectBurstPerAddress: 1 } }, { log });
    for (let i = 0; i <= ATTEMPTS; i++) {
      const { socket, status } = await rawUpgrade(t, relay.port, '/$hc/echo?sb-hc-action=connect');
      socket.destroy();
      assert.equal(status, i === 0 ? 401 : 429);
    }
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'connectRatePerAddress' }), ATTEMPTS);
    const rate = lines().filter((l) => l.event === 'limit.reached' && l.limit === 'connectRatePerAddress');
    assert.ok(rate.length >= 1 && rate.length <= LINES_PER_MINUTE, `${rate.length} lines for ${ATTEMPTS} refused upgrades`);
  });
});

describe('limit.reached lines of upgrades to a full hub, before a token is read', () => {
  it(`are at most ${LINES_PER_MINUTE} a minute per hub, each refusal still counted (before: one line per upgrade)`, async (t) => {
    const { log, lines } = captureLogger('warn');
    const relay = await startTestRelay(t, pubsubOverrides({ metrics: { requireManage: false }, limits: { connectionsPerHub: 1, connectRatePerAddress: 0 } }), { log });
    const member = new WebSocket(accessUrl(relay.url), PLAIN);
    t.after(() => member.terminate());
    await withTimeout(once(member, 'open'), 5000, 'the one client the hub takes');
    for (let i = 0; i < ATTEMPTS; i++) {
      // No token at all: refused for the full hub before one is looked for.
      const { socket, status } = await rawUpgrade(t, relay.port, `/client/hubs/${HUB}`, { 'Sec-WebSocket-Protocol': PLAIN });
      socket.destroy();
      assert.equal(status, 429);
    }
    assert.equal(await metricValue(relay, 'edge_relay_limit_refusals_total', { limit: 'connectionsPerHub' }), ATTEMPTS);
    const full = lines().filter((l) => l.event === 'limit.reached' && l.limit === 'connectionsPerHub');
    assert.ok(full.length >= 1 && full.length <= LINES_PER_MINUTE, `${full.length} lines for ${ATTEMPTS} refused upgrades`);
    assert.equal(full[0].hub, HUB);
  });
});
