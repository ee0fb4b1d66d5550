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
import type { PsCheckpoint, PsClaim } from '../../src/bus/messages.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { RELIABLE_PROTOCOL, type PubSubConnection } from '../../src/pubsub/pubsub-connection.ts';
import { StreamSessions, type SessionStream } from '../../src/pubsub/stream-sessions.ts';
import { KEEPS_NOTHING_RECENT, testConnectionLimits } from '../helpers/pubsub.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };
const TOKEN = 'reconnection-token';

describe('a take whose checkpoint a later claim wrote', () => {
  it('is refused, and leaves that checkpoint as it is (before: taken from it, the session held on two edges)', async () => {
    const newer: PsCheckpoint = {
      op: 'ps.checkpoint', hub: 'chat', connectionId: 'conn1', userId: 'u', protocol: RELIABLE_PROTOCOL,
      tokenHash: createHash('sha256').update(TOKEN).digest('base64url'),
      permissions: new ConnectionPermissions([]).snapshot(), owner: 'edge-c', ownerBoot: 'boot-c', claim: 108, at: Date.now(),
      sequenceId: 7, position: 110, groups: ['room'],
    };
    // Edge b has read up to its own claim, not edge c's.
    const stream: SessionStream = { position: 107, started: true, readRange: async () => [], firstSequence: async () => 1, ...KEEPS_NOTHING_RECENT };
    let adopted: PubSubConnection | undefined;
    let sessions!: StreamSessions;
    const hub = {
      name: 'chat', key: 'chat',
      local: { adopt: (c: PubSubConnection) => (adopted = c), remove() {}, connections: new Map() },
      edgeOnRoster: (node: string) => node === 'edge-c',
    };
    const puts: PsCheckpoint[] = [];
    const js = {
      entry: async () => ({ revision: 5, value: Buffer.from(JSON.stringify(newer)) }),
      put: async (_key: string, value: Uint8Array) => {
        puts.push(JSON.parse(Buffer.from(value).toString('utf8')) as PsCheckpoint);
        return 6;
      },
      publish: async () => {
        const claim: PsClaim = { op: 'ps.claim', origin: 'edge-b', boot: 'boot-b', hub: 'chat', connectionId: 'conn1' };
        setImmediate(() => sessions.claimed(claim, 107));
        return { seq: 107 };
      },
    };
    sessions = new StreamSessions(hub as never, stream, {
      js: js as never, subjects: { hubControl: () => 'relay.ev.chat.ctl' } as never, nodeId: 'edge-b', bootId: 'boot-b', log: silent as never,
      limits: testConnectionLimits(), requestTimeoutMs: 200, publishTimeoutMs: 1000, checkpointIntervalMs: 1000, sessionRetainMs: 60_000, history: false,
      release() {}, endConnection() {},
    });
    try {
      const taken = await sessions.take('conn1', TOKEN, RELIABLE_PROTOCOL);
      assert.equal(taken, undefined, 'taken from a checkpoint of a later claim');
      assert.equal(adopted, undefined);
      // Before: written over, unconditionally, as edge b's by claim 107.
      assert.deepEqual(puts.map((p) => [p.owner, p.claim]), []);
    } finally {
      sessions.close();
    }
  });
});
