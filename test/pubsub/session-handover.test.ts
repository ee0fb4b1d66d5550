// The ordering rule a moved session uses to slot in events it missed during
// the move (src/pubsub/session-handover.ts): each origin's events stay in
// their order; events of different origins keep their arrival order.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseMid } from '../../src/pubsub/replaying-feed.ts';
import { insertInOriginOrder } from '../../src/pubsub/session-handover.ts';

describe('session hand-over: missed events', () => {
  it('go before the first later event of their origin, or at the end', () => {
    const list = [{ mid: 'b.1:5' }, { mid: 'c.1:1' }, { mid: 'b.1:7' }];
    insertInOriginOrder(list, { mid: 'b.1:6' });
    insertInOriginOrder(list, { mid: 'c.1:2' });
    insertInOriginOrder(list, { mid: 'd.1:9' });
    insertInOriginOrder(list, { mid: 'b.1:4' });
    assert.deepEqual(list.map((e) => e.mid), ['b.1:4', 'b.1:5', 'c.1:1', 'b.1:6', 'b.1:7', 'c.1:2', 'd.1:9']);
  });

  it('read the origin and counter from a mid, and refuse anything else', () => {
    assert.deepEqual(parseMid('edge-a.1f2e:42'), { origin: 'edge-a.1f2e', counter: 42 });
    for (const bad of ['', ':1', 'a', 'a:', 'a:0', 'a:-1', 'a:1.5', 'a:x']) assert.equal(parseMid(bad), undefined, bad);
  });
});
