// Pub/sub access tokens: HS256 only, signature, expiry, audience; and roles.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { audienceMatches, clientIdentityOf, verifyAccessToken } from '../../src/auth/access-token.ts';
import { signJwt, verifyJwt } from '../../src/auth/jwt.ts';
import { ConnectionPermissions } from '../../src/pubsub/permissions.ts';
import { ReliableSession } from '../../src/pubsub/reliable-session.ts';

const KEY = 'key-0123456789abcdef';

describe('JWT access tokens', () => {
  it('verifies what it signs and refuses tampering, other algorithms and expiry', () => {
    const token = signJwt({ sub: 'u' }, KEY, 60);
    assert.equal(verifyJwt(token, KEY).sub, 'u');
    const [h, p, s] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: 9999999999 })).toString('base64url');
    assert.throws(() => verifyJwt(`${h}.${forged}.${s}`, KEY), { code: 'SignatureInvalid' });
    const hs512 = Buffer.from('{"alg":"HS512"}').toString('base64url');
    assert.throws(() => verifyJwt(`${hs512}.${p}.${s}`, KEY), { code: 'AlgorithmUnsupported' });
    assert.throws(() => verifyJwt(signJwt({}, KEY, -120), KEY), { code: 'TokenExpired' });
    assert.throws(() => verifyJwt(signJwt({}, KEY), KEY), { code: 'TokenMalformed' }, 'no exp');
    assert.throws(() => verifyJwt('a.b', KEY), { code: 'TokenMalformed' });
  });

  it('takes a signature only as written: the spare bits of its last character make no other token (found by review)', () => {
    const token = signJwt({ sub: 'u' }, KEY, 60);
    const last = token.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // A 32-byte signature is 43 characters: the last carries 4 bits, and 2 spare ones that decoding drops.
    const base = alphabet.indexOf(last) & ~3;
    const variants = [0, 1, 2, 3].map((spare) => `${token.slice(0, -1)}${alphabet[base + spare]}`).filter((v) => v !== token);
    assert.equal(variants.length, 3);
    for (const v of variants) {
      assert.deepEqual(Buffer.from(v.split('.')[2], 'base64url'), Buffer.from(token.split('.')[2], 'base64url'), 'the same bytes decoded');
      assert.throws(() => verifyJwt(v, KEY), { code: 'SignatureInvalid' });
    }
    assert.equal(verifyJwt(token, KEY).sub, 'u');
  });

  it('refuses an exp or nbf JSON reads as Infinity (1e309): such a token never expired (found by review)', () => {
    const signed = (payload: string) => {
      const head = `${Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url')}.${Buffer.from(payload).toString('base64url')}`;
      return `${head}.${createHmac('sha256', KEY).update(head).digest('base64url')}`;
    };
    assert.equal(verifyJwt(signed('{"sub":"u","exp":9999999999}'), KEY).sub, 'u');
    assert.throws(() => verifyJwt(signed('{"sub":"u","exp":1e309}'), KEY), { code: 'TokenMalformed' });
    assert.throws(() => verifyJwt(signed('{"sub":"u","exp":9999999999,"nbf":-1e309}'), KEY), { code: 'TokenMalformed' });
  });

  it('matches the audience by host and path, ignoring scheme, port, query and case', () => {
    const hosts = ['relay.example'];
    assert.ok(audienceMatches('https://Relay.Example:443/client/hubs/Chat/', ['/client/hubs/chat'], hosts));
    assert.ok(audienceMatches(['x', 'http://relay.example/api/hubs/chat/:send?api-version=1'], ['/api/hubs/chat/:send'], hosts));
    assert.ok(!audienceMatches('http://evil.example/client/hubs/chat', ['/client/hubs/chat'], hosts));
    assert.ok(!audienceMatches('http://relay.example/client/hubs/chat2', ['/client/hubs/chat'], hosts));
    assert.ok(!audienceMatches(undefined, ['/client/hubs/chat'], hosts));
    const token = signJwt({ aud: 'http://relay.example/client/hubs/chat', role: 'webpubsub.sendToGroup', 'webpubsub.group': ['a', 7] }, KEY, 60);
    const ok = verifyAccessToken(token, KEY, ['/client/hubs/chat'], hosts);
    assert.ok(ok.ok);
    assert.deepEqual(clientIdentityOf(ok.claims), { userId: null, roles: ['webpubsub.sendToGroup'], groups: ['a'] });
    assert.deepEqual(verifyAccessToken(undefined, KEY, [], hosts), { ok: false, code: 'TokenMissing' });
  });
});

describe('roles', () => {
  it('grants exact groups, every group, and patterns', () => {
    const p = new ConnectionPermissions([
      'webpubsub.joinLeaveGroup.a.b',
      'webpubsub.sendToGroups.news.*',
      'webpubsub.joinLeaveGroups.logs.**',
      'webpubsub.sendToGroups.x?',
      'other.role',
    ]);
    assert.ok(p.allows('joinLeaveGroup', 'a.b'));
    assert.ok(!p.allows('joinLeaveGroup', 'a'));
    assert.ok(!p.allows('sendToGroup', 'a.b'));
    assert.ok(p.allows('sendToGroup', 'news.today'));
    assert.ok(!p.allows('sendToGroup', 'news.today.late'));
    assert.ok(p.allows('joinLeaveGroup', 'logs.a.b.c'));
    assert.ok(p.allows('sendToGroup', 'x1'));
    assert.ok(!p.allows('sendToGroup', 'x12'));
    assert.ok(!new ConnectionPermissions(['webpubsub.sendToGroups.a+']).allows('sendToGroup', 'aa'), 'regex characters are literal');
    assert.ok(new ConnectionPermissions(['webpubsub.sendToGroup']).allows('sendToGroup', 'anything at all'));
  });
});

describe('reliable session buffer', () => {
  it('numbers messages densely, drops what a cumulative ack covers, and refuses past its caps', () => {
    const s = new ReliableSession({ maxMessages: 3, maxBytes: 10 });
    assert.deepEqual([s.push({ body: Buffer.from('ab'), mid: 'm', position: 0 }), s.push({ body: Buffer.from('cd'), mid: 'm', position: 0 }), s.push({ body: Buffer.from('ef'), mid: 'm', position: 0 })], [1, 2, 3]);
    assert.equal(s.push({ body: Buffer.from('g'), mid: 'm', position: 0 }), undefined, 'message cap');
    s.acknowledge(2);
    assert.deepEqual([...s.after(0)].map((e) => e.sequenceId), [3]);
    assert.equal(s.push({ body: Buffer.from('0123456789'), mid: 'm', position: 0 }), undefined, 'byte cap');
    assert.equal(s.push({ body: Buffer.from('gh'), mid: 'm', position: 0 }), 4);
    assert.deepEqual([...s.after(3)].map((e) => e.sequenceId), [4]);
    assert.ok(s.tokenMatches(s.reconnectionToken));
    assert.ok(!s.tokenMatches('x'));
  });
});

describe('audiences with dot segments', () => {
  it('match nothing, however they resolve', () => {
    assert.equal(audienceMatches('http://h/client/hubs/chat', ['/client/hubs/chat'], ['h']), true);
    for (const aud of ['http://h/client/hubs/chat/x/..', 'http://h/client/hubs/x/../chat', 'http://h/client/hubs/%2e/chat', 'http://h/client\\hubs\\x\\..\\chat']) {
      assert.equal(audienceMatches(aud, ['/client/hubs/chat'], ['h']), false, aud);
    }
  });

  it('match nothing when a URL parser would read another path than the one written (tabs, line breaks, spaces, no //)', () => {
    for (const aud of [
      'http://h/client/hubs/x/.\t./chat',
      'http://h/client/hubs/x/.\n./chat',
      'http://h/client/hubs/x/..\r/chat',
      ' http://h/client/hubs/x/../chat',
      'http://h/client/hubs/x/.. /../chat',
      'http:h/client/hubs/x/../chat',
      'http:/h/client/hubs/x/../chat',
      'http:\\\\h\\client\\hubs\\x\\..\\chat',
      'http://h/client/hubs/ch\tat',
    ]) {
      assert.equal(audienceMatches(aud, ['/client/hubs/chat'], ['h']), false, JSON.stringify(aud));
    }
  });
});

describe('REST audiences', () => {
  const rest = (aud: string, path: string, query: string): boolean => audienceMatches(aud, [path], ['h'], { exactCase: true, query });

  it('name the query they were signed with, as the server SDK signs the request URL', () => {
    const path = '/api/hubs/chat/:generateToken';
    assert.equal(rest('http://h/api/hubs/chat/:generateToken?userId=alice&api-version=2024-01-01', path, 'userId=alice&api-version=2024-01-01'), true);
    assert.equal(rest('http://h/api/hubs/chat/:generateToken?userId=alice&api-version=2024-01-01', path, 'userId=admin&role=webpubsub.sendToGroup&api-version=2024-01-01'), false);
    assert.equal(rest('http://h/api/hubs/chat/:generateToken?userId=alice', path, ''), false);
    // The parser's escapes on either side compare equal.
    assert.equal(rest("http://h/api/hubs/chat/groups/a/:send?filter=x%20eq%20'y'", '/api/hubs/chat/groups/a/:send', 'filter=x%20eq%20%27y%27'), true);
    // An audience without a query covers the path's calls, as before (edge-relay's own clients sign so).
    assert.equal(rest('http://h/api/hubs/chat/:generateToken', path, 'userId=admin'), true);
  });

  it('name the path as sent: group, user and connection names are case-sensitive', () => {
    assert.equal(rest('http://h/api/hubs/chat/groups/admins/:send', '/api/hubs/chat/groups/admins/:send', ''), true);
    assert.equal(rest('http://h/api/hubs/chat/groups/admins/:send', '/api/hubs/chat/groups/ADMINS/:send', ''), false);
    assert.equal(rest('http://h/api/hubs/chat/groups/a%2Fb/:send', '/api/hubs/chat/groups/a/b/:send', ''), false, 'an escaped / is a name, not a separator');
    assert.equal(rest('http://h/api/hubs/chat/groups/caf%C3%A9/:send', '/api/hubs/chat/groups/café/:send', ''), true);
  });
});
