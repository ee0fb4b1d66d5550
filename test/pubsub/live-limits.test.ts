// Limits an open pub/sub connection reads live (src/pubsub/live-limits.ts):
// the buffer limits every reliable session reads for each message it holds
// (ReliableSession.push), and a client socket's options, read for every
// message, are objects with fast properties, of one shape whatever the
// connection. An object literal with getters made per connection was a slow,
// dictionary-mode object, its getters looked up and called, not inlined, for
// every delivery, and reliable fan-out to 10,000 lost about a quarter of its
// rate. Checked with V8's own %HasFastProperties and %HaveSameMap in a child
// node process (--allow-natives-syntax), and that the limits are still read
// live.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { PubSubConnection, RELIABLE_PROTOCOL } from '../../src/pubsub/pubsub-connection.ts';
import { testConnectionLimits } from '../helpers/pubsub.ts';
import { LiveSocketOptions } from '../../src/pubsub/live-limits.ts';

const MODULE = new URL('../../src/pubsub/pubsub-connection.ts', import.meta.url).href;
const PERMISSIONS = new URL('../../src/pubsub/permissions.ts', import.meta.url).href;
const LIVE_LIMITS = new URL('../../src/pubsub/live-limits.ts', import.meta.url).href;

const limits = testConnectionLimits;

describe('live limits of pub/sub connections', () => {
  it('have fast properties and one shape for every connection, session limits and socket options (V8 %HasFastProperties, %HaveSameMap)', async () => {
    const script = `
      import { PubSubConnection, RELIABLE_PROTOCOL } from ${JSON.stringify(MODULE)};
      import { ConnectionPermissions } from ${JSON.stringify(PERMISSIONS)};
      import { LiveSocketOptions } from ${JSON.stringify(LIVE_LIMITS)};
      const limits = ${JSON.stringify(limits())};
      const open = (id) => new PubSubConnection(id, 'hub', null, new ConnectionPermissions([]), RELIABLE_PROTOCOL, limits);
      const [a, b] = [open('a'), open('b')];
      const [c, d] = [new LiveSocketOptions({ pubsubMessageBytes: 1, outboundBufferBytes: 2 }, 3), new LiveSocketOptions({ pubsubMessageBytes: 4, outboundBufferBytes: 5 }, 6)];
      process.stdout.write(JSON.stringify({
        fast: %HasFastProperties(a.session.limits),
        sameShape: %HaveSameMap(a.session.limits, b.session.limits),
        socketOptionsFast: %HasFastProperties(c),
        socketOptionsSameShape: %HaveSameMap(c, d),
      }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script], { timeout: 30_000 });
    assert.deepEqual(JSON.parse(stdout), { fast: true, sameShape: true, socketOptionsFast: true, socketOptionsSameShape: true });
  });

  it('are read when used: a lowered limit bounds a session already open', () => {
    const shared = limits();
    const connection = new PubSubConnection('a', 'hub', null, new ConnectionPermissions([]), RELIABLE_PROTOCOL, shared);
    const session = connection.session!;
    const message = (n: number) => ({ body: Buffer.from(`m${n}`), mid: `m${n}`, position: 0 });
    assert.notEqual(session.push(message(1)), undefined);
    assert.notEqual(session.push(message(2)), undefined);
    shared.sessionBufferMessages = 2;
    assert.equal(session.push(message(3)), undefined, 'full at the lowered limit');
  });

  it('socket options follow the config: a reload that changes a limit is seen at the next message', () => {
    const config = { pubsubMessageBytes: 1024, outboundBufferBytes: 4096 };
    const options = new LiveSocketOptions(config, 500);
    assert.deepEqual([options.maxMessageBytes, options.outboundHighWaterMark, options.closeHandshakeMs], [1024, 4096, 500]);
    config.pubsubMessageBytes = 10;
    config.outboundBufferBytes = 20;
    assert.deepEqual([options.maxMessageBytes, options.outboundHighWaterMark], [10, 20]);
  });
});
