// The bus is a network too: whatever arrives on the relay's subjects is
// checked against schemas/bus-message.schema.json. Garbage, wrong shapes,
// another hub's name and oversized claims are dropped (and logged); the edge
// keeps serving. A raw NATS client plays the hostile peer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect } from 'nats';
import { encodeEnvelope } from '../../src/bus/envelope.ts';
import { Subjects } from '../../src/bus/subjects.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { readiness, startEdge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, OTHER_HUB, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until } from '../helpers/wait.ts';

describe('hostile messages on the bus', () => {
  it('are dropped without crashing, leaking into another hub, or stopping delivery', async (t) => {
    const nats = await startNatsServer(t);
    const edge = await startEdge(t, 'edge-a', [nats.url]);
    const member = await startClient(t, accessUrl(edge.url));
    await member.client.joinGroup('g');
    const peer = await connect({ servers: nats.url });
    cleanupFor(t).after(() => peer.close());
    const s = new Subjects('relay');
    const subjects = [s.hubAll(HUB.toLowerCase()), s.group(HUB.toLowerCase(), 'g'), s.node('edge-a') + '.hc', s.hybridEntity('echo')];
    const send = (m: object, body?: Buffer) => encodeEnvelope(m, body);
    const hostile: Uint8Array[] = [
      Buffer.alloc(0),
      Buffer.from('not an envelope'),
      Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2]),
      send({ op: 'ps.send' }),
      send({ op: 'ps.send', origin: 'x', mid: 'x:1', hub: HUB, target: { kind: 'group', name: 'g' }, message: { from: 'group', dataType: 'json' } }, Buffer.from('{"broken')),
      send({ op: 'ps.send', origin: 'x', mid: 'x:2', hub: HUB, target: { kind: 'group', name: 'g' }, message: { from: 'group', dataType: 'text' } }, Buffer.from('{"an":"object"}')),
      send({ op: 'ps.send', origin: 'x', mid: 'x:3', hub: 'bad hub', target: { kind: 'all' }, message: { from: 'server', dataType: 'json' } }, Buffer.from('1')),
      send({ op: 'ps.send', origin: 'x', mid: 'x:4', hub: OTHER_HUB, target: { kind: 'all' }, message: { from: 'server', dataType: 'json' } }, Buffer.from('"other hub"')),
      send({ op: 'ps.close', origin: 'x', hub: HUB, target: { kind: 'everything' } }),
      send({ op: 'hc.response', id: 'nope', response: { requestId: 'a', statusCode: 200 } }),
      send({ op: 'hc.accept', entity: 'echo', accept: { address: 'ws://evil', id: 'x' } }),
      send({ op: 'hc.routed', ok: true }),
      send({ op: 'ps.done', count: 1 }),
      send({ op: 'ps.handover', origin: 'x', hub: HUB, connectionId: member.connectionIds[0], stage: 'begin', token: 'guess', protocol: 'json.reliable.webpubsub.azure.v1' }),
    ];
    for (const subject of [...subjects, s.connection(HUB.toLowerCase(), member.connectionIds[0])]) {
      for (const data of hostile) peer.publish(subject, data);
    }
    await peer.flush();
    // A guessed reconnection token gets nothing.
    const answer = await peer.request(
      s.connection(HUB.toLowerCase(), member.connectionIds[0]),
      send({ op: 'ps.handover', origin: 'x', hub: HUB, connectionId: member.connectionIds[0], stage: 'begin', token: 'guess', protocol: 'json.reliable.webpubsub.azure.v1' }),
      { timeout: 2000 },
    );
    assert.match(Buffer.from(answer.data).toString(), /"ok":false/);
    // Still serving, and the member got nothing from the hostile peer.
    await serviceClient(edge).group('g').sendToAll('real', { contentType: 'text/plain' });
    await until(() => member.serverData.length + member.groupData.length >= 1, 5000, 'a real message');
    assert.deepEqual([...member.serverData, ...member.groupData].map((m) => m.data), ['real']);
    assert.equal(edge.child.exitCode, null);
    assert.equal((await readiness(edge)).status, 200);
  });
});
