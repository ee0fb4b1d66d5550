// Recovery of a reliable session whose old socket is still open
// (docs/protocols/web-pubsub.md, "Recovery"; src/pubsub/session-recovery.ts):
// the new socket gets `connected` and every unacknowledged message, as after a
// drop; the old one gets `disconnected` and a close frame, 1001 SessionMoved
// (not 1008: a client still on it recovers the session back), and is dropped
// when it does not answer the close within timeouts.closeHandshakeMs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { RELIABLE, PLAIN, RawPubSubClient, accessUrl, pubsubOverrides, startPubSubRelay, recoveryQuery } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { parseServerFrames, rawUpgrade, readFrames, readUntilCloseOr } from '../helpers/raw-socket.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { startClient } from '../helpers/web-pubsub-sdk.ts';

describe('recovery of a session whose old socket is still open', () => {
  it('closes the old socket 1001 SessionMoved after `disconnected`, and gives the new one the unacknowledged messages (before: the old one dropped, 1006)', async (t) => {
    const relay = await startPubSubRelay(t);
    const old = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const connected = await old.waitFor((m) => m.type === 'system' && m.event === 'connected');
    await old.request({ type: 'joinGroup', group: 'g' });
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    for (let n = 1; n <= 3; n++) await publisher.request({ type: 'sendToGroup', group: 'g', data: n, noEcho: true });
    await old.waitFor((m) => m.type === 'message' && m.data === 3, 5000, 'the three, unacknowledged');
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recoveryQuery(connected.connectionId, connected.reconnectionToken), RELIABLE, t);
    assert.deepEqual(await withTimeout(old.closed, 5000, 'the old socket to close'), { code: 1001, reason: 'SessionMoved' });
    assert.ok(old.messages.some((m) => m.type === 'system' && m.event === 'disconnected'), 'disconnected before the close');
    await again.waitFor((m) => m.type === 'message' && m.data === 3, 5000, 'the three again');
    assert.equal(again.messages[0].event, 'connected');
    assert.equal(again.messages[0].connectionId, connected.connectionId);
    // The old socket's close left the session on the new one: it still gets what comes.
    await publisher.request({ type: 'sendToGroup', group: 'g', data: 4, noEcho: true });
    await again.waitFor((m) => m.type === 'message' && m.data === 4, 5000, 'a later message');
    assert.deepEqual(again.dataMessages().map((m) => [m.sequenceId, m.data]), [[1, 1], [2, 2], [3, 3], [4, 4]]);
    assert.equal(again.ws.readyState, WebSocket.OPEN);
  });

  it('says in its log which check refused a recovery, and for which connection (before: the hub alone; a soak could not tell why five sessions were refused)', async (t) => {
    const log = captureLogger('info');
    const relay = await startTestRelay(t, pubsubOverrides({}), { log: log.log });
    const client = await RawPubSubClient.connect(accessUrl(relay.url), RELIABLE, t);
    const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const refusals = () => log.lines().filter((line) => (line as { event?: string }).event === 'pubsub.recovery_refused') as { connectionId?: string; reason?: string }[];
    for (const [connectionId, token, reason] of [
      [connected.connectionId, `${connected.reconnectionToken}x`, 'another reconnection token'],
      ['no-such-connection', connected.reconnectionToken, 'no session to take'],
    ] as const) {
      const refused = await RawPubSubClient.connect(accessUrl(relay.url) + recoveryQuery(connectionId, token), RELIABLE, t);
      assert.deepEqual(await withTimeout(refused.closed, 5000, 'the refusal'), { code: 1008, reason: 'SessionNotFound' });
      await until(() => refusals().some((line) => line.connectionId === connectionId), 5000, 'pubsub.recovery_refused logged');
      assert.match(refusals().find((line) => line.connectionId === connectionId)!.reason ?? '', new RegExp(`^${reason}`));
    }
  });

  it('drops an old socket that does not answer the close within timeouts.closeHandshakeMs', async (t) => {
    const closeHandshakeMs = 300;
    const relay = await startPubSubRelay(t, { timeouts: { closeHandshakeMs } });
    const url = new URL(accessUrl(relay.url));
    // A client by hand that reads but never answers a close frame.
    const old = await rawUpgrade(t, relay.port, url.pathname + url.search, { 'Sec-WebSocket-Protocol': RELIABLE });
    assert.equal(old.status, 101);
    const frames = await readFrames(old.socket, (fs) => fs.some((f) => f.payload.includes('"connected"')), 5000, 'connected', old.rest);
    const connected = JSON.parse(frames.find((f) => f.payload.includes('"connected"'))!.payload.toString());
    // Read from now on (nothing it sends is lost between reads), to the end of the connection.
    old.socket.pause();
    const ending = readUntilCloseOr(old.socket, () => false, closeHandshakeMs + 5000, 'the old socket to be dropped');
    const started = performance.now();
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recoveryQuery(connected.connectionId, connected.reconnectionToken), RELIABLE, t);
    await again.waitFor((m) => m.type === 'system' && m.event === 'connected');
    const { bytes: after, closed } = await ending;
    const waited = performance.now() - started;
    assert.ok(closed);
    const close = parseServerFrames(after).frames.find((f) => f.opcode === 0x8);
    assert.ok(close, 'a close frame came first');
    assert.deepEqual([close.payload.readUInt16BE(0), close.payload.subarray(2).toString()], [1001, 'SessionMoved']);
    assert.ok(waited >= closeHandshakeMs, `dropped ${Math.round(waited)} ms after the recovery began, not before the bound`);
    assert.equal(again.ws.readyState, WebSocket.OPEN);
  });

  it('leaves a client still on the old socket (the new one a reconnect cut at once) to recover its session back with @azure/web-pubsub-client: same connection, nothing lost', async (t) => {
    // Seen in test/cluster/pubsub.test.ts: a load balancer's retry took the session on another edge as its socket was
    // cut, while the SDK's next reconnect had recovered it here. Closed 1008, the SDK did not recover: it started a new
    // connection, and what was sent in between was lost to it.
    const relay = await startPubSubRelay(t);
    const sdk = await startClient(t, accessUrl(relay.url));
    await sdk.client.joinGroup('g');
    const publisher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const publish = async (from: number, to: number) => {
      for (let n = from; n <= to; n++) await publisher.request({ type: 'sendToGroup', group: 'g', data: n, noEcho: true });
    };
    await publish(1, 3);
    await until(() => sdk.groupData.length === 3, 5000, 'the first three');
    // The SDK's own reconnection token (it is what its recovery sends): the stale reconnect has it too.
    const token = (sdk.client as unknown as { _reconnectionToken?: string })._reconnectionToken;
    assert.ok(token, 'the SDK holds its reconnection token');
    const stale = await RawPubSubClient.connect(accessUrl(relay.url) + recoveryQuery(sdk.connectionIds[0], token), RELIABLE, t);
    await stale.waitFor((m) => m.type === 'system' && m.event === 'connected', 5000, 'the stale reconnect to take the session');
    stale.ws.terminate();
    await publish(4, 6);
    await until(() => sdk.groupData.length >= 6, 10000, `the next three on the recovered session (got ${sdk.groupData.map((m) => m.data).join(',')})`);
    assert.deepEqual(sdk.groupData.map((m) => m.data), [1, 2, 3, 4, 5, 6]);
    assert.equal(sdk.connectionIds.length, 1, 'the session recovered, not replaced by a new connection');
  });
});
