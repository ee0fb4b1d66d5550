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

describe('a take whose checkpoint a later claim wrote', () => {
  it('is refused as one to try again, and leaves that checkpoint as it is (before: taken from it, the session held on two edges)', async () => {
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
      // Refused as a take to try again (1013: the session lives on edge c, where the client's next try finds it), not
      // as a session gone (1008: the SDK would give it up).
      await assert.rejects(sessions.take('conn1', TOKEN, RELIABLE_PROTOCOL), (err: Error) => err instanceof SessionUnavailable && err.message === 'another edge claimed it since');
      assert.equal(adopted, undefined, 'taken from a checkpoint of a later claim');
      // Before: written over, unconditionally, as edge b's by claim 107.
      assert.deepEqual(puts.map((p) => [p.owner, p.claim]), []);
    } finally {
      sessions.close();
    }
  });
  it('whose replay meets a later claim of another edge is refused as one to try again (before: 1008, the session given up)', async () => {
    // Edge a held it and is gone; edge b claims at 107 and replays from the checkpoint (106); edge c claimed at 108.
    const older: PsCheckpoint = {
      op: 'ps.checkpoint', hub: 'chat', connectionId: 'conn1', userId: 'u', protocol: RELIABLE_PROTOCOL,
      tokenHash: createHash('sha256').update(TOKEN).digest('base64url'),
      permissions: new ConnectionPermissions([]).snapshot(), owner: 'edge-a', ownerBoot: 'boot-a', claim: 100, at: Date.now(),
      sequenceId: 3, position: 106, groups: ['room'],
    };
    const claimOf = (origin: string): PsClaim => ({ op: 'ps.claim', origin, boot: `boot-${origin}`, hub: 'chat', connectionId: 'conn1' });
    const stored = [107, 108].map((seq, i) => ({ seq, subject: 'relay.ev.chat.ctl', data: encodeEdgeMessage(claimOf(i === 0 ? 'edge-b' : 'edge-c')) }));
    const stream: SessionStream = { position: 108, started: true, readRange: async (from, to) => stored.filter((m) => m.seq > from && m.seq <= to), firstSequence: async () => 1, ...KEEPS_NOTHING_RECENT };
    let adopted: PubSubConnection | undefined;
    let sessions!: StreamSessions;
    const hub = {
      name: 'chat', key: 'chat',
      local: { adopt: (c: PubSubConnection) => (adopted = c), remove() {}, connections: new Map() },
      edgeOnRoster: () => false,
    };
    const js = {
      entry: async () => ({ revision: 5, value: Buffer.from(JSON.stringify(older)) }),
      put: async () => 6,
      publish: async () => {
        setImmediate(() => sessions.claimed(claimOf('edge-b'), 107));
        return { seq: 107 };
      },
    };
    sessions = new StreamSessions(hub as never, stream, {
      js: js as never, subjects: { hubControl: () => 'relay.ev.chat.ctl' } as never, nodeId: 'edge-b', bootId: 'boot-edge-b', log: silent as never,
      limits: testConnectionLimits(), requestTimeoutMs: 200, publishTimeoutMs: 1000, checkpointIntervalMs: 1000, sessionRetainMs: 60_000, history: false,
      release() {}, endConnection() {},
    });
    try {
      await assert.rejects(sessions.take('conn1', TOKEN, RELIABLE_PROTOCOL), (err: Error) => err instanceof SessionUnavailable && err.message === 'another edge claimed it since');
      assert.equal(adopted, undefined);
    } finally {
      sessions.close();
    }
  });
});
