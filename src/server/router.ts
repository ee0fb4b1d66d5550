// Where a request goes, from its path alone (docs/architecture.md, "Surfaces on
// the one port"). The raw request-target is split by hand: it is hostile input, and
// WHATWG URL parsing would read "//host/x" as a host. A path with dot segments
// is refused: tokens are checked against the path as sent, and a listener that
// resolved `/echo/a/../../b` would serve a path no token covered.
import { hasDotSegment } from '../auth/dot-segments.ts';
import { scopeSegment } from '../auth/sas-authorizer.ts';
import { keepQueryParams } from '../http/query-params.ts';
import type { HybridPathBelow } from '../hybrid/context.ts';
import { decodeComponent } from '../validation/percent-decoding.ts';
export type Route =
  | { kind: 'hybrid-ws'; entity: string; params: URLSearchParams; below: HybridPathBelow }
  | { kind: 'hybrid-http'; entity: string; subPath: string[]; requestTarget: string; params: URLSearchParams }
  | { kind: 'pubsub-client'; hub: string; params: URLSearchParams; path: string }
  | { kind: 'pubsub-rest'; hub: string; segments: string[]; params: URLSearchParams; path: string; query: string }
  | { kind: 'ops'; name: string }
  | { kind: 'not-found' }
  | { kind: 'bad-request' };

/** A `%` not followed by two hex digits: not a URI at all (RFC 3986 2.1). */
const MALFORMED_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/**
 * Removes sb-hc-* parameters (name=value pairs) from a raw query string,
 * keeping the others as sent; a bare `sb-hc-x` with no `=` is no parameter of
 * the protocol and stays, as Azure keeps it.
 */
export function stripProtocolParams(rawQuery: string): string {
  return keepQueryParams(rawQuery, (pair, name) => !pair.includes('=') || !name.toLowerCase().startsWith('sb-hc-'));
}

export function route(rawUrl: string | undefined): Route {
  let url = rawUrl ?? '';
  // absolute-form (RFC 7230 5.3.2): drop scheme and authority.
  const absolute = /^https?:\/\/[^/?#]*/i.exec(url);
  if (absolute) url = url.slice(absolute[0].length) || '/';
  if (!url.startsWith('/') || url.length > 8192) return { kind: 'bad-request' };
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const rawQuery = q < 0 ? '' : url.slice(q + 1);
  if (hasDotSegment(rawPath)) return { kind: 'bad-request' };
  const rawSegments = segmentsOf(rawPath);
  const params = new URLSearchParams(rawQuery);
  let segments: string[];
  try {
    segments = rawSegments.map(decodeComponent);
  } catch {
    // Names (entities, hubs, groups, users) are text. Below an entity, a relayed request's
    // path is the listener's business: escapes that are not UTF-8 go through as sent.
    const entity = relayedEntity(rawSegments[0]);
    if (entity === undefined || MALFORMED_ESCAPE.test(rawPath)) return { kind: 'bad-request' };
    return hybridHttp(entity, rawSegments.slice(1), rawPath, rawQuery, params);
  }
  const [first = '', ...rest] = segments;
  if (first === '$hc') {
    if (rest.length === 0 || rest[0] === '') return { kind: 'not-found' };
    const rawBelow = rawSegments.slice(2);
    const below: HybridPathBelow = {
      subPath: rawBelow.filter((s) => s !== '').map(scopeSegment),
      rawPath: rawBelow.length > 0 ? `/${rawBelow.join('/')}` : '',
      rawQuery: stripProtocolParams(rawQuery),
    };
    return { kind: 'hybrid-ws', entity: rest[0], params, below };
  }
  if (first === '$relay') return { kind: 'ops', name: rest.join('/') };
  // No client sends a fragment (RFC 9112 3.2); on pub/sub a raw `#`, cut off by a URL parser and kept in the query by
  // URLSearchParams, let a REST token signed for `?userId=alice` take `?userId=alice#&role=...` too: refused there.
  // (A relayed request or connect keeps it escaped for its listener.)
  if ((first === 'client' || first === 'api') && url.includes('#')) return { kind: 'bad-request' };
  if (first === 'client') {
    // /client/hubs/{hub}, or /client/?hub={hub} (docs/protocols/web-pubsub.md, "Endpoints")
    if (rest[0] === 'hubs' && rest.length === 2 && rest[1] !== '') {
      return { kind: 'pubsub-client', hub: rest[1], params, path: rawPath };
    }
    const hub = params.get('hub');
    if ((rest.length === 0 || (rest.length === 1 && rest[0] === '')) && hub) {
      return { kind: 'pubsub-client', hub, params, path: rawPath };
    }
    return { kind: 'not-found' };
  }
  if (first === 'api') {
    if (rest.length === 1 && rest[0] === 'health') return { kind: 'ops', name: 'health' };
    if (rest[0] === 'hubs' && rest.length >= 2 && rest[1] !== '') {
      return { kind: 'pubsub-rest', hub: rest[1], segments: rest.slice(2), params, path: rawPath, query: rawQuery };
    }
    return { kind: 'not-found' };
  }
  if (isOtherSurface(first)) return { kind: 'not-found' };
  return hybridHttp(first, rawSegments.slice(1), rawPath, rawQuery, params);
}

/**
 * The path's segments after its leading `/`, as `rawPath.split('/').slice(1)` gives them, by hand: String#split
 * went through V8's runtime, ~2,200 instructions for `/entity/x`, on every request (bench/http-instructions.ts).
 */
function segmentsOf(rawPath: string): string[] {
  const out: string[] = [];
  let from = 1;
  for (;;) {
    const slash = rawPath.indexOf('/', from);
    if (slash < 0) break;
    out.push(rawPath.slice(from, slash));
    from = slash + 1;
  }
  out.push(rawPath.slice(from));
  return out;
}

/**
 * The client protocol Azure Web PubSub serves at a path this relay does not: `/clients/mqtt/hubs/{hub}` and
 * `/clients/socketio/hubs/{hub}`, where @azure/web-pubsub's getClientAccessToken({ clientProtocol }) points MQTT and
 * Socket.IO clients. Such a path routes as a relayed request to an entity `clients`; a WebSocket upgrade there is
 * refused anyway (hybrid WebSockets open under /$hc/), and the refusal can say why.
 */
export function otherClientProtocol(r: Route): 'MQTT' | 'Socket.IO' | undefined {
  if (r.kind !== 'hybrid-http' || r.entity.toLowerCase() !== 'clients' || r.subPath[1] !== 'hubs' || r.subPath.length !== 3) return undefined;
  const protocol = r.subPath[0].toLowerCase();
  return protocol === 'mqtt' ? 'MQTT' : protocol === 'socketio' ? 'Socket.IO' : undefined;
}

/** A first path segment that names no entity: the root, `$...` (relay and hybrid WebSocket addresses), pub/sub. */
function isOtherSurface(first: string): boolean {
  return first === '' || first.startsWith('$') || first === 'client' || first === 'api';
}

/** The entity a path's first segment names for a relayed HTTP request, or undefined (not text, or another surface's). */
function relayedEntity(rawFirst = ''): string | undefined {
  let first: string;
  try {
    first = decodeComponent(rawFirst);
  } catch {
    return undefined;
  }
  return isOtherSurface(first) ? undefined : first;
}

function hybridHttp(entity: string, rawBelow: string[], rawPath: string, rawQuery: string, params: URLSearchParams): Route {
  const kept = stripProtocolParams(rawQuery);
  return {
    kind: 'hybrid-http',
    entity,
    subPath: rawBelow.filter((s) => s !== '').map(scopeSegment),
    requestTarget: kept ? `${rawPath}?${kept}` : rawPath,
    params,
  };
}
