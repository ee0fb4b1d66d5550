import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { SasAuthorizer, resourceCovers, scopeSegment } from '../../src/auth/sas-authorizer.ts';
import { createSasToken, parseSasToken, resourceForUrl } from '../../src/auth/sas-token.ts';
import { route } from '../../src/server/router.ts';

const require = createRequire(import.meta.url);
const hycoWs = require('hyco-ws') as { createRelayToken(uri: string, keyName: string, key: string, ttl?: number): string };
const hycoHttps = require('hyco-https') as { createRelayToken(uri: string, keyName: string, key: string, ttl?: number): string };

describe('SAS token format (worked example of the spec)', () => {
  it('signs the URL-encoded resource, a newline and the expiry with HMAC-SHA256', () => {
    const expected = createHmac('sha256', 'secret').update('http%3A%2F%2F127.0.0.1%2Fecho\n1700000000').digest('base64');
    const token = createSasToken('http://127.0.0.1/echo', 'root', 'secret', 1700000000);
    assert.equal(
      token,
      `SharedAccessSignature sr=http%3A%2F%2F127.0.0.1%2Fecho&sig=${encodeURIComponent(expected)}&se=1700000000&skn=root`,
    );
  });

  for (const [name, client] of [['hyco-ws', hycoWs], ['hyco-https', hycoHttps]] as const) {
    it(`matches ${name}'s createRelayToken byte for byte, for the expiry it chose`, () => {
      const theirs = client.createRelayToken('ws://127.0.0.1:9000/$hc/echo?sb-hc-action=listen', 'root', 'secret');
      const se = Number(parseSasToken(theirs)!.expiresAt);
      assert.equal(createSasToken(resourceForUrl('ws://127.0.0.1:9000/$hc/echo?sb-hc-action=listen'), 'root', 'secret', se), theirs);
    });
  }
});

describe('SAS scope', () => {
  it('matches by host without port, any scheme, path as segment prefix', () => {
    assert.ok(resourceCovers('http://127.0.0.1/echo', ['echo'], ['127.0.0.1']));
    assert.ok(resourceCovers('sb://127.0.0.1/', ['echo'], ['127.0.0.1']));
    assert.ok(resourceCovers('https://RELAY.example/ECHO', ['echo', 'a'], ['relay.example']));
    assert.ok(resourceCovers('http://h/$hc/echo', ['echo'], ['h']));
    assert.ok(!resourceCovers('http://127.0.0.1/echo2', ['echo'], ['127.0.0.1']));
    assert.ok(!resourceCovers('http://127.0.0.1/echo/a', ['echo'], ['127.0.0.1']));
    assert.ok(!resourceCovers('http://other/echo', ['echo'], ['127.0.0.1']));
    assert.ok(!resourceCovers('not a url', ['echo'], ['127.0.0.1']));
  });

  it('compares the entity name in any case and the path below it as sent, as a listener routes it (found by review)', () => {
    assert.ok(resourceCovers('http://h/WEB/public', ['web', 'public', 'x'], ['h']));
    assert.ok(!resourceCovers('http://h/web/public', ['web', 'PUBLIC', 'x'], ['h']));
    assert.ok(!resourceCovers('http://h/web/PUBLIC', ['web', 'public'], ['h']));
    assert.ok(resourceCovers('http://h/web/%C3%BC', ['web', '\u00fc'], ['h']), 'decoded: an escape is the character it names');
  });

  it('compares a segment whose escapes are not UTF-8 as sent: equal only to itself', () => {
    const latin1 = ['echo', scopeSegment('caf%E9.txt')];
    assert.ok(resourceCovers('http://h/echo', latin1, ['h']), 'a token for the entity covers it');
    assert.ok(resourceCovers('http://h/echo/caf%e9.txt', latin1, ['h']), 'a token for that path covers it, its escapes in either case');
    assert.ok(!resourceCovers('http://h/echo/CAF%E9.TXT', latin1, ['h']), 'the path in another case is another path');
    assert.ok(!resourceCovers('http://h/echo/caf%25E9.txt', latin1, ['h']), 'the decoded text "caf%E9.txt" is another path');
    assert.ok(!resourceCovers('http://h/echo/caf%E9.txt', ['echo', 'caf%E9.txt'], ['h']));
  });

  const auth = new SasAuthorizer([
    { keyName: 'root', key: 'root-key-0123456789', rights: ['Manage'] },
    { keyName: 'sender', key: 'send-key-0123456789', rights: ['Send'] },
    { keyName: 'scoped', key: 'scoped-key-0123456789', rights: ['Listen'], entity: 'echo' },
  ]);
  const now = 1_800_000_000;
  const tok = (keyName: string, key: string, resource = 'http://h/echo', se = now + 60) => createSasToken(resource, keyName, key, se);
  const check = (token: string | undefined, right: 'Listen' | 'Send', entity = 'echo') =>
    auth.check({ token, entity, right, hosts: ['h'], nowSeconds: now });

  it('grants Manage everything, and each right only itself', () => {
    assert.equal(check(tok('root', 'root-key-0123456789'), 'Listen').ok, true);
    assert.equal(check(tok('sender', 'send-key-0123456789'), 'Send').ok, true);
    assert.deepEqual(check(tok('sender', 'send-key-0123456789'), 'Listen'), { ok: false, code: 'RightMissing' });
  });
  it('scopes an entity rule to its entity', () => {
    assert.equal(check(tok('scoped', 'scoped-key-0123456789', 'http://h/'), 'Listen').ok, true);
    assert.deepEqual(check(tok('scoped', 'scoped-key-0123456789', 'http://h/'), 'Listen', 'other'), { ok: false, code: 'RightMissing' });
  });
  it('names each refusal', () => {
    assert.deepEqual(check(undefined, 'Send'), { ok: false, code: 'TokenMissing' });
    assert.deepEqual(check('Bearer abc', 'Send'), { ok: false, code: 'TokenMalformed' });
    assert.deepEqual(check(tok('root', 'wrong-key-0123456789'), 'Send'), { ok: false, code: 'SignatureInvalid' });
    assert.deepEqual(check(tok('nobody', 'root-key-0123456789'), 'Send'), { ok: false, code: 'SignatureInvalid' });
    assert.deepEqual(check(tok('root', 'root-key-0123456789', 'http://h/echo', now - 1), 'Send'), { ok: false, code: 'TokenExpired' });
    assert.deepEqual(check(tok('root', 'root-key-0123456789', 'http://h/other'), 'Send'), { ok: false, code: 'TokenScopeInvalid' });
  });
  it('rejects malformed tokens without throwing', () => {
    for (const bad of ['SharedAccessSignature ', 'SharedAccessSignature sr=%&sig=a&se=1&skn=k', 'SharedAccessSignature sr=a&sr=b&sig=a&se=1&skn=k', 'SharedAccessSignature sr=a&sig=a&se=abc&skn=k', 'x'.repeat(10000)]) {
      assert.equal(check(bad, 'Send').ok, false, bad.slice(0, 40));
    }
  });
});

describe('SAS keys rotated by a reload', () => {
  // Two rules share a key name (one per entity); before, a key retired from one signed for
  // every rule of that name during the grace, and a removed rule's key too (found by review).
  const rules = (aKey: string | undefined) => [
    ...(aKey ? [{ keyName: 'device', key: aKey, rights: ['Listen' as const], entity: 'a' }] : []),
    { keyName: 'device', key: 'b-key-0123456789', rights: ['Listen' as const, 'Send' as const], entity: 'b' },
  ];
  const se = () => Math.floor(Date.now() / 1000) + 60;
  const check = (auth: SasAuthorizer, key: string, entity: string, right: 'Listen' | 'Send' = 'Listen') =>
    auth.check({ token: createSasToken(`http://h/${entity}`, 'device', key, se()), entity, right, hosts: ['h'] });

  it("a rule's old key still signs for that rule during the grace, and for no other rule of its name", () => {
    const auth = new SasAuthorizer(rules('a-key-0123456789'));
    assert.deepEqual(auth.update(rules('a-key-new-0123456789'), 60_000), ['device']);
    assert.equal(check(auth, 'a-key-0123456789', 'a').ok, true, 'old key, its own rule');
    assert.equal(check(auth, 'a-key-new-0123456789', 'a').ok, true, 'new key');
    // It signs for rule a, which does not cover b (before: accepted, as rule b).
    assert.deepEqual(check(auth, 'a-key-0123456789', 'b'), { ok: false, code: 'RightMissing' });
    assert.deepEqual(check(auth, 'a-key-0123456789', 'b', 'Send'), { ok: false, code: 'RightMissing' });
    assert.equal(check(auth, 'b-key-0123456789', 'b', 'Send').ok, true, 'the other rule keeps its own key');
  });

  it("a removed rule's key signs nothing, though its name lives on in another rule", () => {
    const auth = new SasAuthorizer(rules('a-key-0123456789'));
    assert.deepEqual(auth.update(rules(undefined), 60_000), []);
    assert.deepEqual(check(auth, 'a-key-0123456789', 'a'), { ok: false, code: 'SignatureInvalid' });
    assert.deepEqual(check(auth, 'a-key-0123456789', 'b'), { ok: false, code: 'SignatureInvalid' });
  });
});

describe('dot segments never widen a scope', () => {
  it('a resource with a . or .. segment, encoded or not, covers nothing', () => {
    for (const resource of ['http://h/echo/a/..', 'http://h/echo/a/%2e%2e', 'http://h/echo/a/.%2E/', 'http://h/echo/./a', 'http://h/echo\\a\\..', 'http://h/echo/a%2F..', 'http://h/..']) {
      assert.equal(resourceCovers(resource, ['echo', 'b'], ['h']), false, resource);
      assert.equal(resourceCovers(resource, ['echo'], ['h']), false, resource);
    }
    assert.equal(resourceCovers('http://h/echo/a..b/.c', ['echo', 'a..b', '.c'], ['h']), true, 'dots inside a segment are names');
    assert.equal(resourceCovers('http://h/echo/public/..;/admin', ['echo', 'admin'], ['h']), false, 'a dot segment with parameters');
  });

  it('a resource a URL parser would read otherwise than written covers nothing (tabs, line breaks, spaces, no //, \\)', () => {
    for (const resource of [
      'http://h/echo/sub/.\t.',
      'http://h/echo/sub/.\n.',
      'http://h/echo/..\t',
      'http:h/echo/sub/..',
      'http:/h/echo/sub/..',
      ' http://h/echo/sub/..',
      'http://h/echo/sub/.. ',
      'http:\\\\h\\echo\\sub\\..',
      'http://h/ec\rho',
    ]) {
      assert.equal(resourceCovers(resource, ['echo', 'other'], ['h']), false, JSON.stringify(resource));
      assert.equal(resourceCovers(resource, ['other'], ['h']), false, JSON.stringify(resource));
    }
    assert.equal(resourceCovers('http://h/echo/sub', ['echo', 'sub', 'x'], ['h']), true);
  });

  it('a request path with a . or .. segment is refused before routing', () => {
    for (const target of ['/echo/a/../../other/x', '/echo/%2e%2e/x', '/echo/.%2e', '/echo/./x', '/echo/a\\..\\..\\x', '/echo/a%5c..', '/api/hubs/chat/groups/%2E%2E/:send']) {
      assert.equal(route(target).kind, 'bad-request', target);
    }
    assert.equal(route('/echo/a..b/.x').kind, 'hybrid-http');
    // A segment's parameters do not hide one (servlet containers resolve `..;` as `..`). Before: relayed as sent.
    for (const target of ['/echo/public/..;/admin', '/echo/public/%2e%2e;/admin', '/echo/public/..%3b/admin', '/echo/.;x/a', '/echo/a/..;jsessionid=1']) {
      assert.equal(route(target).kind, 'bad-request', target);
    }
    assert.equal(route('/echo/a;b/..x;/.x;y').kind, 'hybrid-http');
  });
});
