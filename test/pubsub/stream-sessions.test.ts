// A durable hub's takes of sessions from other edges (src/pubsub/session-take.ts, docs/durability.md
// "Reliable sessions") waiting for their claims to be read back when the hub's sessions close: each stops at once,
// however many wait, and waiting leaves nothing behind.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { PsCheckpoint } from '../../src/bus/messages.ts';
import { SessionUnavailable } from '../../src/pubsub/errors.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { RELIABLE_PROTOCOL } from '../../src/pubsub/pubsub-connection.ts';
import { StreamSessions, type SessionStream } from '../../src/pubsub/stream-sessions.ts';
import { KEEPS_NOTHING_RECENT, testConnectionLimits } from '../helpers/pubsub.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };
const TOKEN = 'reconnection-token';

function checkpointOf(connectionId: string): PsCheckpoint {
  return {
    op: 'ps.checkpoint', hub: 'chat', connectionId, userId: 'u', protocol: RELIABLE_PROTOCOL,
    tokenHash: createHash('sha256').update(TOKEN).digest('base64url'),
    permissions: new ConnectionPermissions([]).snapshot(), owner: 'edge-b', claim: 0, at: Date.now(), sequenceId: 0, position: 0, groups: [],
  };
}

describe('takes waiting for their claims', () => {
  it('stop at once when the sessions close, and many at once raise no listener-leak warning (before: a MaxListenersExceededWarning past 10)', async (t) => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));
    const stream: SessionStream = { position: 0, started: true, readRange: async () => [], firstSequence: async () => 1, ...KEEPS_NOTHING_RECENT };
    const hub = { name: 'chat', key: 'chat', local: { adopt() {}, remove() {}, connections: new Map() }, edgeOnRoster: () => false };
    let claims = 0;
    // Every claim is stored, and never read back (the follower does not run here).
    const js = {
      entry: async (key: string) => ({ revision: 1, value: Buffer.from(JSON.stringify(checkpointOf(key.slice('chat.'.length)))) }),
      put: async () => 2,
      publish: async () => ({ seq: 100 + ++claims }),
    };
    const sessions = new StreamSessions(hub as never, stream, {
      js: js as never, subjects: { hubControl: () => 'relay.ev.chat.ctl' } as never, nodeId: 'edge-a', bootId: 'boot-a', log: silent as never,
      limits: testConnectionLimits(), requestTimeoutMs: 30_000, publishTimeoutMs: 30_000, checkpointIntervalMs: 1000, sessionRetainMs: 60_000, history: false,
      release() {}, endConnection() {},
    });
    const takes = Array.from({ length: 20 }, (_, i) => sessions.take(`conn${i}`, TOKEN, RELIABLE_PROTOCOL).then(
      () => 'taken',
      (err: unknown) => (err instanceof SessionUnavailable ? 'unavailable' : String(err)),
    ));
    await until(() => claims === 20, 5000, 'every take to store its claim');
    // Warnings go out on the next tick.
    await new Promise((r) => setImmediate(r));
    sessions.close();
    assert.deepEqual(new Set(await withTimeout(Promise.all(takes), 2000, 'the takes to stop')), new Set(['unavailable']));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(warnings.map((w) => `${w.name}: ${w.message}`), []);
  });
});
