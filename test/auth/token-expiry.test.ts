// Reading a token's expiry without its key, as bridge --token does before it
// sends a token it cannot renew.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { createSasToken } from '../../src/auth/sas-token.ts';
import { tokenExpiresAt } from '../../src/auth/token-expiry.ts';

describe('a token expiry read without its key', () => {
  it("is a SAS token's se and a JWT's exp (also after Bearer)", () => {
    assert.equal(tokenExpiresAt(createSasToken('http://relay/web', 'root', 'key', 1_700_000_000)), 1_700_000_000);
    const jwt = signJwt({ exp: 1_800_000_000 }, 'any key');
    assert.equal(tokenExpiresAt(jwt), 1_800_000_000);
    assert.equal(tokenExpiresAt(`Bearer ${jwt}`), 1_800_000_000);
  });

  it('is unknown for a token of neither form, or one naming no finite expiry (the relay judges those)', () => {
    const part = (json: string) => Buffer.from(json).toString('base64url');
    for (const token of [
      'opaque',
      'SharedAccessSignature sr=x&sig=y&skn=k',
      'SharedAccessSignature sr=x&sig=y&se=1e9&skn=k',
      signJwt({ sub: 'no exp' }, 'k'),
      `${part('{}')}.${part('{"exp":"1800000000"}')}.x`,
      `${part('{}')}.${part('{"exp":1e999}')}.x`,
      `${part('{}')}.${part('not json')}.x`,
      `${part('{}')}.${part('null')}.x`,
    ]) {
      assert.equal(tokenExpiresAt(token), undefined, token);
    }
  });
});
