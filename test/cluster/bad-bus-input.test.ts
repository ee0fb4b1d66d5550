// The bus is a network too: whatever arrives on the relay's subjects is
// checked against schemas/bus-message.schema.json. Garbage, wrong shapes,
// another hub's name and oversized claims are dropped (and logged); the edge
// keeps serving. A raw NATS client plays the hostile peer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect } from 'nats';
import { encodeEnvelope } from '../../src/bus/envelope.ts';
import { decodeEdgeMessage, encodeEdgeMessage } from '../../src/bus/messages.ts';
import { Subjects } from '../../src/bus/subjects.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { CORE_NATS, readiness, startEdge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, OTHER_HUB, RELIABLE, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

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

  it('a peer handing over a session whose page skips an id, or claims more bytes than it carries, gives no session, nor one whose events are not data messages', async (t) => {
    // A raw NATS client plays the edge holding session `held` (core NATS: sessions move by hand-over).
    const nats = await startNatsServer(t);
    // A short drain: at the end the edge holds the session it took and would wait for another edge to take it.
    const edge = await startEdge(t, 'edge-a', [nats.url], { ...CORE_NATS, timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500 } });
    const peer = await connect({ servers: nats.url });
    cleanupFor(t).after(() => peer.close());
    // Events as sessions hold them: the message's JSON without its opening brace.
    const event = (n: number) => Buffer.from(`"type":"message","from":"group","group":"g","dataType":"json","data":${n}}`);
    const entriesOf = (bodies: Buffer[], seqs = bodies.map((_, i) => i + 1)) => bodies.map((b, i) => ({ seq: seqs[i], mid: `peer:${seqs[i]}`, length: b.length }));
    const three = [1, 2, 3].map(event);
    const pages: Record<string, { entries: { seq: number; mid: string; length: number }[]; body: Buffer }> = {
      dense: { entries: entriesOf(three), body: Buffer.concat(three) },
      gap: { entries: entriesOf([event(1), event(3)], [1, 3]), body: Buffer.concat([event(1), event(3)]) },
      short: { entries: entriesOf(three), body: Buffer.concat(three.slice(0, 2)) },
      // Before: sent to the client as they were (the SDK fails to parse the first, the second has two ids).
      'not-json': { entries: entriesOf([event(1), Buffer.from('"type":"message",{'), event(3)]), body: Buffer.concat([event(1), Buffer.from('"type":"message",{'), event(3)]) },
      'own-id': { entries: entriesOf([event(1), Buffer.from('"type":"message","from":"server","dataType":"text","data":"x","sequenceId":9}'), event(3)]), body: Buffer.concat([event(1), Buffer.from('"type":"message","from":"server","dataType":"text","data":"x","sequenceId":9}'), event(3)]) },
    };
    const subjects = new Subjects('relay');
    // Each case its own session id: all at once.
    await Promise.all(Object.entries(pages).map(async ([name, page]) => {
      const connectionId = `held-${name}`;
      const sub = peer.subscribe(subjects.connection(HUB.toLowerCase(), connectionId), {
        callback: (_err, m) => {
          const h = decodeEdgeMessage(m.data, 'ps.handover')?.message;
          if (!h) return;
          if (h.stage === 'begin') {
            const permissions = new ConnectionPermissions(['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup']).snapshot();
            m.respond(encodeEdgeMessage({ op: 'ps.session', ok: true, userId: null, permissions, groups: ['g'], ackIds: [], reconnectionToken: 'token', firstSeq: 1 }));
          } else if (h.stage === 'commit') m.respond(encodeEdgeMessage({ op: 'ps.session', ok: true, lastSeq: 3, seen: {} }));
          else if (h.stage === 'page') m.respond(encodeEdgeMessage({ op: 'ps.entries', entries: page.entries }, page.body));
          else m.respond(encodeEdgeMessage({ op: 'ps.session', ok: true }));
        },
      });
      cleanupFor(t).after(() => sub.unsubscribe());
      await peer.flush();
      const client = await RawPubSubClient.connect(`${accessUrl(edge.url)}&awps_connection_id=${connectionId}&awps_reconnection_token=token`, RELIABLE, t);
      const outcome = await client.waitFor((m) => m.type === 'system', 10000, `the answer (${name})`).catch(() => undefined);
      if (name === 'dense') {
        // The peer is a good holder when its page is: the session arrives with its ids.
        assert.equal(outcome?.event, 'connected', JSON.stringify(outcome));
        await until(() => client.dataMessages().length === 3, 5000, 'the three events');
        assert.deepEqual(client.dataMessages().map((d) => [d.sequenceId, d.data]), [[1, 1], [2, 2], [3, 3]]);
      } else {
        // Before the check: a gap was renumbered by position (the client would have got id 2 for event 3).
        assert.notEqual(outcome?.event, 'connected', `${name}: ${JSON.stringify(client.messages)}`);
        assert.equal(client.dataMessages().length, 0);
        assert.equal((await withTimeout(client.closed, 5000, 'the close')).code, 1008);
      }
      client.ws.terminate();
    }));
    assert.equal(edge.child.exitCode, null);
    assert.equal((await readiness(edge)).status, 200);
  });
});
