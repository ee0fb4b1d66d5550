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

/**
 * RFC 3986's host and an optional port: an IP literal in brackets (IPv6 with a zone id as Node's client writes it,
 * `[fe80::1%eth0]`, or RFC 6874's `%25eth0`; or IPvFuture, `[v1.x]`), or a reg-name (unreserved, sub-delims, %-escapes).
 */
const REQUEST_AUTHORITY = /^(\[[0-9A-Fa-f:.]+(%[A-Za-z0-9\-._~%]+)?\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?$/;

/**
 * Whether a request's Host lines are one (or none, HTTP/1.0) and hold an
 * authority: RFC 9112 3.2 has a server answer 400 to more than one, or to one
 * that is not a valid host. Node keeps the first of several, where a proxy
 * before the relay may have read another; and `Host: a/b?c#d` was taken.
 */
export function hostLinesValid(rawHeaders: readonly string[]): boolean {
  let seen = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length !== 4 || rawHeaders[i].toLowerCase() !== 'host') continue;
    if (++seen > 1 || !REQUEST_AUTHORITY.test(rawHeaders[i + 1])) return false;
  }
  return true;
}
