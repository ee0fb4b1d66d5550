// Property-based fuzzing of the pub/sub REST surface: the :addToGroups filter
// parser never throws and round-trips the filters it accepts; any method,
// path, query, content type and body a caller with a valid token sends is
// answered with a status and an error code from the pub/sub table, and the
// relay keeps serving.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { signJwt } from '../../src/auth/jwt.ts';
import { PUBSUB_ERRORS } from '../../src/pubsub/errors.ts';
import { parseConnectionFilter } from '../../src/pubsub/rest-api.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, startPubSubRelay } from '../helpers/pubsub.ts';
import { fuzzOptions } from './fuzz.ts';

const MAX_BODY = 4096;

describe('REST filters (fuzzed)', () => {
  it('never throw on any string', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom("userId eq 'a' or", "connectionId eq ''''", "userId eq 'a' or connectionId eq 'b'", "userId  eq  'x'or")), (filter) => {
        const terms = parseConnectionFilter(filter);
        if (terms) assert.ok(terms.length > 0 && terms.every((t) => t.field === 'userId' || t.field === 'connectionId'));
      }),
      fuzzOptions(3000),
    );
  });

  it('round-trip: any terms written as OData string comparisons parse back to themselves', () => {
    const term = fc.record({ field: fc.constantFrom('userId' as const, 'connectionId' as const), value: fc.string({ maxLength: 12 }) }, { noNullPrototype: true });
    fc.assert(
      fc.property(fc.array(term, { minLength: 1, maxLength: 4 }), fc.constantFrom(' ', '  ', '\t'), (terms, space) => {
        const filter = terms.map((t) => `${t.field}${space}eq${space}'${t.value.replace(/'/g, "''")}'`).join(`${space}or${space}`);
        assert.deepEqual(parseConnectionFilter(filter), terms);
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
