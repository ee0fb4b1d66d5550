// What headers cross the relay, each way, for a relayed HTTP request
// (docs/protocols/hybrid-connections.md, "HTTP mode"): the sender's, less its
// credential and this hop's own, with the relay added to Via, to the
// listener; the listener's, checked and with one Content-Length at most, to
// the sender; and the listener's statusDescription as a reason phrase.
import type { IncomingMessage } from 'node:http';
import { safeReason } from '../websocket/handshake.ts';
import type { ListenerResponse } from './control-channel.ts';
import { contentLengthOf } from './response-body.ts';
import { senderHeaders, type CredentialHeaders } from './sender-credential.ts';

// Proxy-Authorization and Proxy-Authenticate concern the next hop only (RFC 9110 11.7.1-2): a sender's proxy
// password is not handed to another party's listener, nor a listener's proxy challenge to the sender.
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'proxy-authenticate',
]);
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The hop-by-hop headers of one message: the fixed ones, and those its
 * `Connection` header names (RFC 9110 7.6.1: `Connection: close, X-Private`
 * makes `X-Private` this hop's own, not passed on).
 */
function withConnectionOptions(connection: string | string[] | undefined, fixed: ReadonlySet<string> = HOP_BY_HOP): ReadonlySet<string> {
  if (connection === undefined) return fixed;
  // Never the message's framing or its Host: naming those is an attempt to desynchronise, not an option.
  const named = (Array.isArray(connection) ? connection.join(',') : connection)
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && t !== 'content-length' && t !== 'host' && !HOP_BY_HOP.has(t));
  return named.length === 0 ? fixed : new Set([...fixed, ...named]);
}

/**
 * A request's hop-by-hop headers, but for Transfer-Encoding: a listener is
 * told that the body's length was not known up front, as node:http tells a
 * server (the header kept, the body handed on decoded). Without it, code that
 * reads a body only when one is announced (body-parser's `type-is.hasBody`
 * behind hyco-https) saw a chunked upload as no body at all.
 */
const REQUEST_HOP_BY_HOP: ReadonlySet<string> = new Set([...HOP_BY_HOP].filter((h) => h !== 'transfer-encoding'));

/**
 * The request's headers as a listener sees them: no credential, no
 * hop-by-hop, and this relay added to `Via` (RFC 9110 7.6.3), as Azure adds itself:
 * `{the protocol version the request came in} {viaName}` (before, always 1.1).
 */
export function forwardedRequestHeaders(req: IncomingMessage, credential: CredentialHeaders, viaName: string): Record<string, string> {
  const out = senderHeaders(req, credential, withConnectionOptions(req.headers.connection, REQUEST_HOP_BY_HOP));
  const entry = `${req.httpVersion} ${viaName}`;
  out.via = out.via ? `${out.via}, ${entry}` : entry;
  return out;
}

/**
 * A listener's response headers made safe for the sender, or undefined when
 * unusable. The relay frames the body itself (response-body.ts): at most one
 * Content-Length passes, whatever its spelling, and only as one number.
 * With `viaName`, this relay is added to the `Via` header (`1.1 {viaName}`): Azure's sign that the
 * answer came from the listener, not from the relay.
 */
export function responseHeadersForSender(
  headers: ListenerResponse['responseHeaders'],
  viaName?: string,
): Record<string, string | string[]> | undefined {
  const out: Record<string, string | string[]> = {};
  if (!headers) {
    if (viaName !== undefined) out.via = `1.1 ${viaName}`;
    return out;
  }
  // One list of names read twice (a Connection header may come after what it names), no array or closure per header:
  // this runs for every relayed answer (bench/http-instructions.ts).
  const names = Object.keys(headers);
  const hopByHop = withConnectionOptions(connectionValues(headers, names));
  let lengths: string[] | undefined;
  let vias: string[] | undefined;
  for (const name of names) {
    if (!HEADER_NAME.test(name)) return undefined;
    const lower = name.toLowerCase();
    if (hopByHop.has(lower)) continue;
    const value = headers[name];
    const text = headerText(value);
    if (Array.isArray(text)) {
      for (const v of text) if (UNSAFE_VALUE.test(v)) return undefined;
    } else if (UNSAFE_VALUE.test(text)) return undefined;
    if (lower === 'content-length') (lengths ??= []).push(...asList(text));
    else if (viaName !== undefined && lower === 'via') (vias ??= []).push(...asList(text));
    else setHeader(out, name, text);
  }
  // An empty list (`"Content-Length": []`, `"Via": []`, which the schema allows) is no header, as before the one pass.
  if (lengths && lengths.length > 0) {
    const length = contentLengthOf(lengths);
    if (length === undefined) return undefined;
    out['content-length'] = String(length);
  }
  if (viaName !== undefined) out.via = vias && vias.length > 0 ? `${vias.join(', ')}, 1.1 ${viaName}` : `1.1 ${viaName}`;
  return out;
}

/** A character no header value may carry: it would end the line, or the head, on the sender's side. */
const UNSAFE_VALUE = /[\r\n\0]/;

/** A header's value as text: numbers and booleans written as node:http's setHeader does (hyco-https passes them on as set). */
function headerText(value: string | number | boolean | (string | number | boolean)[]): string | string[] {
  return Array.isArray(value) ? value.map(String) : String(value);
}

function asList(text: string | string[]): string[] {
  return Array.isArray(text) ? text : [text];
}

/** The values of the listener's `Connection` header, in any spelling, as text; undefined without one. */
function connectionValues(headers: NonNullable<ListenerResponse['responseHeaders']>, names: string[]): string[] | undefined {
  let out: string[] | undefined;
  for (const name of names) {
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue;
    (out ??= []).push(...asList(headerText(headers[name])));
  }
  return out;
}

/**
 * A listener's statusDescription as the status line's reason phrase: what HTTP allows there (visible ASCII,
 * space, tab, and bytes 0x80-0xFF, which node:http writes as Latin-1, as hyco-https and .NET listeners read
 * them), anything else a space; bounded. Before, every character outside ASCII became a space ("Tr s Bien").
 */
export function relayedReason(text: string | undefined, status: number): string {
  return safeReason(text, status, true);
}

/**
 * Sets `name` on a headers object the listener names: `__proto__` is a header like any other, where an assignment
 * took it for the object's prototype and the header was lost (found by review). Assigned otherwise: Object.fromEntries
 * for every answer cost the relayed request path about 10 % more instructions.
 */
export function setHeader(headers: Record<string, string | string[]>, name: string, value: string | string[]): void {
  if (name === '__proto__') Object.defineProperty(headers, name, { value, enumerable: true, writable: true, configurable: true });
  else headers[name] = value;
}
