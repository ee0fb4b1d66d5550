// Publish/subscribe across edge nodes (issue 4, items 3 and 4): three
// nats-server processes clustered, three edges, the published Web PubSub SDKs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebPubSubJsonProtocol } from '@azure/web-pubsub-client';
import { connect } from 'nats';
import { decodeEdgeMessage, encodeEdgeMessage, type PsDone } from '../../src/bus/messages.ts';
import { encodeSubjectToken } from '../../src/bus/subjects.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { edgeEvents, startCluster, waitOnRoster, whilePaused, type Edge } from '../helpers/cluster.ts';
import type { NatsNode } from '../helpers/nats.ts';
import { CuttableProxy, HUB, accessUrl } from '../helpers/pubsub.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, untilAnswered } from '../helpers/wait.ts';

/** Subjects an edge's NATS connection is subscribed to, from the monitoring endpoint of every server. */
async function subjectsOf(nats: NatsNode[], edge: Edge): Promise<string[]> {
  const out: string[] = [];
  for (const node of nats.filter((n) => n.running())) {
    const res = await fetch(`http://127.0.0.1:${node.monitorPort}/connz?subs=1`, { signal: AbortSignal.timeout(2000) });
    const body = (await res.json()) as { connections?: { name?: string; subscriptions_list?: string[] }[] };
    for (const c of body.connections ?? []) if (c.name === `edge-relay ${edge.name}`) out.push(...(c.subscriptions_list ?? []));
  }
  return out;
}

/**
 * Sends probes to a group until `received` shows one: a join is acknowledged
 * once the member's own NATS server has the interest, and the other servers
 * learn of it a moment later.
 */
async function waitRoutable(send: (probe: string) => Promise<unknown>, received: () => any[]): Promise<void> {
  for (let i = 0; i < 250; i++) {
    await send(`probe-${i}`);
    const seen = received().some((m) => String(m.data).startsWith('probe-'));
    if (seen) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('group never became routable');
}

const dataOf = (messages: any[]) => messages.map((m) => m.data).filter((d) => !String(d).startsWith('probe-'));

describe('publish/subscribe across nodes', () => {
  const cleanup = new Cleanup();
  let nats: NatsNode[];
  let a: Edge, b: Edge, c: Edge;
  before(async () => {
    const cluster = await startCluster(cleanup, 3);
    nats = cluster.nats;
    [a, b, c] = cluster.edges;
  });
  after(() => cleanup.run());

  it('a publisher on B reaches subscribers on A and C, in order, with the unmodified client SDK', async (t) => {
    const onA = await startClient(t, accessUrl(a.url, { userId: 'sub-a' }));
    const onC = await startClient(t, accessUrl(c.url, { userId: 'sub-c' }));
    const publisher = await startClient(t, accessUrl(b.url, { userId: 'pub-b' }));
    await onA.client.joinGroup('news');
    await onC.client.joinGroup('news');
    const probe = (p: string) => publisher.client.sendToGroup('news', p, 'text', { fireAndForget: true });
    await waitRoutable(probe, () => onA.groupData);
    await waitRoutable(probe, () => onC.groupData);
    for (let i = 1; i <= 200; i++) await publisher.client.sendToGroup('news', i, 'json', { fireAndForget: true });
    await until(() => dataOf(onA.groupData).length === 200 && dataOf(onC.groupData).length === 200, 10000, 'fan-out');
    const expected = Array.from({ length: 200 }, (_, i) => i + 1);
    assert.deepEqual(dataOf(onA.groupData), expected);
    assert.deepEqual(dataOf(onC.groupData), expected);
    assert.equal(onA.groupData.at(-1).fromUserId, 'pub-b');
  });

  it('a node is subscribed to a group subject only while it has local members', async (t) => {
    const member = await startClient(t, accessUrl(a.url));
    const subject = `relay.ps.${encodeSubjectToken(HUB)}.g.${encodeSubjectToken('only.while.members *')}`;
    assert.ok(!(await subjectsOf(nats, a)).includes(subject));
    await member.client.joinGroup('only.while.members *');
    // On a durable hub the join takes effect when the edge reads it back from the stream, a moment after the ack.
    let subscribed = false;
    for (let i = 0; i < 100 && !subscribed; i++) {
      subscribed = (await subjectsOf(nats, a)).includes(subject);
      if (!subscribed) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(subscribed, 'subscribed after the join');
    assert.ok(!(await subjectsOf(nats, b)).includes(subject), 'B has no member, so no subscription');
    await member.client.leaveGroup('only.while.members *');
    let still = true;
    for (let i = 0; i < 100 && still; i++) {
      still = (await subjectsOf(nats, a)).includes(subject);
      if (still) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(still, false, 'unsubscribed after the last member left');
  });

  it('refuses through another edge a permission for one group more than limits.groupsPerConnection, with the reason', async (t) => {
    const held = await startClient(t, accessUrl(a.url, { userId: 'granted-many', roles: [] }));
    const id = held.connectionIds[0];
    const svc = serviceClient(c);
    await untilAnswered(() => svc.connectionExists(id), 10000, 'the connection on A known through C');
    for (let i = 0; i < 1000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, k) => svc.grantPermission(id, 'sendToGroup', { targetName: `g-${i + k}` })));
    }
    await assert.rejects(svc.grantPermission(id, 'sendToGroup', { targetName: 'one-more' }), (err: { statusCode?: number; message?: string }) => {
      assert.equal(err.statusCode, 400);
      assert.match(String(err.message), /limits\.groupsPerConnection/);
      return true;
    });
    assert.equal(await svc.hasPermission(id, 'sendToGroup', { targetName: 'g-999' }), true);
  });

  it('REST on any node acts on the whole cluster: send to all, user, connection; exists; membership; close', async (t) => {
    const x1 = await startClient(t, accessUrl(a.url, { userId: 'xavier' }));
    const x2 = await startClient(t, accessUrl(b.url, { userId: 'xavier' }));
    const y = await startClient(t, accessUrl(a.url, { userId: 'yolanda' }));
    const svc = serviceClient(c);
    const everyone = [x1, x2, y];
    await waitRoutableToAll(svc, everyone);
    await svc.sendToUser('xavier', 'for xavier', { contentType: 'text/plain' });
    await svc.sendToConnection(y.connectionIds[0], 'for yolanda', { contentType: 'text/plain' });
    await until(() => dataOf(x1.serverData).includes('for xavier') && dataOf(x2.serverData).includes('for xavier'), 5000, 'user send');
    await until(() => dataOf(y.serverData).includes('for yolanda'), 5000, 'connection send');
    assert.ok(!dataOf(y.serverData).includes('for xavier'));

    assert.equal(await svc.userExists('xavier'), true);
    assert.equal(await svc.userExists('nobody'), false);
    assert.equal(await svc.connectionExists(y.connectionIds[0]), true);
    await svc.group('team').addUser('xavier');
    assert.equal(await svc.groupExists('team'), true);
    await svc.group('team').addConnection(y.connectionIds[0]);
    const members: string[] = [];
    for await (const m of await svc.group('team').listConnections()) members.push(m.connectionId);
    assert.deepEqual(members.sort(), [x1.connectionIds[0], x2.connectionIds[0], y.connectionIds[0]].sort());
    // Pages across the edges in connection id order, as the SDK follows their nextLink (before: maxPageSize cut the list after its first page).
    const paged: string[] = [];
    for await (const m of await svc.group('team').listConnections({ maxPageSize: 2 })) paged.push(m.connectionId);
    assert.deepEqual(paged, members);
    const topped: string[] = [];
    for await (const m of await svc.group('team').listConnections({ maxPageSize: 1, top: 2 })) topped.push(m.connectionId);
    assert.deepEqual(topped, members.slice(0, 2));
    await svc.group('team').sendToAll('team news', { contentType: 'text/plain' });
    await until(() => everyone.every((s) => dataOf(s.groupData).includes('team news')), 5000, 'group send');

    await svc.grantPermission(y.connectionIds[0], 'sendToGroup', { targetName: 'team' });
    assert.equal(await svc.hasPermission(y.connectionIds[0], 'sendToGroup', { targetName: 'team' }), true);
    await svc.removeUserFromAllGroups('xavier');
    await svc.group('team').removeConnection(y.connectionIds[0]);
    assert.equal(await svc.groupExists('team'), false);

    // Closed on both nodes; the SDK then reconnects each with a new connection id.
    await svc.closeUserConnections('xavier');
    await until(() => x1.connectionIds.length === 2 && x2.connectionIds.length === 2, 10000, 'both xavier connections closed');
    await svc.closeConnection(y.connectionIds[0]);
    assert.equal(await svc.connectionExists(y.connectionIds[0]), false);
    await until(() => y.connectionIds.length === 2, 10000, 'yolanda reconnected afresh');
  });

  it('a membership change acknowledged on one node is what the next question to any node sees (durable hub)', async (t) => {
    // Members on A and B; each change is made through C and asked about at once through A or B.
    const onA = await startClient(t, accessUrl(a.url, { userId: 'ann' }));
    const onB = await startClient(t, accessUrl(b.url, { userId: 'ann' }));
    await waitRoutableToAll(serviceClient(c), [onA, onB]);
    const [viaA, viaB, viaC] = [serviceClient(a), serviceClient(b), serviceClient(c)];
    const both = [onA.connectionIds[0], onB.connectionIds[0]].sort();
    const listed = async (svc: typeof viaA, group: string) => {
      const ids: string[] = [];
      for await (const m of await svc.group(group).listConnections()) ids.push(m.connectionId);
      return ids.sort();
    };
    // A burst to a member on the edge not asked keeps its stream reader busy
    // while the change is stored after the burst: the asked edge skips those
    // events unread (no member there), so the other one answers late.
    const plain = { protocol: WebPubSubJsonProtocol() };
    const busyA = await startClient(t, accessUrl(a.url, { userId: 'bob-a' }), plain);
    const busyB = await startClient(t, accessUrl(b.url, { userId: 'bob-b' }), plain);
    await waitRoutableToAll(viaC, [busyA, busyB]);
    await viaC.group('busy-a').addUser('bob-a');
    await viaC.group('busy-b').addUser('bob-b');
    const publisher = await startClient(t, accessUrl(c.url), plain);
    for (let round = 0; round < 8; round++) {
      const group = `ryw-${round}`;
      const asked = round % 2 === 0 ? viaA : viaB;
      const busy = round % 2 === 0 ? 'busy-b' : 'busy-a';
      for (let i = 0; i < 500; i++) void publisher.client.sendToGroup(busy, 'x'.repeat(2000), 'text', { fireAndForget: true });
      await viaC.group(group).addUser('ann');
      assert.equal(await asked.groupExists(group), true, `round ${round}: exists after the add`);
      assert.deepEqual(await listed(asked, group), both, `round ${round}: both connections listed`);
      await viaC.group(group).removeUser('ann');
      assert.equal(await asked.groupExists(group), false, `round ${round}: gone after the remove`);
    }
    await viaC.group('ryw-close').addUser('ann');
    await viaA.group('ryw-close').closeAllConnections({ reason: 'done' });
    await until(() => onA.connectionIds.length === 2 && onB.connectionIds.length === 2, 10000, 'both members closed');
  });

  it('a question about a group waits for an edge that answers late (paused), not only for the quick ones (durable hub)', async (t) => {
    const onB = await startClient(t, accessUrl(b.url, { userId: 'pat' }));
    await waitRoutableToAll(serviceClient(c), [onB]);
    await serviceClient(c).group('paused').addUser('pat');
    // A knows B reads the hub's stream once B has announced itself (hub-roster.ts, each second).
    await waitOnRoster(a, b);
    // B stops for longer than bus.gatherStallMs: A and C answer at once, B only when it runs again.
    const ids: string[] = [];
    await whilePaused(t, b, 400, async () => {
      for await (const m of await serviceClient(a).group('paused').listConnections()) ids.push(m.connectionId);
    });
    assert.deepEqual(ids, onB.connectionIds.slice(0, 1), 'the paused edge\'s member is listed');
  });

  it('a question about a group an edge could not answer up to its stream position is refused 503, not answered without the latest changes (durable hub)', async (t) => {
    // A bus participant of the test's own, on the hub's roster as edge "edge-lagging": it asks the real edges, and answers them.
    const nc = await connect({ servers: nats.map((n) => n.url) });
    const all = `relay.ps.${encodeSubjectToken(HUB)}.all`;
    const from = { origin: 'edge-lagging', hub: HUB };
    let answerBehind = true;
    nc.subscribe(all, {
      callback: (_err, m) => {
        const asked = decodeEdgeMessage(m.data, 'ps.list', 'ps.exists')?.message;
        if (asked && asked.origin !== from.origin && m.reply) m.respond(encodeEdgeMessage({ op: 'ps.done', count: 0, edge: 'edge-lagging', ...(asked.op === 'ps.list' && { members: [] }), ...(answerBehind && { behind: true }) }));
      },
    });
    const here = (state: 'hello' | 'here' | 'leaving') => nc.publish(all, encodeEdgeMessage({ op: 'ps.here', ...from, boot: 'lagging-1', state }));
    here('hello');
    const announcing = setInterval(() => here('here'), 500);
    t.after(async () => {
      clearInterval(announcing);
      here('leaving');
      await nc.close();
    });
    await until(() => edgeEvents([a], /pubsub\.roster_joined/).includes('"edge":"edge-lagging"'), 5000, 'A to have edge-lagging on its roster');
    const member = await startClient(t, accessUrl(a.url, { userId: 'lee' }));
    await untilAnswered(() => serviceClient(c).connectionExists(member.connectionIds[0]), 10000, 'the connection on A known through C');
    await serviceClient(c).group('lagging').addUser('lee');

    // Real edges asked at a position none has reached: each answers "behind", after three quarters of bus.requestTimeoutMs.
    const ask = async (at: number) => {
      const answers: PsDone[] = [];
      const inbox = nc.subscribe(`_INBOX.lagging.${at}`, { callback: (_err, m) => answers.push(decodeEdgeMessage(m.data, 'ps.done')!.message) });
      nc.publish(all, encodeEdgeMessage({ op: 'ps.list', ...from, group: 'lagging', top: 10, at }), { reply: `_INBOX.lagging.${at}` });
      await until(() => answers.length === 3, 5000, `three edges answering at ${at}`);
      inbox.unsubscribe();
      return answers.sort((x, y) => (x.edge! < y.edge! ? -1 : 1));
    };
    const started = Date.now();
    const unreached = await ask(1e12);
    assert.ok(Date.now() - started >= 1000, 'answered once the wait for the position ended');
    assert.deepEqual(unreached.map((x) => [x.edge, x.behind]), [['edge-a', true], ['edge-b', true], ['edge-c', true]]);
    assert.deepEqual(unreached[0].members?.map((m) => m.userId), ['lee'], 'with what it holds');
    const reached = await ask(1);
    assert.deepEqual(reached.map((x) => [x.edge, x.behind]), [['edge-a', undefined], ['edge-b', undefined], ['edge-c', undefined]]);

    // An edge answering "behind": the question is refused with why, on the asker's side; answered once it is not.
    const viaA = serviceClient(a, { maxRetries: 0 });
    const refusedBehind = (err: { statusCode?: number; message?: string }) => {
      assert.equal(err.statusCode, 503);
      assert.match(String(err.message), /edge-lagging had not read the hub's stream up to the question/);
      return true;
    };
    await assert.rejects(async () => {
      for await (const _ of await viaA.group('lagging').listConnections()) void _;
    }, refusedBehind);
    await assert.rejects(viaA.groupExists('nobody-here'), (err: { statusCode?: number }) => err.statusCode === 503);
    assert.equal(await viaA.groupExists('lagging'), true, "A's own member, read up to the position, is enough");
    answerBehind = false;
    const ids: string[] = [];
    for await (const m of await viaA.group('lagging').listConnections()) ids.push(m.connectionId);
    assert.deepEqual(ids, member.connectionIds.slice(0, 1));
    assert.equal(await viaA.groupExists('nobody-here'), false);
  });

  it('a reliable client whose reconnect lands on another node recovers its session there: nothing lost or doubled', async (t) => {
    const proxy = await CuttableProxy.start(a.port, t);
    const sub = await startClient(t, accessUrl(proxy.url, { userId: 'roamer' }));
    await sub.client.joinGroup('feed');
    const publisher = await startClient(t, accessUrl(b.url));
    const probe = (p: string) => publisher.client.sendToGroup('feed', p, 'text', { fireAndForget: true });
    await waitRoutable(probe, () => sub.groupData);
    const total = 300;
    for (let i = 1; i <= total; i++) {
      await publisher.client.sendToGroup('feed', i, 'json', { fireAndForget: true });
      // The load balancer sends the reconnect to C, then back to A.
      if (i === 100) {
        proxy.retarget(c.port);
        proxy.cut();
      }
      if (i === 200) {
        proxy.retarget(a.port);
        proxy.cut();
      }
      if (i % 25 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    const story = () => edgeEvents([a, b, c], /pubsub\.(session|handover|recover|detached|ended)|bus\.(replay|disconnected)/);
    await until(() => dataOf(sub.groupData).length >= total, 20000, `${total} messages`).catch((err) => {
      const got = new Set(dataOf(sub.groupData));
      const missing = Array.from({ length: total }, (_, i) => i + 1).filter((n) => !got.has(n));
      const around = sub.groupData.map((m) => `${m.sequenceId}:${m.data}`).join(' ');
      throw new Error(`${err.message}; missing ${missing.join(',')}; connections ${sub.connectionIds.length}\n${story()}\nreceived ${around}`);
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(dataOf(sub.groupData), Array.from({ length: total }, (_, i) => i + 1), story());
    assert.equal(sub.connectionIds.length, 1, `the session moved; it was not replaced\n${story()}`);
    // The session lives where the client is now: A can reach it, C forgot it.
    const svc = serviceClient(c);
    await svc.sendToConnection(sub.connectionIds[0], 'still here', { contentType: 'text/plain' });
    await until(() => dataOf(sub.serverData).includes('still here'), 5000, 'send to the moved connection');
  });
});

/** Broadcasts probes until every client has one. */
async function waitRoutableToAll(svc: ReturnType<typeof serviceClient>, clients: { serverData: any[] }[]): Promise<void> {
  for (let i = 0; i < 250; i++) {
    await svc.sendToAll(`probe-${i}`, { contentType: 'text/plain' });
    if (clients.every((cl) => cl.serverData.some((m) => String(m.data).startsWith('probe-')))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('not every client became reachable');
}
