// pubsub.hubs[].secondaryAccessKey: Azure's secondary key, accepted at all
// times beside the access key, so users rotate as they do on Azure (move
// every client to one key, replace the other, move back) with no grace to
// race. Microsoft's service SDK signs REST calls and client tokens with it,
// Microsoft's client connects with them, ce-signature carries an HMAC with
// each key (checked by Microsoft's handler SDK), and a reload that drops a
// key stops it at the end of rotationGraceSeconds.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { buildConfig, loadConfig } from '../../src/config/load.ts';
import { weakKeys } from '../../src/config/secrets.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { eventHandlerApp, serveApp } from '../helpers/event-handler-app.ts';
import { HUB, HUB_KEY } from '../helpers/pubsub.ts';
import { signJwt } from '../../src/auth/jwt.ts';
import { httpRequest } from '../helpers/http.ts';
import { startTestRelay, testConfig } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';
import { startClient } from '../helpers/web-pubsub-sdk.ts';

const SECONDARY = 'chat-secondary-key-0123456789';
const OTHER = 'chat-unknown-key-0123456789abc';

const hubWith = (keys: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ pubsub: { hubs: [{ name: HUB, ...keys, ...extra }] } });
const sdkWith = (relayUrl: string, key: string) => new WebPubSubServiceClient(`Endpoint=${relayUrl};AccessKey=${key};Version=1.0;`, HUB, { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } });

/** The HTTP status a REST call signed with `key` gets (202 when it went through). */
async function restStatus(relayUrl: string, key: string): Promise<number> {
  try {
    await sdkWith(relayUrl, key).sendToAll('ping', { contentType: 'text/plain' });
    return 202;
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    if (status === undefined) throw err;
    return status;
  }
}

describe('pubsub.hubs[].secondaryAccessKey', () => {
  it("takes REST calls and client tokens the service SDK signs with either key, and Microsoft's client connects with them", async (t) => {
    const relay = await startTestRelay(t, hubWith({ accessKey: HUB_KEY, secondaryAccessKey: SECONDARY }));
    for (const key of [HUB_KEY, SECONDARY]) {
      const sdk = sdkWith(relay.url, key);
      const { url } = await sdk.getClientAccessToken({ userId: `u-${key.slice(0, 5)}` });
      const client = await startClient(t, url);
      await sdk.sendToAll(`to all, signed with ${key}`, { contentType: 'text/plain' });
      await until(() => client.serverData.some((m: { data?: unknown }) => m.data === `to all, signed with ${key}`), 5000, 'the message sent with that key');
    }
    assert.equal(await restStatus(relay.url, OTHER), 401);
  });

  it("signs ce-signature with each key, as Microsoft's handler SDK checks it", async (t) => {
    const { app, record } = eventHandlerApp(HUB, SECONDARY);
    const { url } = await serveApp(t, app);
    const handlers = [{ urlTemplate: `${url}/api/webpubsub/hubs/{hub}`, userEventPattern: '*', systemEvents: ['connect', 'connected'] }];
    const relay = await startTestRelay(t, hubWith({ accessKey: HUB_KEY, secondaryAccessKey: SECONDARY }, { eventHandlers: handlers }));
    const { url: accessUrl } = await sdkWith(relay.url, HUB_KEY).getClientAccessToken({ userId: 'signed' });
    const client = await startClient(t, accessUrl);
    await until(() => record.connected.length > 0, 5000, 'the connected event');
    // The handler SDK, given the secondary key, verified every event (a failed check answers 401 to the connect).
    assert.ok(record.signatures.length >= 2 && record.signatures.every(Boolean), JSON.stringify(record.signatures));
    const connectionId = client.connectionIds[0];
    const signature = (record.connected[0] as { context: { signature: string } }).context.signature;
    const hmac = (key: string) => `sha256=${createHmac('sha256', key).update(connectionId).digest('hex')}`;
    assert.equal(signature, `${hmac(HUB_KEY)},${hmac(SECONDARY)}`);
  });

  it('on reload: a key dropped stops at the end of the grace, a swap of the two is no rotation, a key file is read again', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secondary-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, 'secondary.key');
    writeFileSync(keyFile, `${SECONDARY}\n`);
    const file = join(dir, 'config.json');
    const write = (keys: Record<string, unknown>) => writeFileSync(file, JSON.stringify(testConfig({ rotationGraceSeconds: 0, ...hubWith(keys) })));
    write({ accessKey: HUB_KEY, secondaryAccessKeyFile: keyFile });
    const relay = await startTestRelay(t, hubWith({ accessKey: HUB_KEY, secondaryAccessKey: SECONDARY }, {}), { loadConfig: () => loadConfig(file, {}, {}) });
    assert.equal(await restStatus(relay.url, SECONDARY), 202);
    // Swapped: both keys still standing, nothing rotated.
    write({ accessKey: SECONDARY, secondaryAccessKey: HUB_KEY });
    const swapped = relay.reload('api');
    assert.equal(swapped.ok, true);
    assert.deepEqual((swapped as { changes: { hubKeysRotated?: string[] } }).changes.hubKeysRotated, []);
    assert.equal(await restStatus(relay.url, HUB_KEY), 202);
    assert.equal(await restStatus(relay.url, SECONDARY), 202);
    // The secondary replaced through its file (grace 0): the old one stops now, the new one signs.
    writeFileSync(keyFile, `${OTHER}\n`);
    write({ accessKey: HUB_KEY, secondaryAccessKeyFile: keyFile });
    const rotated = relay.reload('api');
    assert.equal(rotated.ok, true);
    assert.deepEqual((rotated as { changes: { hubKeysRotated?: string[] } }).changes.hubKeysRotated, [HUB]);
    assert.equal(await restStatus(relay.url, SECONDARY), 401);
    assert.equal(await restStatus(relay.url, OTHER), 202);
    assert.equal(await restStatus(relay.url, HUB_KEY), 202);
  });

  it('keeps a dropped key for the grace, a later reload bounds it by its own, and :generateToken signs with the access key', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secondary-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.json');
    const write = (grace: number, keys: Record<string, unknown>) => writeFileSync(file, JSON.stringify(testConfig({ rotationGraceSeconds: grace, ...hubWith(keys) })));
    const relay = await startTestRelay(t, hubWith({ accessKey: HUB_KEY, secondaryAccessKey: SECONDARY }), { loadConfig: () => loadConfig(file, {}, {}) });
    // The primary replaced while the secondary stays, with an hour's grace: the old primary still passes.
    const NEW_PRIMARY = 'chat-new-primary-0123456789ab';
    write(3600, { accessKey: NEW_PRIMARY, secondaryAccessKey: SECONDARY });
    assert.equal(relay.reload('api').ok, true);
    for (const key of [HUB_KEY, NEW_PRIMARY, SECONDARY]) assert.equal(await restStatus(relay.url, key), 202, key);
    // The secondary dropped as leaked, with the hour's grace by mistake: still passes...
    write(3600, { accessKey: NEW_PRIMARY });
    assert.equal(relay.reload('api').ok, true);
    assert.equal(await restStatus(relay.url, SECONDARY), 202);
    // ...until a reload that only adds a fresh secondary, with a grace of 0, bounds every key retired before it.
    write(0, { accessKey: NEW_PRIMARY, secondaryAccessKey: OTHER });
    assert.deepEqual((relay.reload('api') as { changes: { hubKeysRotated?: string[] } }).changes.hubKeysRotated, [HUB]);
    for (const key of [SECONDARY, HUB_KEY]) assert.equal(await restStatus(relay.url, key), 401, key);
    for (const key of [NEW_PRIMARY, OTHER]) assert.equal(await restStatus(relay.url, key), 202, key);
    // Tokens the relay mints are signed with the access key: the SDK asks :generateToken when it holds no key.
    const url = `${relay.url}/api/hubs/${HUB}/:generateToken?api-version=2024-12-01`;
    const minted = await httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${signJwt({ aud: url }, OTHER, 60)}` } });
    assert.equal(minted.status, 200, String(minted.body));
    const { token } = JSON.parse(String(minted.body)) as { token: string };
    const signedWith = (key: string) => createHmac('sha256', key).update(token.split('.').slice(0, 2).join('.')).digest('base64url') === token.split('.')[2];
    assert.ok(signedWith(NEW_PRIMARY));
  });

  it('is held to the same strength as the access key, and given one way only', (t) => {
    const config = buildConfig(testConfig(hubWith({ accessKey: HUB_KEY, secondaryAccessKey: 'short-but-16-chars' })));
    assert.ok(weakKeys(config).some((p) => p.startsWith('/pubsub/hubs/0/secondaryAccessKey (chat)')), weakKeys(config).join('; '));
    assert.throws(() => buildConfig(testConfig(hubWith({ accessKey: HUB_KEY, secondaryAccessKey: 'x'.repeat(8) }))), /secondaryAccessKey/);
    assert.throws(() => buildConfig(testConfig(hubWith({ accessKey: HUB_KEY, secondaryAccessKey: SECONDARY, secondaryAccessKeyFile: '/nonexistent' }))), /give secondaryAccessKey or secondaryAccessKeyFile, not both/);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secondary-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(testConfig(hubWith({ accessKey: HUB_KEY, secondaryAccessKey: '${CHAT_SECONDARY}' }))));
    const fromEnv = loadConfig(file, { CHAT_SECONDARY: SECONDARY }, {});
    assert.equal(fromEnv.pubsub.hubs[0].secondaryAccessKey, SECONDARY);
    assert.equal(buildConfig(testConfig(hubWith({ accessKey: HUB_KEY }))).pubsub.hubs[0].secondaryAccessKey, undefined);
  });
});
