// What a Host (or X-Forwarded-Host) header may hold before the relay writes it
// into anything: a name or an address, with an optional port, and nothing
// else (no path, query, fragment or credentials a URL parser would read).

const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;

/** True for `host`, `host:port`, `1.2.3.4:5`, `[::1]:5`. */
export function isHostAuthority(value: string): boolean {
  return AUTHORITY.test(value);
}

/** A host as it goes before `:port` (a URL's authority, a HOST:PORT line): an IPv6 address in brackets. */
export function hostBeforePort(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
