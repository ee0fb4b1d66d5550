// Filtering a raw query string by parameter name while keeping every pair it
// keeps exactly as sent (a relayed request's query is the listener's business:
// re-encoding it would change what the sender wrote).

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
