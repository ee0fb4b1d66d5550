// Shared Access Signature tokens made in the browser, as `edge-relay token
// sas` makes them (src/auth/sas-token.ts): HMAC-SHA256 over the URL-encoded
// resource, a newline and the expiry, by WebCrypto: the page signs only in a
// secure context (https, or http on localhost; app.js refuses elsewhere).
// The key never leaves this page's memory.

const PREFIX = 'SharedAccessSignature ';

/** The token for `resource`, valid `ttlSeconds` from now. */
export async function sasToken(resource, keyName, key, ttlSeconds = 3600) {
  const expiresAt = Math.floor(Date.now() / 1000) + ttlSeconds;
  const sr = encodeURIComponent(resource);
  const signature = await hmacBase64(key, `${sr}\n${expiresAt}`);
  return `${PREFIX}sr=${sr}&sig=${encodeURIComponent(signature)}&se=${expiresAt}&skn=${encodeURIComponent(keyName)}`;
}

/** The expiry (unix seconds) and key name of a token, or undefined when it is not a SAS token. */
export function parseSas(token) {
  if (typeof token !== 'string' || !token.startsWith(PREFIX)) return undefined;
  const fields = new URLSearchParams(token.slice(PREFIX.length).trim().replace(/\+/g, '%2B'));
  const se = Number(fields.get('se'));
  if (!fields.get('sr') || !fields.get('sig') || !Number.isInteger(se) || !fields.get('skn')) return undefined;
  return { expiresAt: se, keyName: fields.get('skn') };
}

async function hmacBase64(key, text) {
  const enc = new TextEncoder();
  const keyBytes = enc.encode(key);
  const data = enc.encode(text);
  const k = await crypto.subtle.importKey('raw', keyBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', k, data));
  let binary = '';
  for (const b of mac) binary += String.fromCharCode(b);
  return btoa(binary);
}
