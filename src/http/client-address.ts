// Where a request came from, as the relay believes it: the TCP peer, or, when
// that peer is a proxy the config trusts (listen.trustProxy, decided by
// server/trust-proxy.ts), the client the proxy names in X-Forwarded-For. Used
// for the per-address connection rate, logs, and the remote endpoint a
// listener is told about.
import type { IncomingMessage } from 'node:http';

export interface ClientEndpoint {
  address: string;
  /** 0 when a proxy named the client (X-Forwarded-For carries no port). */
  port: number;
}

const forwarded = new WeakMap<IncomingMessage, ClientEndpoint>();

/** Records the client a trusted proxy named for this request. */
export function setForwardedClient(req: IncomingMessage, address: string): void {
  forwarded.set(req, { address, port: 0 });
}

export function clientEndpoint(req: IncomingMessage): ClientEndpoint {
  return forwarded.get(req) ?? { address: req.socket.remoteAddress ?? '', port: req.socket.remotePort ?? 0 };
}

export function clientAddress(req: IncomingMessage): string {
  return clientEndpoint(req).address;
}
