// A reliable session taken over by an edge whose NATS server numbers the hub's
// stream otherwise than the server the session's old edge read (nats-server
// before 2.10.14: docs/durability.md). A chaos soak (nats-server 2.9.10, an
// edge SIGKILLed after a NATS node froze) saw six sessions of the killed edge
// get its last event again on the edge that took them (their ids one higher:
// the replay began at the checkpoint's number, which there named the event
// before the acknowledged one), and five others miss the six events after it
// (ids lower: begun past them, and their client dropped them as seen). The
// checkpoint names its event, and the take finds it by that id.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { encodeEdgeMessage, type PsCheckpoint, type PsClaim, type PsSend } from '../../src/bus/messages.ts';
import type { StoredMessage } from '../../src/bus/stream-reader.ts';
import { sharedMessageOf } from '../../src/pubsub/downstream.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { PubSubConnection, RELIABLE_PROTOCOL } from '../../src/pubsub/pubsub-connection.ts';
import { KEEPS_NOTHING_RECENT, testConnectionLimits } from '../helpers/pubsub.ts';
import { StreamSessions, type SessionStream } from '../../src/pubsub/stream-sessions.ts';

const limits = testConnectionLimits();
const silent = { info() {}, warn() {}, error() {}, debug() {} };

function send(n: number): PsSend {
  return { op: 'ps.send', origin: 'edge-x', hub: 'chat', mid: `edge-x:${n}`, at: 1, target: { kind: 'group', name: 'room' }, message: { from: 'group', group: 'room', fromUserId: null, dataType: 'json' } };
}
const body = (n: number) => Buffer.from(JSON.stringify({ n }));

/**
 * Takes conn1 (token `token`) on edge a, from `written` (edge c's checkpoint) and a stream that holds every event
 * one place later than edge c read it: e0..e`last` at 101..101+last. Says what the taken session has after `acked`.
 */
async function takenFrom(written: { sequenceId: number; position: number; groups: string[]; mid?: string }, token: string, last: number, acked: number): Promise<(string | number)[][]> {
  const checkpoint: PsCheckpoint = {
    op: 'ps.checkpoint', hub: 'chat', connectionId: 'conn1', userId: 'u', protocol: RELIABLE_PROTOCOL,
    tokenHash: createHash('sha256').update(token).digest('base64url'),
    permissions: new ConnectionPermissions([]).snapshot(), owner: 'edge-c', claim: 0, at: Date.now(),
    sequenceId: written.sequenceId, position: written.position, groups: written.groups,
    ...(written.mid !== undefined ? { mid: written.mid } : {}),
  };
  const stored: StoredMessage[] = Array.from({ length: last + 1 }, (_, n) => ({ seq: 101 + n, subject: 'relay.ev.chat.g.room', data: encodeEdgeMessage(send(n), body(n)) }));
  const stream: SessionStream = {
    position: 101 + last,
    started: true,
    readRange: async (from, to) => stored.filter((m) => m.seq > from && m.seq <= to),
    firstSequence: async () => 1,
    ...KEEPS_NOTHING_RECENT,
  };
  let adopted: PubSubConnection | undefined;
  let sessions!: StreamSessions;
  const hub = {
    name: 'chat', key: 'chat',
    local: { adopt: (c: PubSubConnection) => (adopted = c), connections: new Map() },
    edgeOnRoster: () => false,
  };
  const js = {
    entry: async () => ({ revision: 1, value: Buffer.from(JSON.stringify(checkpoint)) }),
    put: async () => 2,
    publish: async (_subject: string, data: Uint8Array) => {
      const claim: PsClaim = { op: 'ps.claim', origin: 'edge-a', boot: 'boot-a', hub: 'chat', connectionId: 'conn1' };
      assert.ok(data.length > 0);
      setImmediate(() => sessions.claimed(claim, 200));
      return { seq: 200 };
    },
  };
  sessions = new StreamSessions(hub as never, stream, {
    js: js as never, subjects: { hubControl: () => 'relay.ev.chat.ctl' } as never, nodeId: 'edge-a', bootId: 'boot-a', log: silent as never,
    limits, requestTimeoutMs: 200, publishTimeoutMs: 1000, checkpointIntervalMs: 1000, sessionRetainMs: 60_000, history: false,
    release() {}, endConnection() {},
  });
  try {
    const taken = await sessions.take('conn1', token, RELIABLE_PROTOCOL);
    assert.ok(taken && adopted === taken);
    return [...taken.session!.after(acked)].map((e) => [e.sequenceId, e.mid]);
  } finally {
    sessions.close();
  }
}

const TOKEN = 'reconnection-token';

/** Edge c's conn1 (TOKEN, in group room), having read e1..e5 as 101..105, its client having acknowledged up to `acked`. */
function readFiveAcknowledging(acked: number): PubSubConnection {
  const old = new PubSubConnection('conn1', 'chat', 'u', new ConnectionPermissions([]), RELIABLE_PROTOCOL, limits, TOKEN);
  old.groups.add('room');
  for (let n = 1; n <= 5; n++) old.session!.push(sharedMessageOf(send(n), body(n), 100 + n)!);
  old.session!.acknowledge(acked);
  return old;
}

describe('a session taken over where the stream is numbered otherwise', () => {
  it('goes on after the event its client acknowledged, found by its id, not by the number its old edge read it under', async () => {
    // Edge c read e1..e5 as 101..105; its client acknowledged e3 (id 3).
    const old = readFiveAcknowledging(3);
    const written = old.session!.nextCheckpoint(old.groups, 105)!;
    assert.equal(written.position, 103);
    // The taking edge's server holds every one of them one place later: e1..e5 at 102..106, e0 (the client had it) at 101.
    // Before: [[4, 'edge-x:3'], [5, 'edge-x:4'], [6, 'edge-x:5']]: the client's e3 again, as a new id.
    assert.deepEqual(await takenFrom(written, TOKEN, 5, 3), [[4, 'edge-x:4'], [5, 'edge-x:5']]);
  });

  it('with everything acknowledged, goes on after the last event its old edge read, found by its id', async () => {
    // Edge c read e1..e5 as 101..105, then a membership change at 106; its client acknowledged all five.
    const old = readFiveAcknowledging(5);
    const written = old.session!.nextCheckpoint(old.groups, 106, { seq: 105, mid: 'edge-x:5' })!;
    assert.deepEqual(written, { sequenceId: 5, position: 105, groups: ['room'], mid: 'edge-x:5' });
    // Without a send near enough to the end, the position read alone, as before.
    const far = new PubSubConnection('conn2', 'chat', 'u', new ConnectionPermissions([]), RELIABLE_PROTOCOL, limits, TOKEN);
    assert.deepEqual(far.session!.nextCheckpoint(new Set(), 106), { sequenceId: 0, position: 106, groups: [] });
    // The taking edge's server holds e0..e7 at 101..108 (e6 and e7 came after edge c went): e5 is found at 106.
    // Before, the checkpoint had no id, and its number alone was taken as this server's: e5 came again, as id 6
    // (a chaos soak on nats-server 2.9.10: events lost or had twice after the stream was numbered otherwise).
    assert.deepEqual(await takenFrom(written, TOKEN, 7, 5), [[6, 'edge-x:6'], [7, 'edge-x:7']]);
    assert.deepEqual(await takenFrom({ sequenceId: 5, position: 105, groups: ['room'] }, TOKEN, 7, 5), [[6, 'edge-x:5'], [7, 'edge-x:6'], [8, 'edge-x:7']], 'without the id: e5 again, as a new id');
  });
});
