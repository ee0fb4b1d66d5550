// Property-based fuzzing of token parsing: Shared Access Signatures (hybrid
// connections) and HS256 JWTs (pub/sub). Any string is answered with a code
// from the error tables and never throws; tokens the relay or Microsoft's
// clients build round-trip; a scope never covers more than its path says,
// whatever dot segments or encodings the resource carries.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { verifyAccessToken } from '../../src/auth/access-token.ts';
import { hasDotSegment } from '../../src/auth/dot-segments.ts';
import { JwtError, signJwt, verifyJwt } from '../../src/auth/jwt.ts';
import { SasAuthorizer, resourceCovers } from '../../src/auth/sas-authorizer.ts';
import { createSasToken, parseSasToken } from '../../src/auth/sas-token.ts';
import { HYBRID_ERRORS } from '../../src/hybrid/errors.ts';
import { PUBSUB_ERRORS } from '../../src/pubsub/errors.ts';
import { fuzzOptions } from './fuzz.ts';

const KEY = 'fuzz-key-0123456789abcdef';
const authorizer = new SasAuthorizer([{ keyName: 'root', key: KEY, rights: ['Manage'] }]);
// Path characters a URL parser keeps as they are (it drops spaces and tabs, and ? or # end a path).
const segment = fc.oneof(fc.constantFrom('echo', 'a', '.', '..', '%2e', '%2E%2e', '.%2e', 'a%2F..', 'a%5C..', '$hc', ''), fc.stringMatching(/^[A-Za-z0-9%._~$-]{0,6}$/));
const path = fc.array(segment, { maxLength: 5 }).map((s) => '/' + s.join('/'));
const sasLike = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }).map((s) => `SharedAccessSignature ${s}`),
  fc.tuple(fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), fc.string({ maxLength: 14 }), fc.string({ maxLength: 20 })).map(
    ([sr, sig, se, skn]) => `SharedAccessSignature sr=${sr}&sig=${sig}&se=${se}&skn=${skn}`,
  ),
);

describe('SAS tokens (fuzzed)', () => {
  it('answer any string with a code of the hybrid connections table, never throwing', () => {
    fc.assert(
      fc.property(sasLike, fc.constantFrom('Listen', 'Send') as fc.Arbitrary<'Listen' | 'Send'>, (token, right) => {
        parseSasToken(token);
        const decision = authorizer.check({ token, entity: 'echo', right, hosts: ['h'] });
        if (!decision.ok) assert.ok(decision.code in HYBRID_ERRORS, decision.code);
      }),
      fuzzOptions(2000),
    );
  });

  it('round-trip: a token the relay signs parses back and is accepted for the path it names', () => {
    fc.assert(
      fc.property(fc.array(fc.stringMatching(/^[A-Za-z0-9._~-]{1,8}$/), { maxLength: 3 }), fc.integer({ min: 60, max: 1e6 }), (sub, ttl) => {
        fc.pre(!sub.some((s) => s === '.' || s === '..'));
        const resource = `http://h/echo/${sub.join('/')}`;
        const expiresAt = Math.floor(Date.now() / 1000) + ttl;
        const parsed = parseSasToken(createSasToken(resource, 'root', KEY, expiresAt));
        assert.deepEqual([parsed?.resource, parsed?.expiresAt, parsed?.keyName], [resource, expiresAt, 'root']);
        const decision = authorizer.check({ token: createSasToken(resource, 'root', KEY, expiresAt), entity: 'echo', subPath: sub.filter((s) => s !== ''), right: 'Send', hosts: ['h'] });
        assert.equal(decision.ok, true);
      }),
      fuzzOptions(500),
    );
  });

  it('a resource never covers a request its path does not name: dot segments cover nothing', () => {
    fc.assert(
      fc.property(path, fc.array(fc.constantFrom('echo', 'a', 'b', 'other'), { minLength: 1, maxLength: 4 }), (p, requested) => {
        const covered = resourceCovers(`http://h${p}`, requested, ['h']);
        if (hasDotSegment(p)) assert.equal(covered, false, p);
        if (covered) {
          const named = p.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s).toLowerCase()).filter((s, i) => !(i === 0 && s === '$hc'));
          assert.deepEqual(requested.slice(0, named.length).map((s) => s.toLowerCase()), named, `${p} covered ${requested.join('/')}`);
        }
      }),
      fuzzOptions(2000),
    );
  });
});

describe('JWTs (fuzzed)', () => {
  const jwtLike = fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.tuple(fc.base64String({ maxLength: 80 }), fc.base64String({ maxLength: 200 }), fc.base64String({ maxLength: 60 })).map((parts) => parts.map((p) => p.replace(/\+/g, '-').replace(/\//g, '_').replace(/=/g, '')).join('.')),
    fc.tuple(fc.jsonValue({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 3 })).map(([h, c]) => `${Buffer.from(JSON.stringify(h) ?? '').toString('base64url')}.${Buffer.from(JSON.stringify(c) ?? '').toString('base64url')}.x`),
  );

  it('answer any string with a code of the pub/sub table, throwing only JwtError from verifyJwt', () => {
    fc.assert(
      fc.property(jwtLike, (token) => {
        try {
          verifyJwt(token, KEY);
        } catch (err) {
          assert.ok(err instanceof JwtError, String(err));
        }
        const verdict = verifyAccessToken(token, KEY, ['/client/hubs/chat'], ['h']);
        if (!verdict.ok) assert.ok(verdict.code in PUBSUB_ERRORS, verdict.code);
      }),
      fuzzOptions(2000),
    );
  });

  it('round-trip: any claims the relay signs verify back unchanged', () => {
    const claims = fc.dictionary(fc.string({ maxLength: 10 }).filter((k) => !['exp', 'iat', '__proto__'].includes(k)), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 6 });
    fc.assert(
      fc.property(claims, (c) => {
        const verified = verifyJwt(signJwt(c, KEY, 60), KEY);
        const { exp, iat, ...rest } = verified;
        assert.equal(typeof exp, 'number');
        assert.equal(typeof iat, 'number');
        assert.deepEqual(rest, JSON.parse(JSON.stringify(c)));
      }),
      fuzzOptions(500),
    );
  });

  it('an audience with dot segments matches nothing, however the URL parser resolves it', () => {
    fc.assert(
      fc.property(path, (p) => {
        const token = signJwt({ aud: `http://h${p}` }, KEY, 60);
        const wanted = new URL(`http://h${p}`).pathname;
        const verdict = verifyAccessToken(token, KEY, [wanted], ['h']);
        if (hasDotSegment(p)) assert.deepEqual(verdict, { ok: false, code: 'AudienceInvalid' });
      }),
      fuzzOptions(1000),
    );
  });
});
