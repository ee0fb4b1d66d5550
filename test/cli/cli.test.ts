// The command line, run as a user runs it (bin/edge-relay).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { WebPubSubClient } from '@azure/web-pubsub-client';
import { SasAuthorizer } from '../../src/auth/sas-authorizer.ts';
import { verifyJwt } from '../../src/auth/jwt.ts';
import { startServeProcess, startTestRelay } from '../helpers/relay.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { EDGE_RELAY_BIN } from '../helpers/cli-process.ts';
import { withTimeout } from '../helpers/wait.ts';

function run(...args: string[]) {
  return spawnSync(EDGE_RELAY_BIN, args, { encoding: 'utf8', timeout: 20000 });
}

/** As run, without waiting for it: several at once (each is a node process starting). */
function runSoon(...args: string[]): Promise<{ status: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(EDGE_RELAY_BIN, args, { timeout: 20000 });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.on('close', (status) => resolve({ status, stdout }));
  });
}

describe('edge-relay command line', () => {
  it('lists its commands and explains each with --help', async () => {
    const [main, serve, token, client, bridgeHelp, bridgeBad, nonsense, badLevel, workersExponent, bridgeBoth] = await withTimeout(
      Promise.all([
        runSoon('--help'),
        runSoon('serve', '--help'),
        runSoon('token', '--help'),
        runSoon('token', 'client', '--help'),
        runSoon('bridge', '--help'),
        runSoon('bridge', '--relay', 'http://127.0.0.1:1'),
        runSoon('nonsense'),
        // Before: pino's stack trace and exit 1.
        runSoon('bridge', '--relay', 'http://127.0.0.1:1', '-L', '9:echo', '--token', 'SharedAccessSignature sr=x&sig=y&se=1&skn=k', '--log-level', 'bogus'),
        // Before: Number() read it, and 10 workers started.
        runSoon('serve', '--config', 'config/dev.json', '--port', '0', '--workers', '1e1'),
        // Before: both taken, which one signed unsaid.
        runSoon('bridge', '--relay', 'http://127.0.0.1:1', '-L', '9:echo', '--token', 'SharedAccessSignature sr=x&sig=y&se=1&skn=k', '--key-name', 'k', '--key', 'v'),
      ]),
      30000,
      'the commands',
    );
    assert.equal(main.status, 0);
    assert.match(main.stdout, /serve/);
    assert.match(main.stdout, /token sas/);
    assert.match(serve.stdout, /--config FILE/);
    assert.match(token.stdout, /--key-name NAME/);
    // Before: token's usage line named --key and --config for token client, not its --key-file.
    assert.match(token.stdout, /token client --hub HUB \(--key-file FILE \| --key KEY \| --config FILE\)/);
    assert.match(main.stdout, /token client/);
    assert.match(client.stdout, /--role ROLE/);
    assert.match(main.stdout, /bridge/);
    assert.equal(bridgeHelp.status, 0);
    assert.match(bridgeHelp.stdout, /-L \[bind:\]port:entity/);
    assert.match(bridgeHelp.stdout, /Example/);
    assert.equal(bridgeBad.status, 2);
    assert.equal(nonsense.status, 2);
    assert.equal(badLevel.status, 2);
    assert.equal(workersExponent.status, 2);
    assert.equal(bridgeBoth.status, 2);
  });

  it('serve takes an empty EDGE_RELAY_WORKERS as unset, as every EDGE_RELAY_* variable (before: refused, exit 2)', async (t) => {
    process.env.EDGE_RELAY_WORKERS = '';
    try {
      const relay = await startServeProcess(t, ['--config', 'config/dev.json', '--port', '0']);
      assert.match(relay.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      delete process.env.EDGE_RELAY_WORKERS;
    }
    // A --worker-watchdog that is no time (or under half a second) is a usage error, before anything starts.
    for (const bad of ['abc', '-1', '0.1', '1e3']) {
      const refused = run('serve', '--config', 'config/dev.json', '--port', '0', `--worker-watchdog=${bad}`);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /--worker-watchdog must be 0 \(off\) or seconds from 0\.5/);
    }
  });

  it('token sas prints a token the relay accepts for that entity and right', () => {
    const r = run('token', 'sas', '--uri', 'ws://127.0.0.1:9400/$hc/echo', '--key-name', 'RootManageSharedAccessKey', '--key', 'dev-only-key-0123456789', '--ttl', '60');
    assert.equal(r.status, 0, r.stderr);
    const token = r.stdout.trim();
    assert.match(token, /^SharedAccessSignature sr=http%3A%2F%2F127\.0\.0\.1%3A9400%2Fecho&sig=.+&se=\d+&skn=RootManageSharedAccessKey$/);
    const auth = new SasAuthorizer([{ keyName: 'RootManageSharedAccessKey', key: 'dev-only-key-0123456789', rights: ['Manage'] }]);
    assert.equal(auth.check({ token, entity: 'echo', right: 'Listen', hosts: ['127.0.0.1'] }).ok, true);
    assert.equal(auth.check({ token, entity: 'other', right: 'Listen', hosts: ['127.0.0.1'] }).ok, false);
    assert.equal(run('token', 'sas', '--uri', 'x').status, 2);
    // The key off the command line (which ps shows every user): from --key-file (its trailing newline dropped) or EDGE_RELAY_KEY.
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-key-'));
    try {
      writeFileSync(join(dir, 'key'), 'dev-only-key-0123456789\n');
      const fromFile = run('token', 'sas', '--uri', 'ws://127.0.0.1:9400/$hc/echo', '--key-name', 'RootManageSharedAccessKey', '--key-file', join(dir, 'key'));
      assert.equal(fromFile.status, 0, fromFile.stderr);
      assert.equal(auth.check({ token: fromFile.stdout.trim(), entity: 'echo', right: 'Listen', hosts: ['127.0.0.1'] }).ok, true);
      const fromEnv = spawnSync(EDGE_RELAY_BIN, ['token', 'sas', '--uri', 'ws://127.0.0.1:9400/$hc/echo', '--key-name', 'RootManageSharedAccessKey'], {
        encoding: 'utf8',
        timeout: 20000,
        env: { ...process.env, EDGE_RELAY_KEY: 'dev-only-key-0123456789' },
      });
      assert.equal(fromEnv.status, 0, fromEnv.stderr);
      assert.equal(auth.check({ token: fromEnv.stdout.trim(), entity: 'echo', right: 'Listen', hosts: ['127.0.0.1'] }).ok, true);
      const missing = run('token', 'sas', '--uri', 'ws://127.0.0.1/x', '--key-name', 'k', '--key-file', join(dir, 'none'));
      assert.equal(missing.status, 2);
      assert.match(missing.stderr, /--key-file .*none: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // An unknown flag, or a value that looks like one: a line naming it and exit 2 (before: a stack trace, and exit 1 or 0).
    // A --ttl that is no count of seconds, or whose expiry passes the 12 digits a SAS token's `se` has (the relay
    // refused such a token: TokenMalformed).
    const sas = ['--uri', 'ws://127.0.0.1/x', '--key-name', 'k', '--key', 'v'];
    for (const args of [['--bogus'], [...sas, '--ttl', '-10'], [...sas, '--ttl', '1e3'], [...sas, '--ttl', '0x10'], [...sas, '--ttl', '999999999999']]) {
      const refused = run('token', 'sas', ...args);
      assert.equal(refused.status, 2, refused.stderr);
      assert.match(refused.stderr, /^edge-relay token( sas)?: /);
      assert.doesNotMatch(refused.stderr, /\n\s+at /);
    }
  });

  it('token client prints an access URL the relay and the Web PubSub client accept', async (t) => {
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: 'chat', accessKey: 'dev-only-hub-key-0123456789' }] } });
    const r = run('token', 'client', '--config', 'config/dev.json', '--hub', 'chat', '--url', relay.url, '--user', 'alice',
      '--role', 'webpubsub.joinLeaveGroup.room', '--ttl', '60');
    assert.equal(r.status, 0, r.stderr);
    const url = r.stdout.trim();
    assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+\/client\/hubs\/chat\?access_token=[\w-]+\.[\w-]+\.[\w-]+$/);
    const client = new WebPubSubClient(url, {
      messageRetryOptions: { maxRetries: 0 },
      // Bounds how long the SDK's keep-alive timers outlive stop() (see test/compat/web-pubsub-client.test.ts).
      keepAliveIntervalInMs: 1000,
      keepAliveTimeoutInMs: 6000,
    });
    cleanupFor(t).after(() => client.stop());
    await withTimeout(client.start(), 5000, 'client start');
    await withTimeout(client.joinGroup('room'), 5000, 'join');
    await assert.rejects(client.joinGroup('elsewhere'));
    assert.equal([...(relay.pubsub.hub('chat')?.local.targets({ kind: 'user', name: 'alice' }) ?? [])].length > 0, true);
    assert.equal(run('token', 'client', '--hub', 'nohub', '--config', 'config/dev.json').status, 2);
    assert.equal(run('token', 'client', '--hub', 'chat').status, 2);
    // A hub given with its key is checked as the config checks names (before: a URL with a space in its path).
    for (const hub of ['bad hub', '1chat', 'a/b', 'x'.repeat(129)]) {
      const refused = run('token', 'client', '--hub', hub, '--key', 'dev-only-hub-key-0123456789');
      assert.equal(refused.status, 2, hub);
      assert.match(refused.stderr, /is not a hub name/, hub);
    }
    assert.equal(run('token', 'client', '--hub', 'Chat_2', '--key', 'dev-only-hub-key-0123456789').status, 0);
    // From a production config only the hub's own key is resolved: before, every secret the config
    // names (here a SAS key's variable, not set for this command) had to be at hand.
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-hub-key-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'hub.key'), 'dev-only-hub-key-0123456789\n');
    writeFileSync(
      join(dir, 'relay.json'),
      JSON.stringify({ sas: [{ keyName: 'root', key: '${EDGE_RELAY_TEST_UNSET_SAS_KEY}', rights: ['Manage'] }], pubsub: { hubs: [{ name: 'Chat', accessKeyFile: 'hub.key' }] } }),
    );
    const fromFile = run('token', 'client', '--config', join(dir, 'relay.json'), '--hub', 'chat', '--url', relay.url);
    assert.equal(fromFile.status, 0, fromFile.stderr);
    assert.match(fromFile.stdout.trim(), /\/client\/hubs\/Chat\?access_token=/);
  });

  it("token client, pub and sub take the hub's key from --key-file, off the command line every user reads in ps (found by review)", (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-hub-key-file-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const key = 'hub-key-from-a-file-0123456789abcdef';
    writeFileSync(join(dir, 'hub.key'), `${key}\n`);
    const r = run('token', 'client', '--hub', 'chat', '--key-file', join(dir, 'hub.key'), '--user', 'alice');
    assert.equal(r.status, 0, r.stderr);
    const token = new URL(r.stdout.trim()).searchParams.get('access_token') ?? '';
    assert.equal(verifyJwt(token, key).sub, 'alice', 'signed with the key in the file, its newline dropped');
    assert.match(run('token', 'client', '--hub', 'chat', '--key-file', join(dir, 'hub.key'), '--key', key).stderr, /--key or --key-file, not both/);
    writeFileSync(join(dir, 'empty.key'), '');
    assert.match(run('token', 'client', '--hub', 'chat', '--key-file', join(dir, 'empty.key')).stderr, /--key-file .*empty\.key is empty/);
    for (const command of ['pub', 'sub']) {
      const refused = run(command, '--hub', 'chat', '--group', 'g', '--key-file', join(dir, 'missing.key'));
      assert.equal(refused.status, 2, command);
      assert.match(refused.stderr, /--key-file .*missing\.key: ENOENT/, command);
    }
  });

  it('runs node in place of its launcher, with glibc told to keep freed memory, unless GLIBC_TUNABLES already sets that', async (t) => {
    const tunables = (env: Record<string, string>) => {
      // EDGE_RELAY_NODE_FLAGS reach node: here they make it print what the launcher exported and stop.
      const r = spawnSync(EDGE_RELAY_BIN, ['--help'], { encoding: 'utf8', timeout: 20000, env: { ...process.env, EDGE_RELAY_NODE_FLAGS: '-p process.env.GLIBC_TUNABLES', ...env } });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    };
    const ours = 'glibc.malloc.trim_threshold=67108864:glibc.malloc.top_pad=16777216';
    const { GLIBC_TUNABLES: _unset, ...clean } = process.env;
    assert.equal(spawnSync(EDGE_RELAY_BIN, ['--help'], { encoding: 'utf8', timeout: 20000, env: { ...clean, EDGE_RELAY_NODE_FLAGS: '-p process.env.GLIBC_TUNABLES' } }).stdout.trim(), ours);
    assert.equal(tunables({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }), `glibc.malloc.arena_max=2:${ours}`);
    assert.equal(tunables({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=1048576' }), 'glibc.malloc.trim_threshold=1048576');
    // The bench's own process (load generator, plain-TCP reference) runs with the same setting, so ours are not compared with a handicapped peer.
    const scripts = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }).scripts;
    assert.ok(scripts.bench.startsWith(`GLIBC_TUNABLES=${ours} node `), scripts.bench);

    // `serve` through the launcher: the process the caller started is node itself, so signals reach it.
    const relay = await startServeProcess(t, ['--config', 'config/dev.json', '--port', '0']);
    const pid = relay.child.pid!;
    assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0], /node$/);
  });
});
