// A REST send's messageTtlSeconds (Azure: "messages that are not consumed by
// the client within the specified TTL will be dropped by the service"): a
// message a reliable session holds for a client that is away is not sent to
// it once its time to live has passed, and makes room in a full session
// buffer. Sent through Microsoft's service SDK, received by a raw reliable client.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RELIABLE, RawPubSubClient, accessUrl, startPubSubRelay, recoveryQuery } from '../helpers/pubsub.ts';
import { metricValue } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';

/** A reliable client that joined group `g`, then lost its socket: its session is held. */
async function awayReliableClient(t: Parameters<typeof RawPubSubClient.connect>[2], url: string) {
  const client = await RawPubSubClient.connect(accessUrl(url), RELIABLE, t);
  const connected = await client.waitFor((m) => m.type === 'system' && m.event === 'connected');
  await client.request({ type: 'joinGroup', group: 'g' });
  client.ws.terminate();
  await withTimeout(client.closed, 5000, 'the socket to close');
  return recoveryQuery(connected.connectionId, connected.reconnectionToken);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('messageTtlSeconds', () => {
  it('is not re-sent from a reliable session once it passed, wherever the message is in the buffer', async (t) => {
    const relay = await startPubSubRelay(t);
    const recovery = await awayReliableClient(t, relay.url);
    const service = serviceClient(relay);
    const group = service.group('g');
    await group.sendToAll({ n: 1 });
    await group.sendToAll({ n: 2 }, { messageTtlSeconds: 1 });
    await service.sendToAll({ n: 3 }, { messageTtlSeconds: 300 });
    await group.sendToAll({ n: 4 }, { messageTtlSeconds: 0 });
    await group.sendToAll({ n: 5 }, { messageTtlSeconds: 1 });
    await sleep(1300);
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await again.waitFor((m) => m.type === 'message' && m.data.n === 4, 5000, 'event 4');
    // Nothing else comes: a client that gets nothing more would not show a late 5, so ask for a fresh one after it.
    await group.sendToAll({ n: 6 });
    await again.waitFor((m) => m.type === 'message' && m.data.n === 6, 5000, 'event 6');
    const got = again.dataMessages();
    // Ids stay as numbered when the messages were held: the expired ones leave gaps, which clients take.
    assert.deepEqual(
      got.map((m) => [m.data.n, m.sequenceId]),
      [
        [1, 1],
        [3, 3],
        [4, 4],
        [6, 6],
      ],
    );
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_expired_total', { where: 'held' }), 2);
    // Acknowledging 1 puts expired 2 first: let go at the next reconnect, and not counted again.
    again.send({ type: 'sequenceAck', sequenceId: 1 });
    await again.request({ type: 'joinGroup', group: 'g' });
    again.ws.terminate();
    await withTimeout(again.closed, 5000, 'the socket to close');
    const second = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await second.waitFor((m) => m.type === 'message' && m.data.n === 6, 5000, 'event 6 again');
    assert.deepEqual(
      second.dataMessages().map((m) => [m.data.n, m.sequenceId]),
      [
        [3, 3],
        [4, 4],
        [6, 6],
      ],
    );
    assert.equal(await metricValue(relay, 'edge_relay_pubsub_expired_total', { where: 'held' }), 2, 'each expired message counted once');
    // The client's acknowledgement of 6 lets every held message go: nothing is re-sent after another reconnect.
    second.send({ type: 'sequenceAck', sequenceId: 6 });
    await second.request({ type: 'joinGroup', group: 'g' });
    second.ws.terminate();
    await withTimeout(second.closed, 5000, 'the socket to close');
    const third = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await group.sendToAll({ n: 7 });
    await third.waitFor((m) => m.type === 'message' && m.data.n === 7, 5000, 'event 7');
    assert.deepEqual(
      third.dataMessages().map((m) => [m.data.n, m.sequenceId]),
      [[7, 7]],
    );
  });

  it('makes room in a full session buffer once it passed: the session is kept', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { sessionBufferMessages: 2 } });
    const recovery = await awayReliableClient(t, relay.url);
    const group = serviceClient(relay).group('g');
    await group.sendToAll({ n: 1 }, { messageTtlSeconds: 1 });
    await group.sendToAll({ n: 2 }, { messageTtlSeconds: 1 });
    await sleep(1300);
    // Before: a third message found the buffer full and the session ended (1008 SessionBufferFull).
    await group.sendToAll({ n: 3 });
    await group.sendToAll({ n: 4 });
    const again = await RawPubSubClient.connect(accessUrl(relay.url) + recovery, RELIABLE, t);
    await again.waitFor((m) => m.type === 'message' && m.data.n === 4, 5000, 'event 4');
    assert.deepEqual(
      again.dataMessages().map((m) => [m.data.n, m.sequenceId]),
      [
        [3, 3],
        [4, 4],
      ],
    );
    // A full buffer of messages that have not expired still ends the session, as before.
    await group.sendToAll({ n: 5 }, { messageTtlSeconds: 300 });
    await group.sendToAll({ n: 6 }, { messageTtlSeconds: 300 });
    const closed = await withTimeout(again.closed, 5000, 'the session to end');
    assert.equal(closed.code, 1008);
  });
});
