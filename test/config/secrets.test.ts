// Secrets out of the config file (docs/security.md, "Secrets out of the
// config file"): keys from files and environment variables, read whenever
// the config is loaded; and `serve` refusing weak keys off loopback.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load.ts';
import { isLoopbackHost, weakKeys, weakKeysRefusal } from '../../src/config/secrets.ts';
import { EDGE_RELAY_BIN } from '../helpers/cli-process.ts';
import { startServeProcess } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const LONG = 'k'.repeat(40);

function folder(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secrets-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, name: string, value: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

const rejectsWith = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (err: Error) => err instanceof ConfigError && pattern.test(err.message));

describe('secrets out of the config file', () => {
  it('reads sas[].keyFile and pubsub.hubs[].accessKeyFile relative to the config file, without their trailing newline', (t) => {
    const dir = folder(t);
    write(dir, 'root.key', `${LONG}\n`);
    write(dir, 'hub.key', `${LONG}-hub\r\n`);
    const file = write(dir, 'config.json', {
      sas: [{ keyName: 'root', keyFile: 'root.key', rights: ['Manage'] }],
      pubsub: { hubs: [{ name: 'chat', accessKeyFile: 'hub.key' }] },
    });
    const config = loadConfig(file, {}, {});
    assert.equal(config.sas[0].key, LONG);
    assert.equal(config.sas[0].keyFile, join(dir, 'root.key'));
    assert.equal(config.pubsub.hubs[0].accessKey, `${LONG}-hub`);
    // Read again on every load: a rotated file is what the next reload sees.
    write(dir, 'root.key', `${LONG}-rotated\n`);
    assert.equal(loadConfig(file, {}, {}).sas[0].key, `${LONG}-rotated`);
  });

  it('takes ${ENV_NAME} from the environment for keys, access keys and the NATS password and token', (t) => {
    const dir = folder(t);
    const file = write(dir, 'config.json', {
      sas: [{ keyName: 'root', key: '${ROOT_KEY}', rights: ['Manage'] }],
      pubsub: { hubs: [{ name: 'chat', accessKey: '${HUB_KEY}' }] },
      bus: { kind: 'nats', servers: ['nats://127.0.0.1:4222'], user: 'edge', pass: '${NATS_PASS}' },
    });
    const config = loadConfig(file, { ROOT_KEY: LONG, HUB_KEY: `${LONG}-hub`, NATS_PASS: 'secret' }, {});
    assert.equal(config.sas[0].key, LONG);
    assert.equal(config.pubsub.hubs[0].accessKey, `${LONG}-hub`);
    assert.equal(config.bus.pass, 'secret');
  });

  it('names the key that failed: an unset variable, an unreadable or empty file, both ways at once', (t) => {
    const dir = folder(t);
    write(dir, 'empty.key', '\n');
    const cases: [unknown, RegExp][] = [
      [{ sas: [{ keyName: 'r', key: '${NOPE}', rights: ['Send'] }] }, /\/sas\/0\/key: environment variable NOPE is not set/],
      [{ sas: [{ keyName: 'r', keyFile: 'missing.key', rights: ['Send'] }] }, /\/sas\/0\/keyFile: cannot read missing\.key: ENOENT/],
      [{ pubsub: { hubs: [{ name: 'h', accessKeyFile: 'empty.key' }] } }, /\/pubsub\/hubs\/0\/accessKeyFile: empty\.key is empty/],
      [{ sas: [{ keyName: 'r', key: LONG, keyFile: 'x', rights: ['Send'] }] }, /\/sas\/0: give key or keyFile, not both/],
      [{ sas: [{ keyName: 'r', rights: ['Send'] }] }, /\/sas\/0/],
      [{ metrics: { bearerTokenFile: 'missing.token' } }, /\/metrics\/bearerTokenFile: cannot read/],
    ];
    for (const [raw, pattern] of cases) rejectsWith(() => loadConfig(write(dir, 'c.json', raw), {}, {}), pattern);
  });

  it("reads the metrics bearer token as Prometheus reads its credentials_file, white space around it trimmed, and refuses one no header carries (found by review)", (t) => {
    const dir = folder(t);
    const token = 'metrics-token-0123456789-0123456789';
    write(dir, 'spaced.token', `  ${token} \t\n`);
    // Before: kept with its trailing space and tab, so the token Prometheus sent (trimmed) never matched: 401.
    assert.equal(loadConfig(write(dir, 'c.json', { metrics: { bearerTokenFile: 'spaced.token' } }), {}, {}).metrics.bearerToken, token);
    write(dir, 'split.token', 'metrics token\n');
    rejectsWith(() => loadConfig(write(dir, 'c.json', { metrics: { bearerTokenFile: 'split.token' } }), {}, {}), /\/metrics\/bearerTokenFile: \S*split\.token holds a token with white space inside/);
    write(dir, 'blank.token', ' \t\n');
    rejectsWith(() => loadConfig(write(dir, 'c.json', { metrics: { bearerTokenFile: 'blank.token' } }), {}, {}), /\/metrics\/bearerTokenFile: \S*blank\.token holds only white space/);
  });

  it('says where a refused key came from: its file or its variable, never its value (before: only the key it fills)', (t) => {
    const dir = folder(t);
    write(dir, 'short.key', 'tiny5\n');
    rejectsWith(() => loadConfig(write(dir, 'c.json', { pubsub: { hubs: [{ name: 'h', accessKeyFile: 'short.key' }] } }), {}, {}), /\/pubsub\/hubs\/0\/accessKey: .* \(read from accessKeyFile short\.key\)$/);
    rejectsWith(() => loadConfig(write(dir, 'c.json', { sas: [{ keyName: 'r', key: '${SHORT_KEY}', rights: ['Send'] }] }), { SHORT_KEY: 'tiny5' }, {}), /\/sas\/0\/key: .* \(read from environment variable SHORT_KEY\)$/);
    assert.throws(() => loadConfig(write(dir, 'c.json', { pubsub: { hubs: [{ name: 'h', accessKeyFile: 'short.key' }] } }), {}, {}), (err: Error) => !err.message.includes('tiny5'));
  });

  it('checks trustProxy entries, TLS client-certificate settings and NATS credentials together', () => {
    const load = (raw: object) => () => {
      const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secrets-'));
      try {
        return loadConfig(write(dir, 'c.json', raw), {}, {});
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    rejectsWith(load({ listen: { trustProxy: ['10.0.0.0/33'] } }), /\/listen\/trustProxy\/0/);
    rejectsWith(load({ listen: { trustProxy: ['proxy.example.com'] } }), /\/listen\/trustProxy\/0/);
    assert.deepEqual(load({ listen: { trustProxy: ['10.0.0.0/8', '::1', 'fd00::/8'] } })().listen.trustProxy, ['10.0.0.0/8', '::1', 'fd00::/8']);
    rejectsWith(load({ listen: { tls: { certFile: 'c', keyFile: 'k', requestCert: true } } }), /requestCert: needs listen\.tls\.caFile/);
    rejectsWith(load({ listen: { tls: { certFile: 'c', keyFile: 'k', caFile: 'ca', requireClientCert: 'listeners' } } }), /requireClientCert: needs listen\.tls\.requestCert/);
    rejectsWith(load({ bus: { kind: 'nats', servers: ['nats://127.0.0.1:1'], token: 't', credsFile: 'c' } }), /one way to authenticate/);
    rejectsWith(load({ bus: { kind: 'nats', servers: ['nats://127.0.0.1:1'], tls: { certFile: 'c' } } }), /\/bus\/tls/);
  });

  it('refuses a hub whose secondary key is its access key (before: taken without a word, a rotation gone wrong), wherever each comes from', (t) => {
    const dir = folder(t);
    write(dir, 'hub.key', `${LONG}\n`);
    const hubWith = (hub: object) => write(dir, 'c.json', { pubsub: { hubs: [{ name: 'chat', ...hub }] } });
    const same = /\/pubsub\/hubs\/0\/secondaryAccessKey: the same key as accessKey \(chat\)/;
    rejectsWith(() => loadConfig(hubWith({ accessKey: LONG, secondaryAccessKey: LONG }), {}, {}), same);
    rejectsWith(() => loadConfig(hubWith({ accessKey: '${HUB_KEY}', secondaryAccessKeyFile: 'hub.key' }), { HUB_KEY: LONG }, {}), same);
    assert.equal(loadConfig(hubWith({ accessKey: LONG, secondaryAccessKey: `${LONG}-2` }), {}, {}).pubsub.hubs[0].secondaryAccessKey, `${LONG}-2`);
  });
});

describe('serve refuses weak keys off loopback', () => {
  const config = (host: string, key: string, hubKey = LONG) =>
    loadConfigFrom({ listen: { host }, sas: [{ keyName: 'root', key, rights: ['Manage'] }], pubsub: { hubs: [{ name: 'chat', accessKey: hubKey }] } });

  it('names each key shorter than 32 bytes or published with edge-relay, never the key itself', () => {
    const c = config('0.0.0.0', 'short-key-0123456789', 'dev-only-hub-key-0123456789');
    assert.deepEqual(weakKeys(c), ['/sas/0/key (root) is 20 bytes, fewer than 32', '/pubsub/hubs/0/accessKey (chat) is a development key published with edge-relay']);
    const refusal = weakKeysRefusal(c, false)!;
    assert.match(refusal, /refusing to serve on 0\.0\.0\.0/);
    assert.match(refusal, /--dev/);
    assert.ok(!refusal.includes('short-key-0123456789'));
    assert.equal(weakKeysRefusal(c, true), undefined, '--dev allows them');
    assert.equal(weakKeysRefusal(config('0.0.0.0', LONG), false), undefined);
    assert.equal(weakKeysRefusal(config('compose-demo', 'compose-demo-key-change-me-0123456789'), false)?.includes('development key'), true);
  });

  it('holds the metrics bearer token to the same rule (before: a 1-byte token was taken on 0.0.0.0)', (t) => {
    const dir = folder(t);
    const base = { listen: { host: '0.0.0.0' }, sas: [{ keyName: 'root', key: LONG, rights: ['Manage'] }] };
    writeFileSync(join(dir, 'short-token'), 'a\n');
    const weak = loadConfig(write(dir, 'weak.json', { ...base, metrics: { bearerTokenFile: 'short-token' } }), {}, {});
    assert.deepEqual(weakKeys(weak), ['the token in /metrics/bearerTokenFile is 1 bytes, fewer than 32']);
    assert.match(weakKeysRefusal(weak, false)!, /bearerTokenFile/);
    writeFileSync(join(dir, 'long-token'), `${LONG}\n`);
    assert.equal(weakKeysRefusal(loadConfig(write(dir, 'strong.json', { ...base, metrics: { bearerTokenFile: 'long-token' } }), {}, {}), false), undefined);
  });

  it('allows them on loopback, where nobody else can reach the port', () => {
    for (const host of ['127.0.0.1', '127.0.1.1', 'localhost', '::1', '[::1]']) assert.ok(isLoopbackHost(host), host);
    for (const host of ['0.0.0.0', '::', '10.1.2.3', 'relay.example.com']) assert.ok(!isLoopbackHost(host), host);
    assert.equal(weakKeysRefusal(config('127.0.0.1', 'short-key-0123456789'), false), undefined);
  });

  it('refuses them on loopback reached from elsewhere: a proxy in listen.trustProxy, a publicUrl naming another host (found by review)', () => {
    const weak = 'dev-only-key-0123456789';
    const on = (listen: object, publicUrl?: string) =>
      weakKeysRefusal(loadConfigFrom({ listen: { host: '127.0.0.1', ...listen }, ...(publicUrl ? { publicUrl } : {}), sas: [{ keyName: 'root', key: weak, rights: ['Manage'] }] }), false);
    // Before: loopback alone let the published key serve behind nginx on the same machine, for anyone nginx serves.
    assert.match(on({ trustProxy: ['127.0.0.1'] }) ?? 'served', /refusing to serve on 127\.0\.0\.1, reached behind the proxies of listen\.trustProxy, with weak keys/);
    assert.match(on({}, 'https://relay.example.com') ?? 'served', /refusing to serve on 127\.0\.0\.1, reached as relay\.example\.com \(publicUrl\), with weak keys/);
    assert.equal(on({}, 'http://127.0.0.1:9400'), undefined, 'a publicUrl on loopback is this machine');
    assert.equal(on({}, 'ws://localhost:9400'), undefined);
    assert.equal(on({}), undefined, 'loopback, nothing in front: npm start');
    const dev = loadConfigFrom({ listen: { host: '127.0.0.1', trustProxy: ['127.0.0.1'] }, sas: [{ keyName: 'root', key: weak, rights: ['Manage'] }] });
    assert.equal(weakKeysRefusal(dev, true), undefined, '--dev allows them');
  });

  it('stops `serve` with exit code 78 and says why; config/dev.json (npm start) still starts', async (t) => {
    const dir = folder(t);
    const file = write(dir, 'c.json', { listen: { host: '0.0.0.0', port: 0 }, sas: [{ keyName: 'root', key: 'short-key-0123456789', rights: ['Manage'] }] });
    const r = spawnSync(EDGE_RELAY_BIN, ['serve', '--config', file], { encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /refusing to serve on 0\.0\.0\.0 with weak keys: \/sas\/0\/key \(root\) is 20 bytes, fewer than 32/);
    const dev = await startServeProcess(t, ['--config', 'config/dev.json', '--port', '0']);
    assert.match(dev.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  });
});

describe('weak keys on reload', () => {
  it('are checked against the address the relay is bound to, not a listen.host the reload cannot apply', async (t) => {
    const dir = folder(t);
    const strong = 'strong-key-0123456789abcdef0123456789abcdef';
    const file = write(dir, 'c.json', { listen: { host: '0.0.0.0', port: 0 }, log: { level: 'info' }, sas: [{ keyName: 'root', key: strong, rights: ['Manage'] }] });
    const relay = await startServeProcess(t, ['--config', file, '--port', '0']);
    // A file that says loopback (which needs a restart to take effect) with a weak key: the relay still listens on 0.0.0.0.
    write(dir, 'c.json', { listen: { host: '127.0.0.1', port: 0 }, log: { level: 'info' }, sas: [{ keyName: 'root', key: 'short-key-0123456789', rights: ['Manage'] }] });
    relay.child.kill('SIGHUP');
    // Before: the check saw 127.0.0.1 and the weak key went live on a network-facing port.
    await until(() => /config\.reload_refused/.test(relay.stderr()), 10000, 'the reload refused');
    assert.match(relay.stderr(), /refusing to serve on 0\.0\.0\.0 with weak keys/);
  });

  it('are checked against the publicUrl the relay runs with, not one dropped from the file (which needs a restart; found by review)', async (t) => {
    const dir = folder(t);
    const strong = 'strong-key-0123456789abcdef0123456789abcdef';
    const config = (publicUrl: string | undefined, key: string) => ({ listen: { host: '127.0.0.1', port: 0 }, ...(publicUrl ? { publicUrl } : {}), log: { level: 'info' }, sas: [{ keyName: 'root', key, rights: ['Manage'] }] });
    const file = write(dir, 'c.json', config('https://relay.example.com', strong));
    const relay = await startServeProcess(t, ['--config', file]);
    // A file without publicUrl (a change that waits for a restart) and a weak key: the relay is still reached as relay.example.com.
    write(dir, 'c.json', config(undefined, 'short-key-0123456789'));
    relay.child.kill('SIGHUP');
    // Before: the check saw no publicUrl and the weak key went live behind the proxy that serves relay.example.com.
    await until(() => /config\.reload_(refused|reloaded)|config\.reloaded/.test(relay.stderr()), 10000, 'the reload to be done');
    assert.match(relay.stderr(), /config\.reload_refused/);
    assert.match(relay.stderr(), /reached as relay\.example\.com \(publicUrl\), with weak keys/);
  });
});

function loadConfigFrom(raw: object) {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-secrets-'));
  try {
    return loadConfig(write(dir, 'c.json', raw), {}, {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
