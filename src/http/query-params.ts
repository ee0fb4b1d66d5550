// Filtering a raw query string by parameter name while keeping every pair it
// keeps exactly as sent (a relayed request's query is the listener's business:
// re-encoding it would change what the sender wrote), and reading a parameter
// by its name in any ASCII case.
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** A `name[=value]` pair's name, decoded as URLSearchParams decodes it (`+` is a space); as sent when its escapes are not UTF-8. */
function nameOf(pair: string): string {
  const raw = pair.split('=', 1)[0];
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

/** The pairs of `rawQuery` that `keep` keeps (given each pair as sent and its decoded name), joined as sent. */
export function keepQueryParams(rawQuery: string, keep: (pair: string, name: string) => boolean): string {
  if (rawQuery === '') return '';
  return rawQuery
    .split('&')
    .filter((pair) => keep(pair, nameOf(pair)))
    .join('&');
}

/**
 * The value of the first parameter in `params` whose name is `name` in any ASCII case, as URLSearchParams.get
 * finds the first of an exact name; null when there is none. The relay's own parameters (sb-hc-*) are read so:
 * they are stripped from what a listener sees in any case (hybrid/context.ts, server/router.ts), as Microsoft's
 * .NET client strips them (OrdinalIgnoreCase), and an ASP.NET query, which a .NET service reads, finds names
 * without regard to case. Before, they were read in lower case only (the status pair in camel case): a sender's
 * `Sb-Hc-Token=...` was stripped and refused 401 TokenMissing. Only A-Z fold (validation/ascii-case.ts says why).
 */
export function paramInAnyCase(params: URLSearchParams, name: string): string | null {
  const wanted = asciiLowerCase(name);
  for (const [key, value] of params) if (key === name || asciiLowerCase(key) === wanted) return value;
  return null;
}
