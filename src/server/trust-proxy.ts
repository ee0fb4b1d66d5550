// listen.trustProxy (docs/security.md, "Behind a load balancer"): a request
// whose TCP peer is one of these proxies is taken to come from the client
// that X-Forwarded-For names, and to be addressed to the host that
// X-Forwarded-Host names. From any other peer, or without the setting, the
// headers are ignored: anyone can write them. The client is the right-most
// address of X-Forwarded-For that is not itself a trusted proxy (each proxy
// appends the peer it saw; only the part written by trusted proxies can be
// believed; a port after an address is dropped), and the host the right-most
// value of X-Forwarded-Host (the one the proxy in front wrote). X-Forwarded-Proto is not needed: token checks ignore the scheme,
// as Azure's clients sign http:// resources for wss:// connections.
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { connectionPeer, mayCarryForwardedHeaders, setForwardedClient, unmappedIpv4 } from '../http/client-address.ts';
import { isHostAuthority } from '../http/host-header.ts';

/** Addresses read from one X-Forwarded-For (a longer chain is cut from the left: the right end is what trusted proxies wrote). */
const MAX_HOPS = 32;

/**
 * A forwarded address without the port some balancers add (Azure Application Gateway writes
 * `10.0.0.1:5555`; IPv6 `[2001:db8::1]:5555`); an IPv4 one as on a dual-stack socket compared as IPv4.
 */
function addressOf(hop: string): string {
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d{1,5}$/.exec(hop);
  if (v4) return v4[1];
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/i.exec(hop);
  return unmappedIpv4(v6 ? v6[1] : hop);
}

/** The right-most value of a list header: what the trusted proxy in front wrote (a client can write the ones to its left). */
function lastValue(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header.join(',') : header;
  const last = text?.split(',').pop()?.trim();
  return last === '' ? undefined : last;
}

export class ProxyTrust {
  private proxies: BlockList | undefined;

  constructor(entries: string[]) {
    this.configure(entries);
  }

  /** Addresses and CIDRs (checked by config/load.ts), as on start or reload. */
  configure(entries: string[]): void {
    if (entries.length === 0) {
      this.proxies = undefined;
      return;
    }
    const list = new BlockList();
    for (const entry of entries) {
      const [address, bits] = entry.split('/');
      const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) list.addAddress(address, family);
      else list.addSubnet(address, Number(bits), family);
    }
    this.proxies = list;
  }

  trusts(address: string | undefined): boolean {
    if (!this.proxies || !address) return false;
    const a = unmappedIpv4(address);
    const family = isIP(a);
    return family !== 0 && this.proxies.check(a, family === 6 ? 'ipv6' : 'ipv4');
  }

  /** Takes the client and host from a trusted proxy's headers, before anything reads them. */
  apply(req: IncomingMessage): void {
    if (!this.proxies || !mayCarryForwardedHeaders(req.socket) || !this.trusts(connectionPeer(req.socket).address)) return;
    const client = this.clientOf(req.headers['x-forwarded-for']);
    if (client) setForwardedClient(req, client);
    const host = lastValue(req.headers['x-forwarded-host']);
    if (host && isHostAuthority(host)) req.headers.host = host;
  }

  private clientOf(header: string | string[] | undefined): string | undefined {
    if (header === undefined) return undefined;
    const hops = (Array.isArray(header) ? header.join(',') : header)
      .split(',')
      .map((h) => addressOf(h.trim()))
      .slice(-MAX_HOPS);
    let client: string | undefined;
    for (let i = hops.length - 1; i >= 0; i--) {
      // Past something that is not an address, nothing further left can be believed.
      if (isIP(hops[i]) === 0) break;
      client = hops[i];
      if (!this.trusts(hops[i])) break;
    }
    return client;
  }
}
