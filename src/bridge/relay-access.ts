// How a bridge reaches the relay: its base URL, either a SAS rule (key name
// and key, from which a token is minted per entity) or a fixed token, and for
// an https:// or wss:// relay the CA to trust and a client certificate.
import type { ClientOptions } from 'ws';
import { createSasToken, resourceForUrl } from '../auth/sas-token.ts';

export interface RelayAccessOptions {
  /** http(s):// or ws(s):// base URL of the relay. */
  url: string;
  keyName?: string;
  key?: string;
  /** A ready SAS token (used as is for every entity). */
  token?: string;
  tokenTtlSeconds: number;
  /** CA certificates to trust and a client certificate (listen.tls.requireClientCert on the relay). */
  tls?: { ca?: Buffer[]; cert?: Buffer; key?: Buffer };
  /** How long the relay may take to answer any handshake (a -L connect waits for the listener to accept). */
  handshakeTimeoutMs?: number;
}

/**
 * True when no intermediary can read the frames sent to `url`: over TLS
 * (wss://), or to a loopback address. RFC 6455 masks a client's frames with an
 * unpredictable key so that a script in a browser cannot make its bytes look
 * like a request to a caching proxy that reads the plain stream; neither holds
 * here (the bridge sends what its local TCP peer sends, and no proxy reads TLS
 * or loopback). There, a zero key is sent: `ws` then skips the copy that masks
 * every byte and the relay skips unmasking (frame-parser.ts), the largest
 * per-byte cost of the bridge chain. Anywhere else the key is random.
 */
export function masksHidden(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol === 'wss:' || parsed.protocol === 'https:') return true;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

export class RelayAccess {
  readonly wsBase: string;

  constructor(private readonly options: RelayAccessOptions) {
    this.wsBase = options.url.replace(/\/+$/, '').replace(/^http(s?):/i, 'ws$1:');
  }

  /** A token for the entity, or undefined when the bridge has no credentials (entities open to senders). */
  token(entity: string): string | undefined {
    if (this.options.token) return this.options.token;
    if (this.options.keyName === undefined || this.options.key === undefined) return undefined;
    const expiresAt = Math.floor(Date.now() / 1000) + this.options.tokenTtlSeconds;
    return createSasToken(resourceForUrl(this.entityUrl(entity)), this.options.keyName, this.options.key, expiresAt);
  }

  /**
   * Options for a WebSocket the bridge opens to `url` on the relay (control
   * channel, legs, connects). No permessage-deflate (the relay offers none and
   * forwarded TCP is opaque), and where nothing between the bridge and the
   * relay can read the frames the masking key is zero (masksHidden). `longerMs` is added to the handshake's bound.
   */
  socketOptions(url: string, longerMs = 0): ClientOptions {
    return {
      ...this.options.tls,
      perMessageDeflate: false,
      ...(this.options.handshakeTimeoutMs !== undefined ? { handshakeTimeout: this.options.handshakeTimeoutMs + longerMs } : {}),
      ...(masksHidden(url) ? { generateMask: zeroMask } : {}),
    };
  }

  get tokenTtlSeconds(): number {
    return this.options.tokenTtlSeconds;
  }

  get mintsTokens(): boolean {
    return !this.options.token && this.options.keyName !== undefined;
  }

  entityUrl(entity: string): string {
    return `${this.wsBase}/$hc/${encodeURIComponent(entity)}`;
  }

  /** URL for `action` (connect or listen) on the entity; its token goes in a header (actionOptions). */
  actionUrl(entity: string, action: 'connect' | 'listen'): string {
    return `${this.entityUrl(entity)}?sb-hc-action=${action}`;
  }

  /**
   * socketOptions for an actionUrl of `entity`, with the token, when there is
   * one, in the ServiceBusAuthorization header, as Azure's own clients send it
   * (`sb-hc-token` is for browsers, which cannot set a WebSocket's headers).
   * Before, it went in the query, which a proxy or load balancer before the
   * relay writes to its access log: a Listen or Send token for its lifetime.
   */
  actionOptions(entity: string, longerMs = 0): ClientOptions {
    const token = this.token(entity);
    const options = this.socketOptions(this.wsBase, longerMs);
    return token ? { ...options, headers: { ServiceBusAuthorization: token } } : options;
  }
}
