// Where a durable hub's checkpoint with nothing unacknowledged is anchored (session-take.ts, checkpointAnchor): the
// last send event the edge's follower applied, by its id, also one it skipped undecoded (a group with no member on
// this edge), applied within 50 s. Anchored at an earlier send, a take's replay from there would number again the
// events after it that the session had been given; at an older one, it could find it aged out and refuse the session.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { checkpointAnchor, type SessionStream } from '../../src/pubsub/session-take.ts';
import { edgeInProcess } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, PLAIN, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';

it('is the last send event applied, a skipped one included, by its id', async (t) => {
  const nats = await startNatsServer(t);
  const edge = await edgeInProcess(t, 'edge-a', nats.url, { bus: { jetstream: { storage: 'memory' } } });
  await until(() => edge.pubsub.followsStreams(), 20000, 'the edge to read the hub stream');
  const stream = edge.pubsub.hub(HUB)!.durable as unknown as SessionStream;
  const member = await RawPubSubClient.connect(accessUrl(edge.url, { userId: 'm', roles: ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'] }), PLAIN, t);
  await member.waitFor((m) => m.type === 'system' && m.event === 'connected');
  assert.equal((await member.request({ type: 'joinGroup', group: 'here' })).success, true);

  // A send to a group with a member here: decoded and applied.
  assert.equal((await member.request({ type: 'sendToGroup', group: 'here', dataType: 'text', data: 'one' })).success, true);
  await member.waitFor((m) => m.type === 'message' && m.data === 'one');
  const applied = stream.position;
  assert.deepEqual(checkpointAnchor(stream)?.seq, applied);
  assert.match(checkpointAnchor(stream)!.mid, /\S/);
  const first = checkpointAnchor(stream)!.mid;

  // A send to a group with no member here: skipped undecoded, and the anchor all the same.
  assert.equal((await member.request({ type: 'sendToGroup', group: 'elsewhere', dataType: 'text', data: 'two' })).success, true);
  await until(() => stream.position > applied, 5000, 'the skipped send applied');
  const anchor = checkpointAnchor(stream);
  assert.equal(anchor?.seq, stream.position);
  assert.notEqual(anchor?.mid, first);

  // A membership change after it: the anchor stays on the send (a take finds it by its id and replays the change).
  assert.equal((await member.request({ type: 'leaveGroup', group: 'here' })).success, true);
  await until(() => stream.position > anchor!.seq, 5000, 'the leave applied');
  assert.deepEqual(checkpointAnchor(stream), anchor);
  // One applied more than 50 s ago anchors nothing (it may age out of the stream before a take reads it).
  assert.equal(checkpointAnchor(stream, Date.now() + 51_000), undefined);
});
