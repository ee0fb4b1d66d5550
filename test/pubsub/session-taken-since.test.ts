// A take of a reliable session whose checkpoint, when the take reads it, is
// already another edge's by a later claim (docs/durability.md, "Taking a
// session over": the latest claim in stream order owns the session). Edge b
// claimed at 107 and read its claim back late (its follower busy); edge c
// claimed at 108, took the session, and wrote its checkpoint (claim 108,
// position 110, ids up to 7). Edge b, not having read 108 yet, must not take
// the session from that checkpoint: it was adopted at once (its position is
// before the checkpoint's), both edges held the session, and b's follower then
// numbered 108..110 again, after id 7, events c's client had under other ids.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { encodeEdgeMessage, type PsCheckpoint, type PsClaim } from '../../src/bus/messages.ts';
import { SessionUnavailable } from '../../src/pubsub/errors.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { RELIABLE_PROTOCOL, type PubSubConnection } from '../../src/pubsub/pubsub-connection.ts';
import { StreamSessions, type SessionStream } from '../../src/pubsub/stream-sessions.ts';
import { KEEPS_NOTHING_RECENT, testConnectionLimits } from '../helpers/pubsub.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };
const TOKEN = 'reconnection-token';

/** A checkpoint of conn1 for TOKEN, written by `owner` under `claim`. */
function checkpointOf(owner: string, claim: number, sequenceId: number, position: number): PsCheckpoint {
  return {
    op: 'ps.checkpoint', hub: 'chat', connectionId: 'conn1', userId: 'u', protocol: RELIABLE_PROTOCOL,
    tokenHash: createHash('sha256').update(TOKEN).digest('base64url'),
    permissions: new ConnectionPermissions([]).snapshot(), owner, ownerBoot: `boot-${owner}`, claim, at: Date.now(),
    sequenceId, position, groups: ['room'],
  };
}

const claimOf = (origin: string): PsClaim => ({ op: 'ps.claim', origin, boot: `boot-${origin}`, hub: 'chat', connectionId: 'conn1' });

/**
 * Edge b's sessions of hub chat on `stream`, the session bucket holding `stored`; its claim is stored at 107 and read
 * back. Says what it adopted and what it wrote to the bucket.
 */
function edgeB(stream: SessionStream, stored: PsCheckpoint, onRoster: (node: string) => boolean) {
  let adopted: PubSubConnection | undefined;
  const puts: PsCheckpoint[] = [];
  const hub = {
    name: 'chat', key: 'chat',
    local: { adopt: (c: PubSubConnection) => (adopted = c), remove() {}, connections: new Map() },
    edgeOnRoster: onRoster,
  };
  const js = {
    entry: async () => ({ revision: 5, value: Buffer.from(JSON.stringify(stored)) }),
    put: async (_key: string, value: Uint8Array) => {
      puts.push(JSON.parse(Buffer.from(value).toString('utf8')) as PsCheckpoint);
      return 6;
    },
    publish: async () => {
      setImmediate(() => sessions.claimed(claimOf('edge-b'), 107));
      return { seq: 107 };
    },
  };
  const sessions: StreamSessions = new StreamSessions(hub as never, stream, {
    js: js as never, subjects: { hubControl: () => 'relay.ev.chat.ctl' } as never, nodeId: 'edge-b', bootId: 'boot-edge-b', log: silent as never,
    limits: testConnectionLimits(), requestTimeoutMs: 200, publishTimeoutMs: 1000, checkpointIntervalMs: 1000, sessionRetainMs: 60_000, history: false,
    release() {}, endConnection() {},
  });
  return { sessions, adopted: () => adopted, puts };
}

/** Refused as a take to try again (1013: the session lives on edge c, where the client's next try finds it), not as a session gone (1008: the SDK would give it up). */
const claimedSince = (err: Error) => err instanceof SessionUnavailable && err.message === 'another edge claimed it since';

describe('a take whose checkpoint a later claim wrote', () => {
  it('is refused as one to try again, and leaves that checkpoint as it is (before: taken from it, the session held on two edges)', async () => {
    // Edge b has read up to its own claim, not edge c's.
    const stream: SessionStream = { position: 107, started: true, readRange: async () => [], firstSequence: async () => 1, ...KEEPS_NOTHING_RECENT };
    const b = edgeB(stream, checkpointOf('edge-c', 108, 7, 110), (node) => node === 'edge-c');
    try {
      await assert.rejects(b.sessions.take('conn1', TOKEN, RELIABLE_PROTOCOL), claimedSince);
      assert.equal(b.adopted(), undefined, 'taken from a checkpoint of a later claim');
      // Before: written over, unconditionally, as edge b's by claim 107.
      assert.deepEqual(b.puts.map((p) => [p.owner, p.claim]), []);
    } finally {
      b.sessions.close();
    }
  });

  it('whose replay meets a later claim of another edge is refused as one to try again (before: 1008, the session given up)', async () => {
    // Edge a held it and is gone; edge b claims at 107 and replays from the checkpoint (106); edge c claimed at 108.
    const stored = [107, 108].map((seq, i) => ({ seq, subject: 'relay.ev.chat.ctl', data: encodeEdgeMessage(claimOf(i === 0 ? 'edge-b' : 'edge-c')) }));
    const stream: SessionStream = { position: 108, started: true, readRange: async (from, to) => stored.filter((m) => m.seq > from && m.seq <= to), firstSequence: async () => 1, ...KEEPS_NOTHING_RECENT };
    const b = edgeB(stream, checkpointOf('edge-a', 100, 3, 106), () => false);
    try {
      await assert.rejects(b.sessions.take('conn1', TOKEN, RELIABLE_PROTOCOL), claimedSince);
      assert.equal(b.adopted(), undefined);
    } finally {
      b.sessions.close();
    }
  });
});
