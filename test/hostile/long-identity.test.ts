// A client token's user id and groups are held to 1,024 characters, counted
// as the schemas count them (code points). Past that the upgrade is refused
// 401 with the reason; before, such a `sub` connected the client as anonymous
// (userId null) without a word, and 513 emoji (1,026 UTF-16 units) counted
// as too long though the frames' schemas take 1,024 of them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { clientAccessUrl } from '../../src/pubsub/client-access-url.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { HUB, HUB_KEY, PLAIN, startPubSubRelay } from '../helpers/pubsub.ts';
import { withTimeout } from '../helpers/wait.ts';

/** What a plain client connecting with `userId` and `groups` gets: its connected message, or the refusal. */
async function connectAs(t: Parameters<typeof cleanupFor>[0], url: string, userId: string, groups: string[] = []): Promise<{ status: number; body: string; userId?: string | null }> {
  const ws = new WebSocket(clientAccessUrl(url, HUB, HUB_KEY, { userId, groups }), [PLAIN]);
  cleanupFor(t).after(() => ws.terminate());
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('message', (data) => {
        const m = JSON.parse(String(data)) as { event?: string; userId?: string | null };
        resolve({ status: 101, body: m.event ?? '', userId: m.userId });
      });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      ws.once('error', reject);
    }),
    5000,
    'the answer to the upgrade',
  );
}

describe('a client token naming a user or group too long', () => {
  it('is refused 401 with the reason; 1,024 characters of any width are taken', async (t) => {
    const relay = await startPubSubRelay(t);
    const emoji = '\u{1F600}';
    const wide = await connectAs(t, relay.url, emoji.repeat(1024));
    assert.equal(wide.status, 101);
    assert.equal(wide.userId, emoji.repeat(1024), '1,024 emoji (2,048 UTF-16 units) are 1,024 characters');
    const long = await connectAs(t, relay.url, 'x'.repeat(1025));
    assert.equal(long.status, 401);
    assert.match(long.body, /sub is longer than 1024 characters/);
    const longGroup = await connectAs(t, relay.url, 'u', ['g'.repeat(1025)]);
    assert.equal(longGroup.status, 401);
    assert.match(longGroup.body, /group of the token is longer than 1024/);
  });
});
