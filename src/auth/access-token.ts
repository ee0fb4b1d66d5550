// Pub/sub access tokens (Azure Web PubSub): HS256 JWTs signed with a hub's
// access key. Client tokens carry `sub` (user id), `role` and
// `webpubsub.group`; REST tokens are bare. Either way `aud` must name this
// endpoint: one of the token hosts (port and scheme ignored, as for SAS) and
// the request's path (or the hub's canonical client path), compared segment by
// segment decoded, without trailing slashes. A client token's path is compared
// case-insensitively (hub names are) and its query ignored (the client URL
// carries the token there), but for `hub` when the path names no hub
// (`/client/?hub=`); a REST token, signed by the server SDK for the
// request URL, must name the path as sent and, when its `aud` has a query,
// that query: its parameters (`userId`, `role`, `targetName`, `filter`, ...)
// say what the call does.
import { tokenScopeUrl } from './dot-segments.ts';
import { hostListed } from './token-hosts.ts';
import { JwtError, verifyJwt, type JwtClaims } from './jwt.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export type AccessTokenError = 'TokenMissing' | 'TokenInvalid' | 'TokenExpired' | 'AudienceInvalid';

export type AccessTokenResult = { ok: true; claims: JwtClaims } | { ok: false; code: AccessTokenError };

export interface ClientIdentity {
  userId: string | null;
  roles: string[];
  groups: string[];
}

/** How a token's audience is held to the request (client tokens: the defaults). */
export interface AudienceRule {
  /** Compare paths as sent, not lower-cased (REST: group, user and connection names are case-sensitive). */
  exactCase?: boolean;
  /** The request's query as sent: an `aud` with a query must name this one. */
  query?: string;
  /**
   * A client request whose path names no hub (`/client/?hub=chat`): an `aud` naming that path must name `hub` in
   * its own `hub` query (any ASCII case, as hub names compare). Before, its query was ignored, and a token with
   * `aud` `.../client/?hub=chat` opened every hub signed with the same access key (`/client/?hub=other`).
   */
  hubInQuery?: { path: string; hub: string };
}

/** A path's segments, each percent-decoded (lower-cased unless `exactCase`), trailing slashes dropped; undefined when not decodable. */
function pathKey(path: string, exactCase: boolean): string | undefined {
  try {
    const key = path
      .replace(/\/+$/, '')
      .split('/')
      .map((s) => decodeURIComponent(s))
      .join('\u0000');
    return exactCase ? key : asciiLowerCase(key);
  } catch {
    return undefined;
  }
}

/** A query as a URL parser writes it (`?a=b`, '' for none), so one written by a client and one read from a request compare. */
function parsedQuery(query: string): string {
  return new URL(`http://q/?${query}`).search;
}

/** True when `aud` (a string or list) names one of `hosts` and one of `paths`, held to `rule`. */
export function audienceMatches(aud: unknown, paths: string[], hosts: string[], rule: AudienceRule = {}): boolean {
  const audiences = Array.isArray(aud) ? aud : [aud];
  const exactCase = rule.exactCase ?? false;
  const wanted = paths.map((p) => pathKey(p, exactCase));
  const query = rule.query === undefined ? undefined : parsedQuery(rule.query);
  return audiences.some((a) => {
    // A fragment is never part of an endpoint's address: URL parsing would drop it and read what came before.
    if (typeof a !== 'string' || a.includes('#')) return false;
    const url = tokenScopeUrl(a);
    if (!url) return false;
    if (query !== undefined && url.search !== '' && url.search !== query) return false;
    const path = pathKey(url.pathname, exactCase);
    if (path === undefined || !hostListed(url.hostname, hosts) || !wanted.includes(path)) return false;
    const bare = rule.hubInQuery;
    if (bare && path === pathKey(bare.path, exactCase)) return asciiLowerCase(url.searchParams.get('hub') ?? '') === asciiLowerCase(bare.hub);
    return true;
  });
}

/**
 * Verifies a token signed with any of `keys` (the hub's access key first, its
 * secondary key, keys a rotation replaced) whose audience names this endpoint.
 */
export function verifyAccessToken(
  token: string | undefined,
  keys: string | readonly string[],
  paths: string[],
  hosts: string[],
  rule: AudienceRule = {},
): AccessTokenResult {
  if (!token) return { ok: false, code: 'TokenMissing' };
  let claims: JwtClaims | undefined;
  const list = typeof keys === 'string' ? [keys] : keys;
  try {
    for (const [i, key] of list.entries()) {
      try {
        claims = verifyJwt(token, key);
        break;
      } catch (err) {
        // Another key may have signed it.
        if (!(err instanceof JwtError && err.code === 'SignatureInvalid' && i < list.length - 1)) throw err;
      }
    }
  } catch (err) {
    if (err instanceof JwtError && (err.code === 'TokenExpired' || err.code === 'TokenNotYetValid')) {
      return { ok: false, code: 'TokenExpired' };
    }
    return { ok: false, code: 'TokenInvalid' };
  }
  if (!claims) return { ok: false, code: 'TokenInvalid' };
  if (!audienceMatches(claims.aud, paths, hosts, rule)) return { ok: false, code: 'AudienceInvalid' };
  return { ok: true, claims };
}

function stringList(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

/** The longest user id or group name, in characters (code points, as the schemas count them). */
const MAX_NAME_CHARS = 1024;

/** Whether `s` has more than `max` code points (a UTF-16 length up to `max` never has). */
function longerThan(s: string, max: number): boolean {
  if (s.length <= max) return false;
  let n = 0;
  for (const _ of s) if (++n > max) return true;
  return false;
}

/**
 * Why a verified client token names an identity the relay cannot hold (a user id or a group over 1,024
 * characters), or undefined. Refused, not admitted without it: before, such a `sub` connected the client
 * as anonymous (userId null) without a word, and such a group was dropped from its groups.
 */
export function identityRefusal(claims: JwtClaims): string | undefined {
  if (typeof claims.sub === 'string' && longerThan(claims.sub, MAX_NAME_CHARS)) return `the token's sub is longer than ${MAX_NAME_CHARS} characters`;
  if (stringList(claims['webpubsub.group']).some((g) => longerThan(g, MAX_NAME_CHARS))) return `a group of the token is longer than ${MAX_NAME_CHARS} characters`;
  return undefined;
}

/** The identity a verified client token grants. Bad claim types grant nothing (identityRefusal() refuses names too long). */
export function clientIdentityOf(claims: JwtClaims): ClientIdentity {
  const sub = claims.sub;
  return {
    userId: typeof sub === 'string' && sub.length > 0 && !longerThan(sub, MAX_NAME_CHARS) ? sub : null,
    roles: stringList(claims.role),
    groups: stringList(claims['webpubsub.group']).filter((g) => g.length > 0 && !longerThan(g, MAX_NAME_CHARS)),
  };
}

/** Reads a bearer token from an Authorization header. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}
