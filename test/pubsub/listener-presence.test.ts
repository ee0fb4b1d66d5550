// Listener presence as events (hybridConnections[].presence): a listener of
// the hybrid connection connecting or going away is published as a JSON
// message to the hub group, so cloud apps subscribe instead of polling
// /$relay/status.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { buildConfig, loadConfig } from '../../src/config/load.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { HUB, PLAIN, RawPubSubClient, accessUrl, pubsubOverrides, startPubSubRelay } from '../helpers/pubsub.ts';
import { configFile, startTestRelay, testConfig } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

describe('listener presence', () => {
  it('publishes listener.online and listener.offline to the hub group', async (t) => {
    const relay = await startPubSubRelay(t, {
      nodeId: 'test-node',
      hybridConnections: [{ name: 'echo', requiresClientAuthorization: true, presence: { hub: HUB, group: 'listeners' } }],
    });
    const watcher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await watcher.request({ type: 'joinGroup', group: 'listeners' });
    const first = await startHycoHttpsListener(t, relay.url, (_req, res) => res.end());
    await until(() => watcher.dataMessages().length === 1, 5000, 'online');
    const second = await startHycoHttpsListener(t, relay.url, (_req, res) => res.end());
    await until(() => watcher.dataMessages().length === 2, 5000, 'second online');
    second.close();
    first.close();
    await until(() => watcher.dataMessages().length === 4, 5000, 'offline');
    const messages = watcher.dataMessages();
    assert.ok(messages.every((m) => m.from === 'group' && m.group === 'listeners' && m.dataType === 'json'));
    assert.deepEqual(
      messages.map((m) => [m.data.type, m.data.entity, m.data.listeners, m.data.edge]),
      [
        ['listener.online', 'echo', 1, 'test-node'],
        ['listener.online', 'echo', 2, 'test-node'],
        ['listener.offline', 'echo', 1, 'test-node'],
        ['listener.offline', 'echo', 0, 'test-node'],
      ],
    );
  });

  it('publishes listener.offline for a listener a reload closes by removing its entity (before: nothing, and the group counted it online for good)', async (t) => {
    const withEcho = pubsubOverrides({
      nodeId: 'test-node',
      hybridConnections: [{ name: 'echo', requiresClientAuthorization: true, presence: { hub: HUB, group: 'listeners' } }],
    });
    const file = configFile(t, withEcho);
    const relay = await startTestRelay(t, withEcho, { loadConfig: () => loadConfig(file, {}, {}) });
    const watcher = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    await watcher.request({ type: 'joinGroup', group: 'listeners' });
    await startHycoHttpsListener(t, relay.url, (_req, res) => res.end());
    await until(() => watcher.dataMessages().length === 1, 5000, 'online');
    writeFileSync(file, JSON.stringify(testConfig(pubsubOverrides({ nodeId: 'test-node', hybridConnections: [] }))));
    const outcome = relay.reload('api');
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.deepEqual((outcome.changes as { entitiesRemoved: string[] }).entitiesRemoved, ['echo']);
    await until(() => watcher.dataMessages().length === 2, 5000, 'offline once the reload closed the listener');
    assert.deepEqual(
      watcher.dataMessages().map((m) => [m.data.type, m.data.entity, m.data.listeners]),
      [
        ['listener.online', 'echo', 1],
        ['listener.offline', 'echo', 0],
      ],
    );
  });

  it('refuses a presence hub that is not configured', () => {
    assert.throws(
      () => buildConfig(testConfig(pubsubOverrides({ hybridConnections: [{ name: 'echo', presence: { hub: 'nohub', group: 'g' } }] }))),
      /presence\/hub/,
    );
  });
});
