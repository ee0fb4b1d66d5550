// An edge reads a bounded number of history pages at once (MAX_HISTORY_READS):
// past it, 429 TooManyHistoryReads at once, and the pages under way are
// answered in full. Before, every reader was taken: twenty readers of large
// JetStream pages took an edge from 174 MiB to 570 MiB.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { MAX_HISTORY_READS } from '../../src/pubsub/rest-api.ts';
import { startEdge } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { HUB, HUB_KEY } from '../helpers/pubsub.ts';

it('reads at most MAX_HISTORY_READS history pages at once: past it 429 TooManyHistoryReads, the others answered whole', async (t) => {
  const nats = await startNatsServer(t);
  const edge = await startEdge(t, 'edge-a', [nats.url], { pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 1000 } }] } });
  const rest = (path: string) => ({ url: `${edge.url}/api/hubs/${HUB}/${path}`, authorization: `Bearer ${signJwt({ aud: `${edge.url}/api/hubs/${HUB}/${path}` }, HUB_KEY, 60)}` });
  const send = rest('groups/room/:send');
  // 24 MiB kept: each page of 8 MiB takes JetStream a while to send.
  const big = 'x'.repeat(512 * 1024);
  for (let i = 0; i < 48; i++) {
    const res = await fetch(send.url, { method: 'POST', headers: { authorization: send.authorization, 'content-type': 'text/plain' }, body: big, signal: AbortSignal.timeout(10000) });
    assert.equal(res.status, 202);
  }
  const read = rest('groups/room/messages');
  const readers = MAX_HISTORY_READS + 6;
  const answers = await Promise.all(
    Array.from({ length: readers }, async () => {
      const res = await fetch(`${read.url}?limit=1000`, { headers: { authorization: read.authorization }, signal: AbortSignal.timeout(30000) });
      const body = (await res.json()) as { code?: string; messages?: unknown[] };
      return { status: res.status, code: body.code, messages: body.messages?.length };
    }),
  );
  const refused = answers.filter((a) => a.status === 429);
  assert.ok(refused.length >= readers - MAX_HISTORY_READS, JSON.stringify(answers));
  assert.ok(refused.every((a) => a.code === 'TooManyHistoryReads'));
  for (const a of answers.filter((x) => x.status !== 429)) assert.deepEqual(a, { status: 200, code: undefined, messages: 16 });
  // Once they are done, a reader is taken again.
  const again = await fetch(`${read.url}?limit=1`, { headers: { authorization: read.authorization }, signal: AbortSignal.timeout(10000) });
  assert.equal(again.status, 200);
});
