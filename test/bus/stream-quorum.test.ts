// storesNow (src/bus/durable-publish.ts): what the store probe reads in a stream's
// cluster state before it says a failing stream stores again.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { probeSubject, storesNow } from '../../src/bus/durable-publish.ts';

const S = 1_000_000_000;
const peer = (active: number, current = true, offline = false) => ({ current, offline, active });

describe('a stream stores again', () => {
  it('with a leader and a majority of its group heard from', () => {
    assert.equal(storesNow({ leader: 'n1' }), true, 'a clustered R1 stream');
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(0.2 * S), peer(0.4 * S)] }), true);
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(0.2 * S), peer(30 * S, false, true)] }), true, 'one of three gone');
  });

  it('not without a leader, nor while the leader has heard from no majority (it names itself for up to 10 s after losing them)', () => {
    assert.equal(storesNow({ leader: '', replicas: [peer(0.1 * S), peer(0.1 * S)] }), false);
    // Both peers killed 4 s ago: still "current" in nats-server's view (it waits 10 s), silent all the same.
    // Before: any leader named counted, and readiness said storing while every write failed.
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(4 * S), peer(4 * S)] }), false);
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(0.5 * S, false), peer(0.5 * S, true, true)] }), false);
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(0.5 * S), peer(4 * S), peer(4 * S), peer(0.5 * S)] }), true, 'three of five');
    assert.equal(storesNow({ leader: 'n1', replicas: [peer(0.5 * S), peer(4 * S), peer(4 * S), peer(4 * S)] }), false, 'two of five');
  });

  it('on a lone server, is asked with a write on a subject of its stream that no edge publishes or reads an event on', () => {
    assert.equal(probeSubject('relay.ev.chat.>'), 'relay.ev.chat._probe');
    assert.equal(probeSubject('a.*.b'), 'a._probe.b');
  });
});
