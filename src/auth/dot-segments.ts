// Dot segments (`.`, `..`) in a token's resource or audience, or in a request
// path, never widen what a token covers: a URL parser resolves them (so
// `http://h/echo/a/..` read as the whole of `echo`), and a listener that
// resolves `/echo/a/../../b` sees a path no token named. Such paths are
// refused before any scope check (issue 18). Percent-encoded dots count, and
// `\` counts as a separator, as WHATWG URL parsers (and so many listeners)
// read it for http(s).

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
    for (const part of decoded.split(SEPARATOR)) if (part === '.' || part === '..') return true;
  }
  return false;
}

/** The path of an absolute URL as written, before any parser resolves it ('' when there is none). */
export function rawUrlPath(url: string): string {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/\\?#]*([^?#]*)/.exec(url)?.[1] ?? '';
}
