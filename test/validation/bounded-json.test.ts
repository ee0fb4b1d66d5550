// Nesting is bounded wherever JSON arrives from the network (bounded-json.ts):
// the depth check is one pass that ignores brackets inside strings, and the
// parsers built on it (bus envelopes, JWT segments) refuse a deep document as
// malformed instead of handing it to code that walks it.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { verifyAccessToken } from '../../src/auth/access-token.ts';
import { decodeEdgeMessage } from '../../src/bus/messages.ts';
import { encodeEnvelope } from '../../src/bus/envelope.ts';
import { JsonTooDeepError, MAX_JSON_DEPTH, jsonDepthExceeds, parseJson, rawMemberText } from '../../src/validation/bounded-json.ts';

const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

/** The depth check as one pass over every character, with no shortcut: what jsonDepthExceeds must agree with. */
function depthExceedsByScan(text: string, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '[' || c === '{') {
      if (++depth > maxDepth) return true;
    } else if (c === ']' || c === '}') depth--;
  }
  return false;
}

describe('bounded JSON', () => {
  it('counts arrays and objects, not brackets in strings or escaped quotes', () => {
    assert.equal(jsonDepthExceeds(nested(3), 3), false);
    assert.equal(jsonDepthExceeds(nested(4), 3), true);
    assert.equal(jsonDepthExceeds('{"a":{"b":{"c":{}}}}', 3), true);
    assert.equal(jsonDepthExceeds('{"a":"[[[[[[[[[[{{{{{{{"}', 2), false);
    assert.equal(jsonDepthExceeds('{"a":"\\"[[[[[[[[[[[[[[[[[[[[[["}', 2), false);
    assert.equal(jsonDepthExceeds('["\\\\",[[[[]]]]]', 3), true);
  });

  it('agrees with a scan of every character, whatever the brackets, strings and escapes (the count of openers only skips work)', () => {
    const text = fc.array(fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a', ':', ','), { maxLength: 40 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(text, fc.integer({ min: 0, max: 6 }), (t, maxDepth) => {
        assert.equal(jsonDepthExceeds(t, maxDepth), depthExceedsByScan(t, maxDepth), `${t} at ${maxDepth}`);
      }),
      { numRuns: 5000 },
    );
    // Openers inside strings count toward the shortcut's bound but not the depth.
    assert.equal(jsonDepthExceeds(`["${'['.repeat(200)}"]`, 3), false);
    assert.equal(jsonDepthExceeds(nested(200), 128), true);
  });

  it('parses within the bound and throws a SyntaxError past it', () => {
    assert.deepEqual(parseJson(nested(MAX_JSON_DEPTH)), JSON.parse(nested(MAX_JSON_DEPTH)));
    assert.throws(() => parseJson(nested(MAX_JSON_DEPTH + 1)), JsonTooDeepError);
    assert.throws(() => parseJson(nested(100000)), SyntaxError);
    assert.throws(() => parseJson('{nope'), SyntaxError);
  });

  it('reads a top-level member as written, past nested values, strings that look like members and escaped names', () => {
    assert.equal(rawMemberText('{"type":"x","ackId":9007199254740993}', 'ackId'), '9007199254740993');
    assert.equal(rawMemberText(' { "a" : [1,"]",{"ackId":2}] , "ackId" : -1.5e3 } ', 'ackId'), '-1.5e3');
    assert.equal(rawMemberText('{"x":"\\"ackId\\":5","ackId":18446744073709551615}', 'ackId'), '18446744073709551615');
    assert.equal(rawMemberText('{"ack\\u0049d":1,"ackId":2}', 'ackId'), '2', 'the last one, as JSON.parse keeps');
    assert.equal(rawMemberText('{"a":{"ackId":1}}', 'ackId'), undefined, 'nested members are not top-level');
    assert.equal(rawMemberText('[1]', 'ackId'), undefined);
  });

  it('makes a deep bus envelope an invalid message', () => {
    const deep = Buffer.from(`{"op":"ops.status","origin":"n","x":${nested(10000)}}`);
    const data = Buffer.alloc(4 + deep.length);
    data.writeUInt32BE(deep.length, 0);
    deep.copy(data, 4);
    assert.equal(decodeEdgeMessage(data), undefined);
    assert.ok(decodeEdgeMessage(encodeEnvelope({ op: 'ops.status', origin: 'n' })));
  });

  it('makes a correctly signed JWT with a deep claim set invalid', () => {
    const key = 'key-0123456789abcdef';
    const part = (o: string) => Buffer.from(o).toString('base64url');
    const input = `${part('{"alg":"HS256"}')}.${part(`{"exp":9999999999,"aud":"http://h/","x":${nested(2000)}}`)}`;
    const token = `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
    assert.deepEqual(verifyAccessToken(token, key, ['/'], ['h']), { ok: false, code: 'TokenInvalid' });
  });
});
