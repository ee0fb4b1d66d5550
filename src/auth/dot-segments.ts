// Dot segments (`.`, `..`) in a token's resource or audience, or in a request
// path, never widen what a token covers: a URL parser resolves them (so
// `http://h/echo/a/..` read as the whole of `echo`), and a listener that
// resolves `/echo/a/../../b` sees a path no token named. Such paths are
// refused before any scope check (issue 18). Percent-encoded dots count, and
// `\` counts as a separator, as WHATWG URL parsers (and so many listeners)
// read it for http(s). A token's resource or audience is parsed only when the
// parser cannot change its path: it drops tabs and line breaks anywhere and
// spaces at either end (`..<TAB>` became `..`), and takes `http:h/..`
// without `//`, none of which the check on the text as written saw. A
// segment's parameters (`;` and after, RFC 2396) do not hide a dot segment:
// Tomcat, Jetty and Spring drop them before they resolve the path, so
// `/echo/public/..;/admin` is their `/echo/admin`.

import { decodeComponent } from '../validation/percent-decoding.ts';

const SEPARATOR = /[/\\]/;

/** True when `rawPath` (as sent, still percent-encoded) has a `.` or `..` segment. */
export function hasDotSegment(rawPath: string): boolean {
  // A dot segment needs a `.`, as sent or escaped (`%2e`): most paths have neither, and are not split.
  if (!rawPath.includes('.') && !rawPath.includes('%')) return false;
  for (const piece of rawPath.split(SEPARATOR)) {
    let decoded = piece;
    try {
      decoded = decodeComponent(piece);
    } catch {
      // Not percent-encoding: compared as sent.
    }
    for (const part of decoded.split(SEPARATOR)) {
      const name = part.includes(';') ? part.slice(0, part.indexOf(';')) : part;
      if (name === '.' || name === '..') return true;
    }
  }
  return false;
}

/** The path of an absolute URL as written, before any parser resolves it ('' when there is none). */
export function rawUrlPath(url: string): string {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/\\?#]*([^?#]*)/.exec(url)?.[1] ?? '';
}

/** `scheme://` at the start, as every token resource and audience the clients send has. */
const SCHEME_AND_SLASHES = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
/** Characters a URI never holds as written (RFC 3986) and a URL parser drops or reads as `/`: controls, space, `\`. */
const NOT_IN_A_URI = /[\x00-\x20\x7f\\]/;

/**
 * The absolute URL a token names (a SAS resource, a JWT audience), or undefined when the parser could read a path
 * other than the one written (controls, spaces, `\`, no `scheme://`) or the path has a dot segment.
 */
export function tokenScopeUrl(text: string): URL | undefined {
  if (!SCHEME_AND_SLASHES.test(text) || NOT_IN_A_URI.test(text) || hasDotSegment(rawUrlPath(text))) return undefined;
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}
