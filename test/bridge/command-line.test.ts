// `edge-relay bridge` as users start it: what it binds for -L, and how it
// answers a --relay it cannot use (found by review).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/cli-process.ts';
import { until, withTimeout } from '../helpers/wait.ts';

/** The local addresses (hex, as /proc/net/tcp{,6} writes them) of the sockets listening on `port`. */
function listeningAddresses(port: number): string[] {
  const found: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (!local || state !== '0A') continue; // 0A: LISTEN
      const [address, portHex] = local.split(':');
      if (parseInt(portHex, 16) === port) found.push(address);
    }
  }
  return found;
}

describe('bridge -L bind address', () => {
  it('an empty bind (-L :PORT:entity) listens on 127.0.0.1 only, as the help says (before: on every interface)', async (t) => {
    // No relay is needed to listen: nothing connects to the port.
    const bridge = runCli(t, ['bridge', '--relay', 'http://127.0.0.1:9', '--token', 'x', '-L', ':0:web']);
    await until(() => bridge.lines.some((l) => l.startsWith('forwarding ')), 10000, `the forwarding line (stderr: ${bridge.stderr()})`);
    const line = bridge.lines.find((l) => l.startsWith('forwarding '))!;
    const match = /^forwarding 127\.0\.0\.1:(\d+) -> web$/.exec(line);
    assert.ok(match, line);
    // 0100007F: 127.0.0.1 in /proc/net/tcp's byte order; every interface would be 00000000 (or :: in tcp6).
    assert.deepEqual(listeningAddresses(Number(match[1])), ['0100007F']);
  });
});

describe('bridge --relay', () => {
  // Not a URL; a URL with a fragment, which ws refuses once the bridge adds the entity's path after it.
  for (const [relay, forward] of [
    ['http://relay host:9400', ['-L', '0:web']],
    ['http://relay host:9400', ['-R', 'web:127.0.0.1:9']],
    ['http://127.0.0.1:9/#x', ['-L', '0:web']],
  ] as const) {
    it(`${relay} is a usage error at start for ${forward[0]} (exit 2, one line naming --relay; before: a crash on first use)`, async (t) => {
      const bridge = runCli(t, ['bridge', '--relay', relay, '--token', 'x', ...forward]);
      const code = await withTimeout(bridge.exited, 10000, 'the bridge to exit');
      assert.equal(code, 2, bridge.stderr());
      const first = bridge.stderr().split('\n')[0];
      assert.match(first, /^edge-relay bridge: --relay /);
      assert.deepEqual(bridge.lines, []);
    });
  }
});

describe('bridge --token', () => {
  it('with a character a header cannot carry (a token file with CRLF) is a usage error at start (exit 2; before: -R crashed with ERR_INVALID_CHAR)', async (t) => {
    for (const forward of [['-R', 'web:127.0.0.1:9'], ['-L', '0:web']]) {
      const bridge = runCli(t, ['bridge', '--relay', 'http://127.0.0.1:9', '--token', 'SharedAccessSignature sr=x&sig=y&se=1&skn=k\r', ...forward]);
      const code = await withTimeout(bridge.exited, 10000, 'the bridge to exit');
      assert.equal(code, 2, bridge.stderr());
      assert.match(bridge.stderr().split('\n')[0], /^edge-relay bridge: --token /);
    }
  });
});

describe('bridge --token that has expired', () => {
  // A JWT (an Entra ID token, as Azure Relay takes one) whose `exp` has passed: read without its key.
  const pastJwt = ['{"alg":"HS256","typ":"JWT"}', `{"exp":${Math.floor(Date.now() / 1000) - 60}}`].map((part) => Buffer.from(part).toString('base64url')).join('.') + '.c2ln';
  for (const [kind, token] of [
    ['a SAS token (se)', `SharedAccessSignature sr=x&sig=y&se=${Math.floor(Date.now() / 1000) - 60}&skn=k`],
    ['a JWT (exp)', pastJwt],
    ['a JWT after Bearer', `Bearer ${pastJwt}`],
  ] as const) {
    it(`${kind} is refused at start for -R and -L (exit 2, one line naming --token and its expiry; before: -R retried the relay's 401 for ever, -L listened)`, async (t) => {
      for (const forward of [['-R', 'web:127.0.0.1:9'], ['-L', '0:web']]) {
        const bridge = runCli(t, ['bridge', '--relay', 'http://127.0.0.1:9', '--token', token, ...forward]);
        const code = await withTimeout(bridge.exited, 10000, `the bridge ${forward[0]} to exit`);
        assert.equal(code, 2, bridge.stderr());
        assert.match(bridge.stderr(), /^edge-relay bridge: --token expired at \d{4}-\d\d-\d\dT[^\n]*\n$/);
        assert.deepEqual(bridge.lines, []);
      }
    });
  }

  it('a token whose expiry cannot be read (not SAS, not a JWT) is left to the relay: the bridge starts', async (t) => {
    const bridge = runCli(t, ['bridge', '--relay', 'http://127.0.0.1:9', '--token', 'opaque-token', '-L', '0:web']);
    await until(() => bridge.lines.some((l) => l.startsWith('forwarding ')), 10000, `the forwarding line (stderr: ${bridge.stderr()})`);
  });
});

describe('bridge numeric options', () => {
  it('a --buffer or --ttl that is no bounded whole number in digits is a usage error at start (exit 2; before: --buffer 1e300 turned backpressure off, --ttl 1e21 minted tokens the relay refuses)', async (t) => {
    for (const [option, value] of [
      ['--buffer', '1e300'],
      ['--buffer', '99999999999999999999'],
      ['--buffer', '2147483648'],
      ['--buffer', '0x100000'],
      ['--ttl', '1e21'],
      ['--ttl', '99999999999999'],
      ['--keepalive', '1e1'],
    ] as const) {
      const bridge = runCli(t, ['bridge', '--relay', 'http://127.0.0.1:9', '--token', 'x', option, value, '-R', 'web:127.0.0.1:9']);
      const code = await withTimeout(bridge.exited, 10000, `the bridge to exit (${option} ${value})`);
      assert.equal(code, 2, `${option} ${value}: ${bridge.stderr()}`);
      assert.match(bridge.stderr().split('\n')[0], new RegExp(`^edge-relay bridge: ${option} `));
    }
  });
});
