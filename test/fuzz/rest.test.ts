// Property-based fuzzing of the pub/sub REST surface: the OData filter parser
// throws nothing but a positioned syntax error, and a generated expression
// selects what it says; any method,
// path, query, content type and body a caller with a valid token sends is
// answered with a status and an error code from the pub/sub table, and the
// relay keeps serving.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { signJwt } from '../../src/auth/jwt.ts';
import { PUBSUB_ERRORS } from '../../src/pubsub/errors.ts';
import { ConnectionFilter, FilterSyntaxError } from '../../src/pubsub/connection-filter.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, startPubSubRelay } from '../helpers/pubsub.ts';
import { fuzzOptions } from './fuzz.ts';

const MAX_BODY = 4096;

describe('REST filters (fuzzed)', () => {
  it('parse any string or throw FilterSyntaxError with a position inside it', () => {
    const pieces = fc.constantFrom(
      'userId', 'connectionId', 'groups', 'UserID', '/any(', 'g:', 'g', ' eq ', ' ne ', ' in ', ' and ', ' or ', 'not ', '(', ')', ',', "'a'", "''''", "'", 'null',
      ' gt ', ' ge ', ' lt ', ' le ', 'true', 'false', '0', '-1', '+2', '99999999999999999999', 'length(', 'startswith(', 'endswith(', 'contains(', 'indexof(',
      'tolower(', 'toupper(', 'trim(', 'substring(', 'concat(',
    );
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.array(pieces, { maxLength: 20 }).map((p) => p.join(''))), (text) => {
        try {
          ConnectionFilter.parse(text).matches({ id: 'c', userId: 'a', groups: new Set(['a', "'"]) });
        } catch (err) {
          assert.ok(err instanceof FilterSyntaxError, String(err));
          assert.ok(err.position >= 0 && err.position <= text.length, `${err.position} in ${JSON.stringify(text)}`);
        }
      }),
      fuzzOptions(3000),
    );
  });

  it('round-trip: a generated expression, written out, selects what it says', () => {
    type Subject = { id: string; userId: string | null; groups: Set<string> };
    type Gen = { text: string; eval: (c: Subject) => boolean };
    const quote = (v: string) => `'${v.replace(/'/g, "''")}'`;
    const value: fc.Arbitrary<string> = fc.constantFrom('a', 'b', "o'k", '', 'A');
    const leaf: fc.Arbitrary<Gen> = fc.oneof(
      fc.tuple(fc.constantFrom('userId' as const, 'connectionId' as const), fc.constantFrom('eq', 'ne'), value).map(([f, op, v]) => ({
        text: `${f} ${op} ${quote(v)}`,
        eval: (c: Subject) => ((f === 'userId' ? c.userId : c.id) === v) === (op === 'eq'),
      })),
      fc.array(value, { minLength: 1, maxLength: 3 }).map((vs) => ({ text: `userId in (${vs.map(quote).join(', ')})`, eval: (c: Subject) => vs.includes(c.userId as string) })),
      value.map((v) => ({ text: `${quote(v)} in groups`, eval: (c: Subject) => c.groups.has(v) })),
      // `in` binds tighter than `not` (OData's precedence, ODataLib's parser).
      value.map((v) => ({ text: `not ${quote(v)} in groups`, eval: (c: Subject) => !c.groups.has(v) })),
      fc.array(value, { minLength: 1, maxLength: 3 }).map((vs) => ({ text: `not userId in (${vs.map(quote).join(', ')})`, eval: (c: Subject) => !vs.includes(c.userId as string) })),
      value.map((v) => ({ text: `groups/any(x: x eq ${quote(v)})`, eval: (c: Subject) => c.groups.has(v) })),
      fc.tuple(fc.constantFrom('startswith', 'endswith', 'contains'), value).map(([fn, v]) => ({
        text: `${fn}(userId, ${quote(v)})`,
        eval: (c: Subject) => c.userId !== null && (fn === 'startswith' ? c.userId.startsWith(v) : fn === 'endswith' ? c.userId.endsWith(v) : c.userId.includes(v)),
      })),
      fc.tuple(fc.constantFrom('gt', 'ge', 'lt', 'le'), fc.integer({ min: -1, max: 4 })).map(([op, n]) => ({
        text: `length(userId) ${op} ${n}`,
        eval: (c: Subject) => {
          if (c.userId === null) return false;
          const l = c.userId.length;
          return op === 'gt' ? l > n : op === 'ge' ? l >= n : op === 'lt' ? l < n : l <= n;
        },
      })),
      fc.integer({ min: 0, max: 3 }).map((n) => ({ text: `length(groups) eq ${n}`, eval: (c: Subject) => c.groups.size === n })),
      fc.tuple(value, fc.integer({ min: 0, max: 2 })).map(([v, n]) => ({
        text: `substring(tolower(connectionId), ${n}) eq ${quote(v)}`,
        eval: (c: Subject) => c.id.toLowerCase().slice(n) === v,
      })),
      fc.boolean().map((b) => ({ text: String(b), eval: () => b })),
    );
    const expr = fc.letrec<{ e: Gen }>((tie) => ({
      e: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        leaf,
        fc.tuple(tie('e'), fc.constantFrom('and', 'or'), tie('e')).map(([l, op, r]) => ({
          text: `(${l.text}) ${op} (${r.text})`,
          eval: (c: Subject) => (op === 'and' ? l.eval(c) && r.eval(c) : l.eval(c) || r.eval(c)),
        })),
        tie('e').map((x) => ({ text: `not (${x.text})`, eval: (c: Subject) => !x.eval(c) })),
        // A condition compared with a boolean; comparisons chain left to right.
        fc.tuple(tie('e'), fc.constantFrom('eq', 'ne'), fc.boolean(), fc.constantFrom('', ' eq true', ' ne true')).map(([x, op, b, more]) => ({
          text: `(${x.text}) ${op} ${b}${more}`,
          eval: (c: Subject) => {
            const first = (x.eval(c) === b) === (op === 'eq');
            return more === '' ? first : more === ' eq true' ? first : !first;
          },
        })),
      ),
    })).e;
    const subject = fc.record({ id: value, userId: fc.option(value), groups: fc.array(value, { maxLength: 3 }).map((g) => new Set(g)) }, { noNullPrototype: true });
    fc.assert(
      fc.property(expr, subject, (e, c) => {
        assert.equal(ConnectionFilter.parse(e.text).matches(c), e.eval(c), e.text);
      }),
      fuzzOptions(2000),
    );
  });
});

describe('REST requests (fuzzed)', () => {
  it('answers any request with a status and code of the pub/sub table', async (t) => {
    const relay = await startPubSubRelay(t, { limits: { pubsubMessageBytes: MAX_BODY } });
    const path = fc.constantFrom(
      ':send', 'groups/g/:send', 'users/u/:send', 'connections/c/:send', ':addToGroups', ':removeFromGroups', ':closeConnections',
      'groups/g/connections/c', 'users/u/groups/g', 'groups/g', 'groups/g/connections', 'permissions/sendToGroup/connections/c',
      ':generateToken', 'groups/%00/:send', 'groups/' + 'x'.repeat(1100) + '/:send', 'nowhere', 'groups//:send',
    );
    const query = fc.constantFrom('', '?excluded=c', '?excluded=' + 'x'.repeat(200), '?filter=x', '?top=-1', '?top=abc', '?minutesToExpire=0', '?targetName=g', '?role=r&group=g', '?reason=%FF');
    const body = fc.oneof(
      fc.string({ maxLength: 100 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
      fc.record({ groups: fc.oneof(fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 2 })), filter: fc.oneof(fc.string({ maxLength: 30 }), fc.constant("userId eq 'u'")) }).map((v) => JSON.stringify(v)),
      fc.integer({ min: 100, max: 400 }).map((d) => '['.repeat(d) + ']'.repeat(d)),
      fc.constant('x'.repeat(MAX_BODY + 1)),
    );
    const type = fc.constantFrom('application/json', 'text/plain', 'application/octet-stream', 'image/png', 'application/json; charset=utf-8', '');
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH'), path, query, body, type, async (method, p, q, b, contentType) => {
        const url = `${relay.url}/api/hubs/${HUB}/${p}${q}`;
        const headers: Record<string, string> = { authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` };
        if (contentType) headers['content-type'] = contentType;
        const res = await httpRequest(url, { method, headers, body: method === 'GET' || method === 'HEAD' ? undefined : Buffer.from(b) });
        assert.ok([200, 202, 204, 400, 401, 404, 405, 413, 415, 503].includes(res.status), `${method} ${p}${q}: ${res.status}`);
        if (res.status >= 400 && method !== 'HEAD' && res.body.length > 0) {
          const code = JSON.parse(String(res.body)).code;
          assert.ok(code in PUBSUB_ERRORS, code);
          assert.equal(PUBSUB_ERRORS[code as keyof typeof PUBSUB_ERRORS].status, res.status, code);
        }
      }),
      fuzzOptions(150, 6000),
    );
    assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  });
});
