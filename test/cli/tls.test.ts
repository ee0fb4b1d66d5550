// The command line against a relay with listen.tls: bridge, pub and sub take
// https:// and wss:// URLs and trust a private CA with --ca (and refuse the
// relay without it); token builds tokens and access URLs for https:// and
// wss:// relays.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { clientTls, makePki, type TestPki } from '../helpers/certs.ts';
import { EDGE_RELAY_BIN, runCli } from '../helpers/cli-process.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { openWebSocket } from '../helpers/raw-listener.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const HUB = { name: 'chat', accessKey: 'chat-hub-key-0123456789abcdef', history: { maxMessages: 1000 } };

function tlsRelay(t: TestContext, pki: TestPki) {
  return startTestRelay(t, {
    listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } },
    pubsub: { hubs: [HUB] },
  });
}

describe('the command line over TLS', () => {
  it('bridge forwards TCP through an https:// relay it trusts with --ca', async (t) => {
    const pki = makePki(t);
    const relay = await tlsRelay(t, pki);
    const target = (await startTcpEcho(t)).port;
    const creds = ['--relay', relay.url, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, '--ca', pki.caFile];
    const remote = runCli(t, ['bridge', ...creds, '-R', `echo:127.0.0.1:${target}`]);
    await until(() => remote.lines.some((l) => l.startsWith('listening on echo')), 15000, 'bridge -R up');
    const local = runCli(t, ['bridge', ...creds.map((a) => a.replace(/^https:/, 'wss:')), '-L', '0:echo']);
    await until(() => local.lines.some((l) => l.startsWith('forwarding ')), 15000, 'bridge -L up');
    const port = Number(/:(\d+) -> /.exec(local.lines.find((l) => l.startsWith('forwarding '))!)![1]);
    const socket = connect(port, '127.0.0.1');
    t.after(() => socket.destroy());
    // The bridges' clean-up resets it (a stopped bridge resets its connections).
    socket.on('error', () => {});
    socket.write('through TLS');
    const echoed = await withTimeout(new Promise<string>((r) => socket.once('data', (d) => r(String(d)))), 10000, 'echo through the bridges');
    assert.equal(echoed, 'through TLS');
  });

  it('bridge -R presents --tls-cert/--tls-key to a relay that requires listener certificates', async (t) => {
    const pki = makePki(t);
    const cert = pki.issueClient('bridge');
    const relay = await startTestRelay(t, {
      listen: { host: '127.0.0.1', port: 0, tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile, caFile: pki.caFile, requestCert: true, requireClientCert: 'listeners' } },
    });
    const target = (await startTcpEcho(t)).port;
    const creds = ['--relay', relay.url, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, '--ca', pki.caFile];
    const without = runCli(t, ['bridge', ...creds, '-R', `echo:127.0.0.1:${target}`]);
    await until(() => /relay refused the listener: 403/.test(without.stderr()), 15000, 'the listener without a certificate refused, and why');
    const remote = runCli(t, ['bridge', ...creds, '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '-R', `echo:127.0.0.1:${target}`]);
    await until(() => remote.lines.some((l) => l.startsWith('listening on echo')), 15000, 'bridge -R up with its certificate');
    const local = runCli(t, ['bridge', ...creds, '-L', '0:echo']);
    await until(() => local.lines.some((l) => l.startsWith('forwarding ')), 15000, 'bridge -L up (senders need no certificate)');
    const port = Number(/:(\d+) -> /.exec(local.lines.find((l) => l.startsWith('forwarding '))!)![1]);
    const socket = connect(port, '127.0.0.1');
    t.after(() => socket.destroy());
    socket.on('error', () => {});
    socket.write('mutual TLS');
    assert.equal(await withTimeout(new Promise<string>((r) => socket.once('data', (d) => r(String(d)))), 10000, 'echo'), 'mutual TLS');
  });

  it('bridge without --ca says the certificate is not trusted', async (t) => {
    const pki = makePki(t);
    const relay = await tlsRelay(t, pki);
    const remote = runCli(t, ['bridge', '--relay', relay.url, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, '-R', 'echo:127.0.0.1:9']);
    await until(() => /bridge\.control_lost.*UNABLE_TO_VERIFY_LEAF_SIGNATURE|bridge\.control_lost.*unable to verify/.test(remote.stderr()), 15000, 'the refusal logged');
  });

  it('pub and sub (with its history over https://) use an https:// relay with --ca, and fail without it', async (t) => {
    const pki = makePki(t);
    const relay = await tlsRelay(t, pki);
    const common = ['--url', relay.url, '--hub', 'chat', '--key', HUB.accessKey, '--group', 'room', '--ca', pki.caFile];
    const first = runCli(t, ['pub', ...common, 'one', 'two']);
    assert.equal(await withTimeout(first.exited, 20000, 'pub'), 0, first.stderr());
    const sub = runCli(t, ['sub', ...common.map((a) => a.replace(/^https:/, 'wss:')), '--from-start', '--count', '3']);
    await until(() => /watching group room/.test(sub.stderr()), 15000, 'sub watching');
    const second = runCli(t, ['pub', ...common, 'three']);
    assert.equal(await withTimeout(second.exited, 20000, 'pub'), 0, second.stderr());
    assert.equal(await withTimeout(sub.exited, 15000, 'sub to exit after 3'), 0, sub.stderr());
    assert.deepEqual(sub.lines, ['one', 'two', 'three']);

    const untrusted = runCli(t, ['pub', ...common.slice(0, -2), 'nope']);
    assert.equal(await withTimeout(untrusted.exited, 20000, 'pub'), 1);
    assert.match(untrusted.stderr(), /unable to verify the first certificate/);
    // --ca adds to the CAs NODE_EXTRA_CA_CERTS gave Node: before, it dropped them.
    const other = makePki(t);
    const both = runCli(t, ['pub', ...common.slice(0, -1), other.caFile, 'four'], { NODE_EXTRA_CA_CERTS: pki.caFile });
    assert.equal(await withTimeout(both.exited, 20000, 'pub'), 0, both.stderr());
    const missing = runCli(t, ['pub', ...common.slice(0, -1), '/no/such/ca.pem', 'nope']);
    assert.equal(await withTimeout(missing.exited, 20000, 'pub'), 2);
    assert.match(missing.stderr(), /--ca \/no\/such\/ca\.pem: ENOENT/);
    // A --ca file with no certificate in it trusts nothing more: said at once (2), as a missing one.
    const caDir = mkdtempSync(join(tmpdir(), 'edge-relay-ca-'));
    t.after(() => rmSync(caDir, { recursive: true, force: true }));
    const emptyCa = join(caDir, 'empty.pem');
    writeFileSync(emptyCa, '');
    const noCa = runCli(t, ['pub', ...common.slice(0, -1), emptyCa, 'nope']);
    assert.equal(await withTimeout(noCa.exited, 20000, 'pub'), 2);
    assert.match(noCa.stderr(), /--ca .*empty\.pem: no certificate in it/);
    // A certificate and the key of another: said at once (2). Before, sub tried again for good (each connection
    // failed alike) and pub said 1.
    for (const command of ['pub', 'sub']) {
      const mismatched = runCli(t, [command, ...common, '--tls-cert', pki.server.certFile, '--tls-key', other.server.keyFile, ...(command === 'pub' ? ['x'] : [])]);
      assert.equal(await withTimeout(mismatched.exited, 20000, command), 2, mismatched.stderr());
      assert.match(mismatched.stderr(), /--tls-cert\/--tls-key: .*key values mismatch/);
    }
  });

  it('token builds SAS tokens and client access URLs for https:// and wss:// relays', async (t) => {
    const pki = makePki(t);
    const relay = await tlsRelay(t, pki);
    const listen = wsUrl(relay.url, '/$hc/echo');
    const sas = spawnSync(EDGE_RELAY_BIN, ['token', 'sas', '--uri', listen, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY], { cwd: ROOT, encoding: 'utf8', timeout: 20000 });
    assert.equal(sas.status, 0, sas.stderr);
    const control = await openWebSocket(`${listen}?sb-hc-action=listen`, { ...clientTls(pki), headers: { ServiceBusAuthorization: sas.stdout.trim() } });
    control.terminate();
    const client = spawnSync(
      EDGE_RELAY_BIN,
      ['token', 'client', '--hub', 'chat', '--key', HUB.accessKey, '--url', relay.url, '--role', 'webpubsub.joinLeaveGroup'],
      { cwd: ROOT, encoding: 'utf8', timeout: 20000 },
    );
    assert.equal(client.status, 0, client.stderr);
    const url = client.stdout.trim();
    assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/client\/hubs\/chat\?access_token=/);
    const ws = new WebSocket(url, 'json.webpubsub.azure.v1', clientTls(pki));
    t.after(() => ws.terminate());
    const connected = await withTimeout(new Promise<string>((r) => ws.once('message', (m) => r(String(m)))), 10000, 'connected');
    assert.equal(JSON.parse(connected).event, 'connected');
  });
});
