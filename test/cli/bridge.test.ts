// edge-relay bridge as users run it: two bridge processes (-R on the
// listening side, -L on the dialing side) around a real relay, moving bytes
// and an ordinary TCP protocol (HTTP) through a hybrid connection.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, get as httpGet, Agent } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { runCli, type CliProcess } from '../helpers/cli-process.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startServeProcess, startTestRelay, testConfig } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';


type BridgeProcess = CliProcess;

/** Starts `edge-relay bridge ARGS`; resolves once it printed `ready` lines matching each pattern. */
async function startBridge(t: TestContext, relayUrl: string, args: string[], ready: RegExp[]): Promise<BridgeProcess> {
  const bridge = runCli(t, ['bridge', '--relay', relayUrl, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, ...args]);
  await until(() => ready.every((r) => bridge.lines.some((l) => r.test(l))), 10000, `bridge ready: ${ready.join(', ')}`);
  return bridge;
}

function localPort(bridge: BridgeProcess): number {
  const line = bridge.lines.find((l) => l.startsWith('forwarding '))!;
  return Number(/:(\d+) -> /.exec(line)![1]);
}

describe('edge-relay bridge', () => {
  it('moves 100 MB through a hybrid connection byte-exact, both ways', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'tunnel', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    await startBridge(t, relay.url, ['-R', `tunnel:127.0.0.1:${echo.port}`], [/^listening on tunnel -> /]);
    const dialer = await startBridge(t, relay.url, ['-L', '0:tunnel'], [/^forwarding 127\.0\.0\.1:\d+ -> tunnel$/]);

    const total = 100 * 1024 * 1024;
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let receivedBytes = 0;
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    const done = new Promise<void>((resolve, reject) => {
      socket.on('data', (d: Buffer) => {
        received.update(d);
        receivedBytes += d.length;
        if (receivedBytes >= total) resolve();
      });
      socket.on('error', reject);
      socket.on('close', () => reject(new Error(`closed after ${receivedBytes} bytes`)));
    });
    const chunk = 256 * 1024;
    let written = 0;
    const writeMore = () => {
      while (written < total) {
        const piece = randomBytes(chunk);
        sent.update(piece);
        written += piece.length;
        if (!socket.write(piece)) return void socket.once('drain', writeMore);
      }
    };
    socket.once('connect', writeMore);
    await withTimeout(done, 90000, '100 MB echoed through the bridge');
    assert.equal(receivedBytes, total);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  it('carries HTTP: many concurrent requests, each on its own relayed connection', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: true }] });
    const server = createHttpServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`you asked for ${req.url}`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanupFor(t).after(() => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    });
    const port = (server.address() as { port: number }).port;
    await startBridge(t, relay.url, ['-R', `web:127.0.0.1:${port}`], [/^listening on web/]);
    const dialer = await startBridge(t, relay.url, ['-L', '127.0.0.1:0:web'], [/^forwarding /]);
    const agent = new Agent({ keepAlive: false });
    cleanupFor(t).after(() => agent.destroy());
    const fetchOne = (i: number) =>
      new Promise<string>((resolve, reject) => {
        httpGet({ host: '127.0.0.1', port: localPort(dialer), path: `/item/${i}`, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(`${res.statusCode} ${body}`));
        }).on('error', reject);
      });
    const answers = await withTimeout(Promise.all(Array.from({ length: 40 }, (_, i) => fetchOne(i))), 30000, '40 requests');
    answers.forEach((a, i) => assert.equal(a, `200 you asked for /item/${i}`));
  });

  it('closes the local connection when the target cannot be reached, and says why', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'nowhere', requiresClientAuthorization: true }] });
    // A port nothing listens on: bind one, note it, close it.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const deadPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const listener = await startBridge(t, relay.url, ['-R', `nowhere:127.0.0.1:${deadPort}`], [/^listening on nowhere/]);
    const dialer = await startBridge(t, relay.url, ['-L', '0:nowhere'], [/^forwarding /]);
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    await withTimeout(new Promise((r) => socket.once('close', r)), 10000, 'local connection closed');
    await until(() => /bridge\.target_unreachable/.test(listener.stderr()), 5000, 'listener logs the unreachable target');
    await until(() => /"status":502/.test(dialer.stderr()), 5000, 'dialer logs the 502');
  });

  it('re-opens a lost control channel with backoff and logs why', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bridge-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(testConfig({ hybridConnections: [{ name: 'again', requiresClientAuthorization: true }] })));
    const relay = await startServeProcess(t, ['--config', file, '--port', '0']);
    const echo = await startTcpEcho(t);
    const listener = await startBridge(t, relay.url, ['-R', `again:127.0.0.1:${echo.port}`], [/^listening on again/]);
    await relay.stop();
    await until(() => /bridge\.control_lost/.test(listener.stderr()), 10000, 'control_lost logged');
    assert.match(listener.stderr(), /"retryInMs":\d+/);
    // The relay comes back on the same port: the bridge listens again and traffic flows.
    const again = await startServeProcess(t, ['--config', file, '--port', String(relay.port)]);
    await until(() => (listener.stderr().match(/bridge\.listening/g) ?? []).length >= 2, 20000, 'bridge listening again');
    const dialer = await startBridge(t, again.url, ['-L', '0:again'], [/^forwarding /]);
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    socket.write('ping through the relay');
    const echoed = await withTimeout(new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString()))), 10000, 'echo');
    assert.equal(echoed, 'ping through the relay');
  });
});
