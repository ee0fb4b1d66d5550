// JSON Web Tokens (RFC 7519) signed with HMAC-SHA256 (the only algorithm Azure
// Web PubSub access keys use). Verification checks the header's `alg` before
// anything else, compares signatures in constant time, and checks `exp`/`nbf`.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { parseJson } from '../validation/bounded-json.ts';

export type JwtClaims = Record<string, unknown>;

/** Tolerated clock difference between the token's issuer and this node. */
export const CLOCK_SKEW_SECONDS = 60;
/** Tokens are short strings; anything longer is refused before decoding. */
export const MAX_TOKEN_LENGTH = 8192;

export type JwtErrorCode = 'TokenMalformed' | 'AlgorithmUnsupported' | 'SignatureInvalid' | 'TokenExpired' | 'TokenNotYetValid';

export class JwtError extends Error {
  constructor(readonly code: JwtErrorCode, message: string) {
    super(message);
  }
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function sign(input: string, key: string): Buffer {
  return createHmac('sha256', key).update(input).digest();
}

/** Signs `claims` with HS256. `exp`/`iat` are added when `ttlSeconds` is given. */
export function signJwt(claims: JwtClaims, key: string, ttlSeconds?: number, now = Date.now()): string {
  const body: JwtClaims = { ...claims };
  if (ttlSeconds !== undefined) {
    const iat = Math.floor(now / 1000);
    body.iat = iat;
    body.exp = iat + ttlSeconds;
  }
  const input = `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(body))}`;
  return `${input}.${base64url(sign(input, key))}`;
}

const SEGMENT = /^[A-Za-z0-9_-]*$/;

function decodeJson(segment: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseJson(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new JwtError('TokenMalformed', 'token segment is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new JwtError('TokenMalformed', 'token segment is not a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Verifies an HS256 token with `key` and returns its claims; throws JwtError. */
export function verifyJwt(token: string, key: string, now = Date.now()): JwtClaims {
  if (token.length > MAX_TOKEN_LENGTH) throw new JwtError('TokenMalformed', 'token too long');
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => SEGMENT.test(p))) {
    throw new JwtError('TokenMalformed', 'token is not three base64url segments');
  }
  const header = decodeJson(parts[0]);
  if (header.alg !== 'HS256') throw new JwtError('AlgorithmUnsupported', 'only HS256 tokens are accepted');
  // Compared as written: decoding ignores the spare bits of the last character, which let one signature be
  // written four ways (found by review; harmless until a token is taken as an identifier).
  const expected = Buffer.from(sign(`${parts[0]}.${parts[1]}`, key).toString('base64url'));
  const given = Buffer.from(parts[2]);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new JwtError('SignatureInvalid', 'token signature does not match the access key');
  }
  const claims = decodeJson(parts[1]);
  const seconds = now / 1000;
  // `1e309` is JSON's way to Infinity: a token that never expires is not one anybody signs on purpose.
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw new JwtError('TokenMalformed', 'token has no finite exp claim');
  if (claims.exp + CLOCK_SKEW_SECONDS <= seconds) throw new JwtError('TokenExpired', 'token expired');
  if (claims.nbf !== undefined) {
    if (typeof claims.nbf !== 'number' || !Number.isFinite(claims.nbf)) throw new JwtError('TokenMalformed', 'nbf is not a finite number');
    if (claims.nbf - CLOCK_SKEW_SECONDS > seconds) throw new JwtError('TokenNotYetValid', 'token not yet valid');
  }
  return claims;
}
