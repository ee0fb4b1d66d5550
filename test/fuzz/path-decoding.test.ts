// Property-based checks of the shortcuts on every request's path: decoding a
// part with no `%` is skipped (percent-decoding.ts), and a path with neither a
// `.` nor a `%` is not split to look for dot segments (dot-segments.ts). Each
// must answer as the full work would, for any text: the same decoding or the
// same URIError, the same verdict on dot segments.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { hasDotSegment } from '../../src/auth/dot-segments.ts';
import { decodeComponent } from '../../src/validation/percent-decoding.ts';
import { fuzzOptions } from './fuzz.ts';

/** Text with escapes (valid, truncated, non-UTF-8), dots, both separators and non-ASCII among plain characters. */
const pathText = fc
  .array(fc.oneof(fc.constantFrom('%', '%2', '%2e', '%2E', '%2F', '%5C', '%C3%A9', '%E9', '%zz', '.', '..', '/', '\\', 'é', '\u{1F600}', '\uD800'), fc.string({ maxLength: 4 })), { maxLength: 10 })
  .map((parts) => parts.join(''));

/** The verdict with every piece decoded and split again: what dot-segments.ts does once a path may hold a dot. */
function dotSegmentByFullWork(rawPath: string): boolean {
  for (const piece of rawPath.split(/[/\\]/)) {
    let decoded = piece;
    try {
      decoded = decodeURIComponent(piece);
    } catch {
      // compared as sent
    }
    // A segment's parameters (`;` on) do not hide a dot segment.
    if (decoded.split(/[/\\]/).some((part) => ['.', '..'].includes(part.split(';')[0]))) return true;
  }
  return false;
}

function decodedOrError(decode: (text: string) => string, text: string): string {
  try {
    return `ok:${decode(text)}`;
  } catch (err) {
    return `error:${(err as Error).name}`;
  }
}

describe('path decoding shortcuts (fuzzed)', () => {
  it('decodeComponent decodes as decodeURIComponent does, or throws the same URIError', () => {
    fc.assert(
      fc.property(pathText, (text) => {
        assert.equal(decodedOrError(decodeComponent, text), decodedOrError(decodeURIComponent, text), text);
      }),
      fuzzOptions(3000),
    );
  });

  it('hasDotSegment gives the verdict of decoding and splitting every piece', () => {
    fc.assert(
      fc.property(pathText, (text) => {
        const path = `/${text}`;
        assert.equal(hasDotSegment(path), dotSegmentByFullWork(path), path);
      }),
      fuzzOptions(3000),
    );
    // Escaped dots take the full path: no `.` as sent.
    assert.equal(hasDotSegment('/a/%2e%2E/b'), true);
    assert.equal(hasDotSegment('/a/%2e'), true);
    assert.equal(hasDotSegment('/a/b%2Fc'), false);
    assert.equal(hasDotSegment('/bench/hello'), false);
  });
});
