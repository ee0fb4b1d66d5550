// When a token a client was handed expires, read without its key: a SAS
// token's `se` (sas-token.ts), or a JWT's `exp` (RFC 7519 4.1.4; an Entra ID
// token as Azure Relay also takes it, with or without `Bearer `). For a client
// that holds a ready token and cannot make another (`bridge --token`): one that
// has expired is refused before it is sent, and its end is known in advance.
import { parseJson } from '../validation/bounded-json.ts';
import { MAX_TOKEN_LENGTH } from './jwt.ts';
import { parseSasToken } from './sas-token.ts';

const JWT = /^(?:Bearer\s+)?[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]*$/;

/** The token's expiry in Unix seconds, or undefined when it is neither form or names none (the relay judges it then). */
export function tokenExpiresAt(token: string): number | undefined {
  const sas = parseSasToken(token);
  if (sas) return sas.expiresAt;
  if (token.length > MAX_TOKEN_LENGTH) return undefined;
  const jwt = JWT.exec(token);
  if (!jwt) return undefined;
  let claims: unknown;
  try {
    claims = parseJson(Buffer.from(jwt[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  const exp = typeof claims === 'object' && claims !== null ? (claims as { exp?: unknown }).exp : undefined;
  return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
}
