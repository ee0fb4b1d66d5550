// Where a request came from, as the relay believes it: the TCP peer, or the
// client a load balancer named for the connection in a PROXY protocol header
// (listen.proxyProtocol, server/proxy-protocol.ts), or, when that peer is a
// proxy the config trusts (listen.trustProxy, decided by
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
/** Connections whose peer a PROXY protocol header named, by their TCP socket. */
const proxied = new WeakMap<object, ClientEndpoint>();
/**
 * Connections whose PROXY protocol header named no client (v2 LOCAL or
 * UNSPEC, v1 UNKNOWN): the balancer's own, or a client it could not name.
 * A balancer in TCP mode writes no X-Forwarded-For, so any on them was
 * written by whoever is behind it, and is not believed.
 */
const unnamed = new WeakSet<object>();

/** Records the client a trusted proxy named for this request. */
export function setForwardedClient(req: IncomingMessage, address: string): void {
  forwarded.set(req, { address, port: 0 });
}

/** Records the client a PROXY protocol header named for the connection of `socket` (its TCP socket), or that it named none. */
export function setConnectionPeer(socket: object, peer: ClientEndpoint | 'unnamed'): void {
  if (peer === 'unnamed') unnamed.add(socket);
  else proxied.set(socket, peer);
}

/**
 * The socket a PROXY protocol header was read from: `socket` itself, or for a
 * TLS socket the TCP socket it wraps (Node's `_parent`).
 */
function headerSocket(socket: object): object {
  const parent = (socket as { _parent?: unknown })._parent;
  return typeof parent === 'object' && parent !== null ? parent : socket;
}

/** Whether a proxy's X-Forwarded-* headers on this connection may be believed at all (trust-proxy.ts): not when its PROXY header named no client. */
export function mayCarryForwardedHeaders(socket: object): boolean {
  return !unnamed.has(headerSocket(socket));
}

/** The peer of a connection: the client its PROXY protocol header named, else the TCP peer. */
export function connectionPeer(socket: { remoteAddress?: string; remotePort?: number }): ClientEndpoint {
  return proxied.get(headerSocket(socket)) ?? { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
}

export function clientEndpoint(req: IncomingMessage): ClientEndpoint {
  return forwarded.get(req) ?? connectionPeer(req.socket);
}

/** An IPv4 address mapped into IPv6, as Node reports an IPv4 peer of a socket listening on `::` (dual stack). */
const IPV4_MAPPED = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** `address` with an IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) written as IPv4 (`a.b.c.d`); any other as it is. */
export function unmappedIpv4(address: string): string {
  return IPV4_MAPPED.exec(address)?.[1] ?? address;
}

/**
 * The sender as a listener is told it (`remoteEndpoint` of an accept or request): an IPv4 client as `a.b.c.d`
 * whether the relay listens on `0.0.0.0` or on `::` (before, `::ffff:a.b.c.d` on `::`, so a listener's allow
 * list or log of IPv4 addresses, or .NET's RemoteEndPoint.AddressFamily, depended on how the relay was bound).
 */
export function remoteEndpointOf(req: IncomingMessage): ClientEndpoint {
  const endpoint = clientEndpoint(req);
  const address = unmappedIpv4(endpoint.address);
  return address === endpoint.address ? endpoint : { address, port: endpoint.port };
}

export function clientAddress(req: IncomingMessage): string {
  return clientEndpoint(req).address;
}
