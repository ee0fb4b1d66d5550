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
import { until } from '../helpers/wait.ts';
import { HUB, HUB_KEY } from '../helpers/pubsub.ts';

it('reads at most MAX_HISTORY_READS history pages at once: past it 429 TooManyHistoryReads, the others answered whole', async (t) => {
  const nats = await startNatsServer(t);
  // Reads given 15 s (not the helpers' 2 s): they wait out the pause below, and eight pages of 8 MiB at once on a
  // loaded machine took longer than 2 s (503); this test is about how many are taken, not how fast they go.
  const edge = await startEdge(t, 'edge-a', [nats.url], {
    bus: { requestTimeoutMs: 15000 },
    pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, history: { maxMessages: 1000 } }] },
  });
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
  // The NATS server paused while they come: the reads that took a place hold it (none ends before the others
  // arrive, however fast the machine), and every other is refused at once. Before, all of them were taken.
  await nats.freeze();
  t.after(() => nats.thaw());
  const answered: { status: number; code?: string; messages?: number; detail?: string }[] = [];
  const answers = Array.from({ length: readers }, async () => {
    const res = await fetch(`${read.url}?limit=1000`, { headers: { authorization: read.authorization }, signal: AbortSignal.timeout(30000) });
    const body = (await res.json()) as { code?: string; message?: string; messages?: unknown[] };
    const answer = { status: res.status, code: body.code, messages: body.messages?.length, ...(body.message ? { detail: body.message } : {}) };
    answered.push(answer);
    return answer;
  });
  await until(() => answered.length >= readers - MAX_HISTORY_READS, 10000, 'the readers past the bound refused');
  nats.thaw();
  const all = await Promise.all(answers);
  assert.deepEqual(answered.slice(0, readers - MAX_HISTORY_READS).map((a) => [a.status, a.code]), Array(readers - MAX_HISTORY_READS).fill([429, 'TooManyHistoryReads']), JSON.stringify(all));
  assert.deepEqual(answered.slice(readers - MAX_HISTORY_READS), Array(MAX_HISTORY_READS).fill({ status: 200, code: undefined, messages: 16 }), JSON.stringify(all));
  // Once they are done, a reader is taken again.
  const again = await fetch(`${read.url}?limit=1`, { headers: { authorization: read.authorization }, signal: AbortSignal.timeout(10000) });
  assert.equal(again.status, 200);
});
