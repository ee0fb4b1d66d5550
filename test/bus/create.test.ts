// src/bus/create.ts: the configured bus and its JetStream access, built from
// the config as `serve` builds them (nothing connects here).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBus, createJetStream } from '../../src/bus/create.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { buildConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/telemetry/logger.ts';

const durable = (jetstream: Record<string, unknown>) =>
  buildConfig({
    bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], jetstream: { enabled: true, ...jetstream } },
    pubsub: { hubs: [{ name: 'chat', accessKey: 'chat-access-key-0123456789', durable: true }] },
  });

describe('the bus from the config', () => {
  it('hands bus.jetstream.unsureRetryMs and publishTimeoutMs to JetStream (the default when not set)', (t) => {
    const log = createLogger('silent', 'test');
    for (const [jetstream, expected] of [
      [{ unsureRetryMs: 2500, publishTimeoutMs: 700 }, { unsureRetryMs: 2500, publishTimeoutMs: 700 }],
      [{}, { unsureRetryMs: 60000, publishTimeoutMs: 5000 }],
    ] as const) {
      const config = durable(jetstream);
      const bus = createBus(config, log);
      assert.ok(bus instanceof NatsBus);
      const js = createJetStream(bus, config, log);
      t.after(async () => {
        js?.close();
        await bus.close();
      });
      assert.ok(js, 'a durable hub on the NATS bus has JetStream');
      const options = (js as unknown as { options: { unsureRetryMs?: number; publishTimeoutMs: number } }).options;
      assert.deepEqual({ unsureRetryMs: options.unsureRetryMs, publishTimeoutMs: options.publishTimeoutMs }, expected, JSON.stringify(jetstream));
    }
  });
});
