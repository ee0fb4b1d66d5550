// `edge-relay serve` takes SIGTERM/SIGINT as a stop (a drain, exit 0) from
// the moment it serves, not only once it says `listening on`: a lone edge
// waiting for JetStream serves already, and the primary of `--workers`
// may be told to stop while its workers start. Before (found by review):
// both ended by the signal's default action (143), without a drain, and the
// primary left its workers' socket folder behind. Here NATS is a port where
// nothing listens: an edge with a durable hub waits bus.requestTimeoutMs
// (20 s) for it before it says it is ready.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDirFor } from '../helpers/cleanup.ts';
import { runCli } from '../helpers/cli-process.ts';
import { until, withTimeout } from '../helpers/wait.ts';

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A relay on a free port of 127.0.0.1, logging at info, with a development key. */
const BASE = {
  listen: { host: '127.0.0.1', port: 0 },
  log: { level: 'info' },
  sas: [{ keyName: 'RootManageSharedAccessKey', key: 'dev-only-key-0123456789', rights: ['Manage'] }],
};

/** `config` as relay.json in `dir`; its path. */
function configFile(dir: string, config: object): string {
  const file = join(dir, 'relay.json');
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** A durable hub and NATS where nothing listens: the edge serves, and says it is ready after `requestTimeoutMs`. */
async function waitingConfig(dir: string, requestTimeoutMs = 20000): Promise<string> {
  return configFile(dir, {
    ...BASE,
    pubsub: { hubs: [{ name: 'chat', accessKey: 'dev-only-hub-key-0123456789', durable: true }] },
    bus: { kind: 'nats', servers: [`nats://127.0.0.1:${await closedPort()}`], requestTimeoutMs },
    timeouts: { shutdownMs: 2000 },
  });
}

describe('serve: stop signals before it says it is ready', () => {
  it('a lone edge waiting for JetStream drains on SIGTERM and exits 0', async (t) => {
    const dir = tempDirFor(t, 'stop-signals-');
    const relay = runCli(t, ['serve', '--config', await waitingConfig(dir)]);
    await until(() => relay.stderr().includes('"event":"relay.listening"'), 15000, 'the edge to listen');
    relay.signal('SIGTERM');
    assert.equal(await withTimeout(relay.exited, 15000, 'the edge to exit'), 0, relay.stderr());
    assert.match(relay.stderr(), /"event":"relay.stopped"/);
    assert.deepEqual(relay.lines, [], 'it never said it was ready');
  });

  it('the primary of --workers stops its starting workers on SIGTERM, exits 0 and leaves no socket folder', async (t) => {
    const dir = tempDirFor(t, 'stop-signals-');
    const sockets = tempDirFor(t, 'stop-signals-tmp-');
    const relay = runCli(t, ['serve', '--config', await waitingConfig(dir), '--workers', '2'], { TMPDIR: sockets });
    await until(() => relay.stderr().includes('"event":"relay.listening"'), 20000, 'a worker to listen');
    assert.ok(readdirSync(sockets).some((name) => name.startsWith('edge-relay-w-')), 'the workers have their socket folder');
    relay.signal('SIGTERM');
    assert.equal(await withTimeout(relay.exited, 20000, 'the primary to exit'), 0, relay.stderr());
    assert.match(relay.stderr(), /"event":"relay.stopping"/);
    assert.deepEqual(readdirSync(sockets).filter((name) => name.startsWith('edge-relay-w-')), []);
  });
});

describe('serve: SIGHUP while it starts', () => {
  it('a SIGHUP before serve has read its config is taken and said, not the end of the process', async (t) => {
    const relay = runCli(t, ['serve', '--config', configFile(tempDirFor(t, 'stop-signals-'), BASE)]);
    // Node starts, loads tsx and the CLI, then reads the config: a second or more. Before, a SIGHUP in that time ended
    // the process (129, not a line). The first goes as soon as the process catches the signal (SigCgt in /proc, bit 0:
    // before node runs the CLI's first line nothing can), so it comes before the config is read.
    const catchesHangup = () => {
      try {
        const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${relay.pid}/status`, 'utf8'))?.[1];
        return mask !== undefined && (BigInt(`0x${mask}`) & 1n) === 1n;
      } catch {
        return false;
      }
    };
    await until(catchesHangup, 15000, 'the process to catch SIGHUP');
    let sent = 0;
    while (relay.lines.length === 0 && sent < 50) {
      relay.signal('SIGHUP');
      sent++;
      const exit = await Promise.race([relay.exited.then((code) => ({ code })), new Promise((r) => setTimeout(r, 100))]);
      assert.equal(exit, undefined, `ended by SIGHUP number ${sent}: ${JSON.stringify(exit)} ${relay.stderr()}`);
    }
    await until(() => relay.lines.some((line) => line.startsWith('listening on')), 15000, 'the relay to listen');
    // The first came before the config was read (before: caught only from then on): counted and said.
    assert.match(relay.stderr(), /"event":"relay\.signal","signal":"SIGHUP","count":[1-9]/);
    relay.signal('SIGHUP');
    await until(() => relay.stderr().includes('"event":"config.reloaded"'), 10000, 'a reload once it runs');
    relay.signal('SIGTERM');
    assert.equal(await withTimeout(relay.exited, 15000, 'the relay to exit'), 0, relay.stderr());
  });
});

describe('serve: SIGHUP once the config is read, before the relay listens', () => {
  it('is owed and done once it listens, not refused and lost', async (t) => {
    // The edge serves, but says `listening on` only after bus.requestTimeoutMs (here 3 s) of waiting for JetStream.
    const relay = runCli(t, ['serve', '--config', await waitingConfig(tempDirFor(t, 'stop-signals-'), 3000)]);
    await until(() => relay.stderr().includes('"event":"relay.listening"'), 15000, 'the edge to serve');
    assert.deepEqual(relay.lines, [], 'not said ready yet');
    relay.signal('SIGHUP');
    await until(() => relay.stderr().includes('"event":"config.reload_deferred"'), 5000, 'the reload owed');
    await until(() => relay.lines.some((line) => line.startsWith('listening on')), 15000, 'the relay to say it listens');
    // Before: refused ("the relay is still starting") and never done.
    await until(() => relay.stderr().includes('"event":"config.reloaded"'), 10000, 'the owed reload');
    relay.signal('SIGTERM');
    assert.equal(await withTimeout(relay.exited, 15000, 'the relay to exit'), 0, relay.stderr());
  });
});
