// Two edges on one NATS cluster under the same nodeId take each other's
// pub/sub events for their own echoes and drop them. Before, nothing said so;
// now each logs bus.node_id_clash (once per other process) and /$relay/ready
// names it in `degraded` (200 still: taking both out would end what works).
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { edgeOverrides, readiness, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { untilAnswered } from '../helpers/wait.ts';

it('two edges under one nodeId each say so: an error logged once, and /$relay/ready degraded while it lasts', async (t) => {
  const nats = await startNatsServer(t);
  const logs = [captureLogger('info'), captureLogger('info')];
  const [a, b] = await Promise.all(logs.map((log) => startTestRelay(t, edgeOverrides('same-name', [nats.url]), { log: log.log })));
  await Promise.all([a, b].map((edge) => waitReady(edge)));
  for (const edge of [a, b]) {
    let body: any;
    await untilAnswered(async () => ((body = (await readiness(edge)).body), body.degraded.length > 0), 10000, 'the clash in /$relay/ready');
    assert.equal(body.ready, true);
    assert.match(body.degraded[0], /another edge uses this nodeId \(same-name\)/);
  }
  // Announcements go on each second: still one line per other process.
  await new Promise((r) => setTimeout(r, 1500));
  for (const log of logs) assert.equal(log.events().filter((e) => e === 'bus.node_id_clash').length, 1, log.events().join(','));
});

it('an edge alone under its nodeId is not degraded, whatever its own announcements', async (t) => {
  const nats = await startNatsServer(t);
  const a = await startTestRelay(t, edgeOverrides('alone', [nats.url]));
  await waitReady(a);
  await new Promise((r) => setTimeout(r, 2500));
  assert.deepEqual((await readiness(a)).body.degraded, []);
});
