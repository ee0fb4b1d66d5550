// Hostile group names against role patterns at a relay process (issue 18,
// defect 4): a client whose token grants `joinLeaveGroups.*-*-*-*` and
// `sendToGroups.**-**-*x` (Azure allows five `*`) sends joins and sends for 1024-character names
// built to make a backtracking matcher try every split. Each is answered
// Forbidden in milliseconds, /$relay/health answers at once throughout, and
// others are served. (With the RegExp, one 360-character name took 3.4 s and
// held the whole node; 1024 characters would have taken minutes.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertStillServing, startHostileRelay } from '../helpers/hostile.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';

/** Wide correctness bounds for a loaded machine, far below what backtracking took. */
const ANSWER_MS = 3000;
/** Each has a dot (no `*` crosses one) and none ends in x: every check fails, after trying every split. */
const NAMES = ['-'.repeat(1023) + '.', '-.'.repeat(512), 'a-'.repeat(511) + '..', '.' + '-'.repeat(1023)];

describe('regex-heavy group names against a relay process', () => {
  it('answers every role check in milliseconds and keeps the node responsive', async (t) => {
    const relay = await startHostileRelay(t);
    const hostile = await RawPubSubClient.connect(accessUrl(relay.url, { roles: ['webpubsub.joinLeaveGroups.*-*-*-*', 'webpubsub.sendToGroups.**-**-*x'] }), undefined, t);
    let slowestHealth = 0;
    let probing = true;
    const probe = (async () => {
      while (probing) {
        const started = Date.now();
        assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
        slowestHealth = Math.max(slowestHealth, Date.now() - started);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    let slowestAck = 0;
    try {
      for (let round = 0; round < 5; round++) {
        for (const group of NAMES) {
          for (const type of ['joinGroup', 'sendToGroup']) {
            const started = Date.now();
            const ack = await hostile.request({ type, group, data: 'x' }, 10000);
            slowestAck = Math.max(slowestAck, Date.now() - started);
            assert.equal(ack.error?.name, 'Forbidden', `${type} ${group.slice(0, 10)}…`);
          }
        }
      }
    } finally {
      probing = false;
      await probe;
    }
    t.diagnostic(`${5 * NAMES.length * 2} hostile role checks: slowest ack ${slowestAck} ms, slowest health check meanwhile ${slowestHealth} ms`);
    assert.ok(slowestAck < ANSWER_MS, `an ack took ${slowestAck} ms`);
    assert.ok(slowestHealth < ANSWER_MS, `a health check took ${slowestHealth} ms`);
    // The patterns still grant what they name.
    assert.equal((await hostile.request({ type: 'joinGroup', group: 'a-b-c-d' })).success, true);
    assert.equal((await hostile.request({ type: 'sendToGroup', group: 'a.b-c-dx', data: 'x' })).success, true);
    await assertStillServing(t, relay);
  });
});
