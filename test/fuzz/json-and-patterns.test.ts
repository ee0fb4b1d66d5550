// Property-based fuzzing of the small parsers every JSON message and every
// role check goes through: the nesting bound agrees with the real depth of
// any JSON value and never throws on any text; a top-level member read as
// written parses to the value JSON.parse gives; and the linear-time group
// pattern matcher answers as the backtracking RegExp it replaced, on names
// short enough for that RegExp to answer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { GroupPattern } from '../../src/pubsub/permissions.ts';
import { jsonDepthExceeds, parseJson, rawMemberText } from '../../src/validation/bounded-json.ts';
import { fuzzOptions } from './fuzz.ts';

function depthOf(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + Math.max(0, ...children.map(depthOf));
}

/** The RegExp translation group patterns used before (reference semantics), with code points. */
function referencePattern(pattern: string): RegExp {
  let source = '';
  const cs = [...pattern];
  for (let i = 0; i < cs.length; i++) {
    if (cs[i] === '*' && cs[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (cs[i] === '*') source += '[^.]*';
    else if (cs[i] === '?') source += '[^.]';
    else source += cs[i].replace(/[\\^$.|+()[\]{}/*?]/g, '\\$&');
  }
  return new RegExp(`^${source}$`, 'su');
}

describe('bounded JSON (fuzzed)', () => {
  it('finds exactly the depth of any JSON value, however it is printed', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 10 }), fc.boolean(), (value, bound, pretty) => {
        const text = JSON.stringify(value, null, pretty ? 2 : undefined);
        assert.equal(jsonDepthExceeds(text, bound), depthOf(value) > bound, text);
        if (depthOf(value) <= bound) assert.deepEqual(parseJson(text, bound), JSON.parse(text));
      }),
      fuzzOptions(1000),
    );
  });

  it('never throws on arbitrary text, only SyntaxError from parseJson', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => {
        jsonDepthExceeds(text, 3);
        try {
          parseJson(text, 3);
        } catch (err) {
          assert.ok(err instanceof SyntaxError);
        }
        rawMemberText(text, 'ackId');
      }),
      fuzzOptions(2000),
    );
  });

  it('reads a top-level member as written: it parses to what JSON.parse gives for it', () => {
    const key = fc.constantFrom('ackId', 'a', 'ack\\u0049d', 'x"y', '');
    fc.assert(
      fc.property(fc.dictionary(key, fc.jsonValue({ maxDepth: 3 })), fc.boolean(), (object, pretty) => {
        const text = JSON.stringify(object, null, pretty ? 1 : undefined);
        const raw = rawMemberText(text, 'ackId');
        const parsed = JSON.parse(text) as Record<string, unknown>;
        if (Object.hasOwn(parsed, 'ackId')) assert.deepEqual(JSON.parse(raw!), parsed.ackId);
        else assert.equal(raw, undefined);
      }),
      fuzzOptions(1000),
    );
  });
});

describe('group patterns (fuzzed)', () => {
  it('match as the RegExp they replaced', () => {
    const alphabet = fc.constantFrom('a', 'b', '.', '-', '*', '?', 'é');
    const pattern = fc.array(alphabet, { maxLength: 10 }).map((cs) => cs.join(''));
    const name = fc.array(fc.constantFrom('a', 'b', '.', '-', '*', '?', 'é'), { maxLength: 12 }).map((cs) => cs.join(''));
    fc.assert(
      fc.property(pattern, name, (p, n) => {
        assert.equal(new GroupPattern(p).matches(n), referencePattern(p).test(n), `'${p}' against '${n}'`);
      }),
      fuzzOptions(3000),
    );
  });

  it('answer any pattern against any 1024-character name without backtracking', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 64 }), fc.constantFrom('-', 'a', '.', '*'), (p, fill) => {
        const started = process.hrtime.bigint();
        new GroupPattern(`${p}*-*-*-*`).matches(fill.repeat(1023) + '.');
        assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < 200);
      }),
      fuzzOptions(100),
    );
  });
});
