// Shared Access Signature tokens, byte-compatible with Azure Relay
// (docs/protocols/hybrid-connections.md, "Tokens"):
//   SharedAccessSignature sr={enc resource}&sig={enc base64 HMAC}&se={unix s}&skn={key name}
// The signed string is the URL-encoded resource exactly as it appears in the
// token, "\n", and the expiry; HMAC-SHA256 keyed with the key's UTF-8 bytes.
import { createHmac, timingSafeEqual } from 'node:crypto';

const PREFIX = 'SharedAccessSignature ';
/** The latest expiry a token may carry: `se` has at most 12 digits (Azure's and this relay's parsers). */
export const MAX_SAS_EXPIRY = 999_999_999_999;
const MAX_TOKEN_LENGTH = 4096;

export interface ParsedSasToken {
  /** sr exactly as written in the token (still URL-encoded): what was signed. */
  encodedResource: string;
  /** sr decoded: a URI such as http://host/entity. */
  resource: string;
  signature: string;
  expiresAt: number;
  keyName: string;
}

export function signSas(encodedResource: string, expiresAt: number, key: string): string {
  return createHmac('sha256', key).update(`${encodedResource}\n${expiresAt}`).digest('base64');
}

export function createSasToken(resource: string, keyName: string, key: string, expiresAt: number): string {
  const sr = encodeURIComponent(resource);
  const sig = signSas(sr, expiresAt, key);
  return `${PREFIX}sr=${sr}&sig=${encodeURIComponent(sig)}&se=${expiresAt}&skn=${encodeURIComponent(keyName)}`;
}

/**
 * The resource a client signs for a relay URL, the way hyco-ws/hyco-https do:
 * scheme http, no query or fragment, no "$hc/" in the path. Their
 * createRelayToken means to drop the port but keeps it (url.format prefers
 * `host`), so this keeps it too; the relay ignores ports when it matches.
 */
export function resourceForUrl(url: string): string {
  const u = new URL(url);
  const path = u.pathname.replace(/^\/\$hc(\/|$)/, '/');
  return `http://${u.host}${path}`;
}

/** Parses a token; returns undefined when it is not a well-formed SAS token. */
export function parseSasToken(token: string): ParsedSasToken | undefined {
  if (token.length > MAX_TOKEN_LENGTH || !token.startsWith(PREFIX)) return undefined;
  const fields = new Map<string, string>();
  for (const pair of token.slice(PREFIX.length).trim().split('&')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) return undefined;
    const name = pair.slice(0, eq);
    if (fields.has(name)) return undefined;
    fields.set(name, pair.slice(eq + 1));
  }
  const sr = fields.get('sr');
  const sig = fields.get('sig');
  const se = fields.get('se');
  const skn = fields.get('skn');
  if (!sr || !sig || !se || !skn || !/^\d{1,12}$/.test(se)) return undefined;
  try {
    return {
      encodedResource: sr,
      resource: decodeURIComponent(sr),
      signature: decodeURIComponent(sig),
      expiresAt: Number(se),
      keyName: decodeURIComponent(skn),
    };
  } catch {
    return undefined;
  }
}

export function signatureMatches(token: ParsedSasToken, key: string): boolean {
  const expected = Buffer.from(signSas(token.encodedResource, token.expiresAt, key));
  const given = Buffer.from(token.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}
