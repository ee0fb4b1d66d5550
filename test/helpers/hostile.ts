// The hostile-input suite's relay and its checks (test/hostile/): a real relay
// process with small configured buffers, whose resident memory is read from
// /proc while an attack runs, and which must come out of every attack still
// running (no relay.crash logged), answering, and serving other clients.
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { httpRequest } from './http.ts';
import { RawPubSubClient, accessUrl, pubsubOverrides } from './pubsub.ts';
import { startRelayProcess, type RelayProcess } from './relay.ts';
import { until } from './wait.ts';

/** The relay's per-socket buffers in the hostile suite. */
export const HOSTILE_BUFFER_BYTES = 65536;
/** What a relay process may grow by during one attack: its buffers, kernel-side bookkeeping and V8 heap noise. */
export const MAX_RSS_GROWTH = 40 << 20;

export function hostileOverrides(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { limits, timeouts, ...rest } = extra as { limits?: object; timeouts?: object };
  return pubsubOverrides({
    // warn: limit.reached lines, and relay.crash if anything reached it.
    log: { level: 'warn' },
    hybridConnections: [{ name: 'open', requiresClientAuthorization: false }, { name: 'echo', requiresClientAuthorization: true }],
    limits: { spliceBufferBytes: HOSTILE_BUFFER_BYTES, outboundBufferBytes: HOSTILE_BUFFER_BYTES, ...limits },
    timeouts: { ...timeouts },
    ...rest,
  });
}

export function startHostileRelay(t: Pick<TestContext, 'after'>, extra: Record<string, unknown> = {}): Promise<RelayProcess> {
  return startRelayProcess(t, hostileOverrides(extra));
}

/** Runs `attack` while sampling the relay's RSS; returns the attack's result and the peak growth in bytes. */
export async function measuringRss<T>(relay: RelayProcess, attack: () => Promise<T>): Promise<{ result: T; growth: number }> {
  const before = relay.rss();
  let peak = before;
  const sample = () => {
    if (relay.child.exitCode === null) peak = Math.max(peak, relay.rss());
  };
  const sampler = setInterval(sample, 25);
  try {
    const result = await attack();
    sample();
    return { result, growth: peak - before };
  } finally {
    clearInterval(sampler);
  }
}

export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The relay came through: still running, nothing reached its last-resort handler, it answers, and a pub/sub client is served. */
export async function assertStillServing(t: TestContext, relay: RelayProcess): Promise<void> {
  assert.equal(relay.child.exitCode, null, `the relay exited: ${relay.stderr().slice(-2000)}`);
  assert.doesNotMatch(relay.stderr(), /relay\.crash/);
  assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  const a = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
  const b = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
  assert.equal((await a.request({ type: 'joinGroup', group: 'bystanders' })).success, true);
  assert.equal((await b.request({ type: 'sendToGroup', group: 'bystanders', dataType: 'text', data: 'still here' })).success, true);
  await until(() => a.dataMessages().length > 0, 5000, 'a message between bystanders');
}
