// Which host names a token (SAS resource, JWT audience) may name for a
// request: the configured namespace hosts when set, else this relay's public
// host and the request's own Host header. Ports and schemes are ignored by
// the callers, as clients rewrite them.
import type { IncomingMessage } from 'node:http';

export function tokenHostsFor(req: IncomingMessage, namespaceHosts: string[], publicHost: string): string[] {
  return tokenHostsForHost(req.headers.host, namespaceHosts, publicHost);
}

/** The same for a connection that outlives its request (a listener's control channel): from the Host header it came with. */
export function tokenHostsForHost(host: string | undefined, namespaceHosts: string[], publicHost: string): string[] {
  if (namespaceHosts.length > 0) return namespaceHosts;
  const hosts = [publicHost];
  if (host) {
    try {
      hosts.push(new URL(`http://${host}`).hostname);
    } catch {
      // A malformed Host header names nothing.
    }
  }
  return hosts;
}

/** Host names compare case-insensitively, IPv6 with or without brackets. */
export function hostListed(host: string, hosts: string[]): boolean {
  const bare = (h: string) => h.toLowerCase().replace(/^\[|\]$/g, '');
  const wanted = bare(host);
  return hosts.some((h) => bare(h) === wanted);
}
