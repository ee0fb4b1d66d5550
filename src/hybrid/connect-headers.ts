// The sender's handshake headers as a listener reads them in an accept's
// `connectHeaders` (docs/protocols/hybrid-connections.md, "Control channel
// messages"): all of them but its credential, with Sec-WebSocket-Extensions
// holding only the offers a server could accept (RFC 7692 5 and 7.1). The
// relay answers the sender's handshake itself and takes up no extension, so
// an offer RFC 7692 says a server declines (an unknown, repeated or empty
// parameter, a window size outside 8-15) means nothing to the listener; and
// Microsoft's hyco-ws threw on one outside any handler (its reject path calls
// an undefined WebSocketClient): a sender's `permessage-deflate; x` ended the
// listener's process.
import type { IncomingMessage } from 'node:http';
import { senderHeaders, type CredentialHeaders } from './sender-credential.ts';

const WINDOW_BITS = /^(?:8|9|1[0-5])$/;

/** permessage-deflate's parameters (RFC 7692 7.1): whether each takes a value, and which. */
const DEFLATE_PARAMS: Record<string, (value: string | undefined) => boolean> = {
  server_no_context_takeover: (v) => v === undefined,
  client_no_context_takeover: (v) => v === undefined,
  server_max_window_bits: (v) => v !== undefined && WINDOW_BITS.test(v),
  client_max_window_bits: (v) => v === undefined || WINDOW_BITS.test(v),
};

/** Whether one offer (`name; param; param=value`) is one a server could accept; other extensions than permessage-deflate pass as they are. */
function acceptableOffer(offer: string): boolean {
  const [name, ...params] = offer.split(';').map((p) => p.trim());
  if (name === '') return false;
  if (name.toLowerCase() !== 'permessage-deflate') return true;
  const seen = new Set<string>();
  return params.every((param) => {
    // No space around '=' (RFC 6455 9.1's extension-param): hyco-ws's ws 1.1 read `bits = 10` as a parameter `bits `.
    const [key, value, ...rest] = param.split('=');
    const check = Object.hasOwn(DEFLATE_PARAMS, key) ? DEFLATE_PARAMS[key] : undefined;
    if (!check || rest.length > 0 || seen.has(key)) return false;
    seen.add(key);
    return check(value?.replace(/^"(.*)"$/, '$1'));
  });
}

/** The accept's connectHeaders for a sender's upgrade. */
export function connectHeadersOf(req: IncomingMessage, credential: CredentialHeaders): Record<string, string> {
  const headers = senderHeaders(req, credential);
  const offers = headers['sec-websocket-extensions'];
  if (offers === undefined) return headers;
  const kept = offers.split(',').map((o) => o.trim()).filter(acceptableOffer);
  if (kept.length > 0) headers['sec-websocket-extensions'] = kept.join(', ');
  else delete headers['sec-websocket-extensions'];
  return headers;
}
