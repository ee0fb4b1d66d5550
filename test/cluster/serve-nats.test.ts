// `edge-relay serve --nats URLS`: the README's way to start edges on a NATS
// cluster without writing a bus section into the config.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readiness, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { startServeProcess } from '../helpers/relay.ts';

describe('serve --nats', () => {
  it('runs an edge on the NATS bus with the development config', async (t) => {
    const nats = await startNatsServer(t);
    const { url } = await startServeProcess(t, [
      '--config', 'config/dev.json', '--port', '0', '--node-id', 'edge-cli', '--nats', nats.url, '--log-level', 'warn',
    ]);
    await waitReady({ url });
    const { body } = await readiness({ url });
    assert.deepEqual(body.bus, { kind: 'nats', connected: true });
  });
});
