// NATS over TLS with credentials (docs/security.md, "NATS over TLS with
// credentials"), against a real nats-server: TLS with client certificates
// required (verify) and an authorization block with a user/password and an
// NKey user; operator (JWT) mode with a .creds file. JetStream keeps working
// over TLS: a durable hub's send is acked once stored, and its history reads
// it back. Wrong credentials or a missing client certificate leave the edge
// unconnected, saying why.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { makePki, type TestPki } from '../helpers/certs.ts';
import { httpRequest } from '../helpers/http.ts';
import { nkeyUser, operatorMode } from '../helpers/nats-auth.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const HUB = { name: 'chat', accessKey: 'chat-hub-key-0123456789abcdef', history: { maxMessages: 100 } };
const PASSWORD = 'nats-password-0123456789abcdef';

/** nats-server's tls block: its certificate from the test CA, client certificates from the same CA required. */
function tlsBlock(pki: TestPki): string {
  const server = pki.issueServer('nats-server');
  return `tls {\n  cert_file: "${server.certFile}"\n  key_file: "${server.keyFile}"\n  ca_file: "${pki.caFile}"\n  verify: true\n  timeout: 5\n}\n`;
}

function relayOver(t: TestContext, url: string, bus: Record<string, unknown>, log = captureLogger().log): Promise<RunningRelay> {
  return startTestRelay(t, { bus: { kind: 'nats', servers: [url], connectTimeoutMs: 3000, jetstream: { storage: 'memory' }, ...bus }, pubsub: { hubs: [HUB] } }, { log });
}

/** A durable send acked (stored in JetStream), and the hub's history reading it back over REST. */
async function storesAndReads(t: TestContext, relay: RunningRelay): Promise<void> {
  await until(() => relay.bus.connected && relay.jetstream?.state === 'ready', 20000, 'NATS and JetStream');
  const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: HUB.name, key: HUB.accessKey }), undefined, t);
  const ack = await client.request({ type: 'sendToGroup', group: 'g', dataType: 'text', data: 'stored over TLS' }, 10000);
  assert.equal(ack.success, true, JSON.stringify(ack));
  const path = `/api/hubs/${HUB.name}/groups/g/messages`;
  const page = await httpRequest(`${relay.url}${path}?after=0`, { headers: { authorization: `Bearer ${signJwt({ aud: `${relay.url}${path}` }, HUB.accessKey, 60)}` } });
  assert.equal(page.status, 200);
  assert.deepEqual(JSON.parse(String(page.body)).messages.map((m: { data: string }) => m.data), ['stored over TLS']);
  client.ws.terminate();
}

describe('NATS over TLS with credentials', () => {
  it('connects with a client certificate and a user/password from an authorization block; JetStream stores over TLS', async (t) => {
    const pki = makePki(t);
    const nats = await startNatsServer(t, 'n1', undefined, {
      config: `${tlsBlock(pki)}authorization {\n  users: [\n    { user: "edge", password: "${PASSWORD}" }\n  ]\n}\n`,
    });
    const cert = pki.issueClient('edge');
    const relay = await relayOver(t, `tls://127.0.0.1:${nats.port}`, {
      tls: { caFile: pki.caFile, certFile: cert.certFile, keyFile: cert.keyFile },
      user: 'edge',
      pass: PASSWORD,
    });
    await storesAndReads(t, relay);
  });

  it('connects as an NKey user from bus.nkeyFile', async (t) => {
    const pki = makePki(t);
    const user = nkeyUser();
    const nats = await startNatsServer(t, 'n1', undefined, { config: `${tlsBlock(pki)}authorization {\n  users: [\n    { nkey: "${user.publicKey}" }\n  ]\n}\n` });
    const seedFile = join(pki.dir, 'edge.nk');
    writeFileSync(seedFile, `${user.seed}\n`);
    const cert = pki.issueClient('edge');
    const relay = await relayOver(t, `nats://127.0.0.1:${nats.port}`, { tls: { caFile: pki.caFile, certFile: cert.certFile, keyFile: cert.keyFile }, nkeyFile: seedFile });
    await storesAndReads(t, relay);
  });

  it('connects with a .creds file to a server in operator (JWT) mode', async (t) => {
    const pki = makePki(t);
    const operator = operatorMode();
    const nats = await startNatsServer(t, 'n1', undefined, { config: `${tlsBlock(pki)}${operator.serverConfig}\n` });
    const credsFile = join(pki.dir, 'edge.creds');
    writeFileSync(credsFile, operator.creds);
    const cert = pki.issueClient('edge');
    const relay = await relayOver(t, `tls://127.0.0.1:${nats.port}`, { tls: { caFile: pki.caFile, certFile: cert.certFile, keyFile: cert.keyFile }, credsFile });
    await storesAndReads(t, relay);
  });

  it('stays unconnected, saying why, with a wrong password, without a client certificate, or without the CA', async (t) => {
    const pki = makePki(t);
    const nats = await startNatsServer(t, 'n1', undefined, { config: `${tlsBlock(pki)}authorization {\n  users: [\n    { user: "edge", password: "${PASSWORD}" }\n  ]\n}\n` });
    const cert = pki.issueClient('edge');
    const url = `tls://127.0.0.1:${nats.port}`;
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tls: { caFile: pki.caFile, certFile: cert.certFile, keyFile: cert.keyFile }, user: 'edge', pass: 'wrong-password-0123456789' }, /Authorization Violation/i],
      [{ tls: { caFile: pki.caFile }, user: 'edge', pass: PASSWORD }, /./],
      [{ tls: { certFile: cert.certFile, keyFile: cert.keyFile }, user: 'edge', pass: PASSWORD }, /certificate/i],
    ];
    for (const [bus, why] of cases) {
      const { log, lines } = captureLogger();
      const relay = await relayOver(t, url, bus, log);
      await until(() => lines().some((l) => l.event === 'bus.unreachable'), 15000, `bus.unreachable logged for ${JSON.stringify(bus)}: ${JSON.stringify(lines())}`);
      assert.match(String(lines().find((l) => l.event === 'bus.unreachable')!.err), why);
      assert.equal(relay.bus.connected, false);
    }
  });

  it('says why it cannot connect again, per server, when a server it lost comes back with a certificate it does not trust (before: bus.disconnected, then nothing)', async (t) => {
    const pki = makePki(t);
    const other = makePki(t);
    const serverBlock = (files: { certFile: string; keyFile: string }) => `tls {\n  cert_file: "${files.certFile}"\n  key_file: "${files.keyFile}"\n  timeout: 5\n}\n`;
    const nats = await startNatsServer(t, 'n1', undefined, { config: serverBlock(pki.server) });
    const { log, lines } = captureLogger();
    const relay = await startTestRelay(
      t,
      { bus: { kind: 'nats', servers: [`tls://127.0.0.1:${nats.port}`], connectTimeoutMs: 3000, reconnectTimeWaitMs: 300, tls: { caFile: pki.caFile } } },
      { log },
    );
    await until(() => relay.bus.connected, 20000, 'NATS over TLS');
    // The server is replaced by one whose certificate another CA signed (a renewal from the wrong issuer).
    await nats.kill();
    nats.reconfigure(serverBlock(other.server));
    await nats.restart();
    const failed = () => lines().filter((l) => l.event === 'bus.reconnect_failed');
    // An attempt made while the server was down (its restart slower than the first attempt, as under load) says
    // "connection refused" first: the certificate's line is looked for, not taken to be the first.
    const untrusted = () => failed().filter((l) => /certificate/i.test(String(l.err)));
    await until(() => untrusted().length > 0, 15000, `bus.reconnect_failed logged: ${JSON.stringify(lines().filter((l) => String(l.event).startsWith('bus.')))}`);
    assert.equal(untrusted()[0].server, `127.0.0.1:${nats.port}`);
    // Once per reason, not once per attempt (one every 300 ms here).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(untrusted().length, 1);
    assert.ok(failed().length <= 2, JSON.stringify(failed()));
    assert.equal(relay.bus.connected, false);
  });
});
