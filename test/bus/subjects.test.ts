// Subject tokens for user-chosen names (DESIGN.md "Naming on the bus").
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_TOKEN_LENGTH, Subjects, decodeSubjectToken, encodeSubjectToken } from '../../src/bus/subjects.ts';

describe('subject token encoding', () => {
  // Lone surrogates (JSON can carry them; UTF-8 cannot): before, each encoded as U+FFFD's bytes, one token for three names.
  const names = ['chat', 'a.b', '*', '>', 'a b', '_', '_41', 'Ä-ö', '💥', '\u0000', '', 'x'.repeat(60), '\uD800', '\uDC00', '\uFFFD', 'a\uD83Db', '\uDCA5\uD83D', '_UD800'];

  test('tokens use only letters, digits, `-` and `_`, and decode exactly', () => {
    for (const name of names) {
      const token = encodeSubjectToken(name);
      assert.match(token, /^[A-Za-z0-9_-]+$/);
      assert.equal(decodeSubjectToken(token), name);
    }
  });

  test('different names give different tokens, case included', () => {
    const tokens = new Set([...names, 'CHAT', 'Chat'].map(encodeSubjectToken));
    assert.equal(tokens.size, names.length + 2);
  });

  test('a long name becomes a fixed-size hash token that cannot be mistaken for an escape', () => {
    const token = encodeSubjectToken('é'.repeat(1024));
    assert.ok(token.startsWith('_h') && token.length <= MAX_TOKEN_LENGTH);
    assert.equal(decodeSubjectToken(token), undefined);
    assert.notEqual(encodeSubjectToken('é'.repeat(1023)), token);
  });

  test('malformed tokens do not decode', () => {
    // `_U` names a lone surrogate only: not another code unit, nor the halves of a pair (written as UTF-8).
    for (const bad of ['_4', '_zz', 'a.b', 'a*', '_61', '_UD7FF', '_U0041', '_UD83D_UDCA5', '_Ud800', '_UD8']) assert.equal(decodeSubjectToken(bad), undefined, bad);
  });

  test('subjects put each user-chosen name in exactly one token under the prefix', () => {
    const s = new Subjects('relay');
    assert.equal(s.group('chat', 'a.b').split('.').length, 5);
    assert.equal(s.hybridEntity('x.y*'), 'relay.hc.x_2Ey_2A');
    assert.ok(s.connection('chat', '>').startsWith('relay.ps.chat.c.'));
  });
});
