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

  /** Options for every WebSocket the bridge opens to the relay (control channel, legs, connects). */
  get socketOptions(): ClientOptions {
    return { ...this.options.tls };
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

  /** URL for `action` (connect or listen) on the entity, with a token when there is one. */
  actionUrl(entity: string, action: 'connect' | 'listen'): string {
    const token = this.token(entity);
    const tokenParam = token ? `&sb-hc-token=${encodeURIComponent(token)}` : '';
    return `${this.entityUrl(entity)}?sb-hc-action=${action}${tokenParam}`;
  }
}
