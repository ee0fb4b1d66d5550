// The relay's own request to a listener (hc:// event handlers): an answer
// larger than the caller allows is reported as too large, whichever way the
// listener sends it (in a control-channel frame, or over a rendezvous leg).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { startTestRelay } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

describe('a relayed request whose answer is too large', () => {
  for (const size of [2_000, 200_000]) {
    it(`is refused as TooLarge, not as a bad listener response (${size} bytes)`, async (t) => {
      const relay = await startTestRelay(t, { hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }] });
      await startHycoHttpsListener(t, relay.url, (_req, res) => void res.end(Buffer.alloc(size, 0x61)), 'handlers');
      const asked = relay.hybrid.relayRequest('handlers', '/handlers/event', { method: 'POST', headers: {}, timeoutMs: 5000, maxResponseBytes: 1000 });
      // Before: code BadListenerResponse ("relayed request failed: BadListenerResponse").
      await withTimeout(
        assert.rejects(asked, (err: { kind?: string; code?: string; message?: string }) => err.kind === 'failed' && err.code === 'TooLarge' && err.message === 'answer too large'),
        10000,
        'the relayed request',
      );
      // The same listener still answers a request whose answer fits.
      const fits = await withTimeout(relay.hybrid.relayRequest('handlers', '/handlers/event', { method: 'POST', headers: {}, timeoutMs: 5000, maxResponseBytes: size }), 10000, 'an answer that fits');
      assert.equal(fits.body.length, size);
    });
  }
});
