// How a bridge reaches the relay: its base URL, either a SAS rule (key name
// and key, from which a token is minted per entity) or a fixed token, and for
// an https:// or wss:// relay the CA to trust and a client certificate. With
// credentials that never change (a fixed token, or none) a refusal for them
// (401) or the fixed token's expiry is the end of the bridge, not a reason to
// try again: `ended` says why. An end is gentle: the bridge takes no new
// connections from then on and exits once those open have ended
// (src/cli/bridge.ts), since the relay, as Azure's does, lets a relayed
// connection outlive the token it was opened with (docs/security.md).
import type { ClientOptions } from 'ws';
import { createSasToken, resourceForUrl } from '../auth/sas-token.ts';
import { tokenExpiresAt } from '../auth/token-expiry.ts';

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

/** The longest delay a Node timer takes (about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export class RelayAccess {
  readonly wsBase: string;
  /** When the fixed token expires (Unix seconds), when it names its expiry (a SAS token's `se`, a JWT's `exp`). */
  readonly fixedTokenExpiresAt: number | undefined;
  /**
   * Resolves with why once the bridge's credentials are refused for good or its fixed token expired (giveUp): no new
   * connection can be made with them, and the bridge winds down (its open connections go on until they end).
   */
  readonly ended: Promise<string>;
  private end!: (why: string) => void;
  private expiryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: RelayAccessOptions) {
    this.wsBase = options.url.replace(/\/+$/, '').replace(/^http(s?):/i, 'ws$1:');
    this.fixedTokenExpiresAt = options.token ? tokenExpiresAt(options.token) : undefined;
    this.ended = new Promise((resolve) => (this.end = resolve));
  }

  /**
   * What a 401 from the relay means for this bridge: a reason to end it when its credentials are the same at every
   * try (a fixed token, or none), so no retry can be let in; undefined when it mints a new token each time (a key
   * put back on the relay lets the next one in), and the caller tries again as after any refusal.
   */
  refusedForGood(entity: string, answer: string): string | undefined {
    if (this.mintsTokens) return undefined;
    const why = this.options.token
      ? `the relay refused --token for ${entity} (${answer}): a ready token is used as it is, never renewed; give a new one, or --key-name with --key-file to mint tokens`
      : `the relay wants a token for ${entity} (${answer}): give --token, or --key-name with --key-file`;
    this.giveUp(why);
    return why;
  }

  /** Winds the bridge down: `ended` resolves with `why` (the first reason given). */
  giveUp(why: string): void {
    this.end(why);
  }

  /**
   * Winds the bridge down when its fixed token expires (giveUp), not when the relay next refuses it: a -L would take
   * connections that all fail, a -R would be closed and refused. Call once at start; stop() clears it.
   */
  watchExpiry(now = Date.now()): void {
    const at = this.fixedTokenExpiresAt;
    if (at === undefined) return;
    const left = at * 1000 - now;
    if (left <= 0) return this.giveUp(tokenExpiredWhy(at));
    // In steps a timer can wait: a token good for years is watched too.
    this.expiryTimer = setTimeout(() => this.watchExpiry(), Math.min(left, MAX_TIMER_MS));
    this.expiryTimer.unref();
  }

  stop(): void {
    clearTimeout(this.expiryTimer);
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

/** Why a fixed token that expired at `seconds` (Unix) ends the bridge: at start (exit 2) or when it comes (watchExpiry). */
export function tokenExpiredWhy(seconds: number): string {
  return `--token expired at ${expiryText(seconds)}: a ready token is never renewed; give a new one, or --key-name with --key-file to mint tokens`;
}

/** A token's expiry for a message: ISO 8601 with the Unix seconds it was written as. */
function expiryText(seconds: number): string {
  const ms = seconds * 1000;
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? `${new Date(ms).toISOString()} (${seconds})` : String(seconds);
}
