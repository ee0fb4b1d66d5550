// A listener's HTTP answers reach browsers from the relay's own origin (its
// scheme, host and port), the origin of the operator's dashboard
// (/$relay/dashboard) too. A listener needs only Listen on its entity, so a
// page it serves must not reach beyond the entity's path into the relay's own
// pages (found by review: a Listen-only tenant read the Manage key typed into
// the dashboard, or the token it sent):
// - a service worker the page registers is confined to the entity's path: the
//   relay answers the browser's script fetch (`Service-Worker: script`) with
//   `Service-Worker-Allowed: /{entity}/`, whatever the listener said (before,
//   `Service-Worker-Allowed: /` gave the worker every request to the origin,
//   the dashboard's Authorization headers included; and a script at the
//   entity's root, `/{entity}`, would have had `/` without asking);
// - a page cannot keep a hand on a dashboard it opens: the dashboard is served
//   with `Cross-Origin-Opener-Policy: same-origin` (ops/dashboard.ts), which
//   puts it in a browsing context group of its own unless its opener is
//   same-origin with the same policy, so a listener's `same-origin` policy is
//   passed on as `same-origin-allow-popups` (the same isolation for the page
//   but for its popups).
// - a page cannot wipe the origin: `Clear-Site-Data` is dropped (it clears every
//   entity's cookies and storage and, with "executionContexts", reloads every
//   page of the origin, an operator's dashboard among them, which loses the key
//   it holds in memory).
// Browsers apply Cross-Origin-Opener-Policy and Clear-Site-Data on https:// and on localhost only.
import type { IncomingMessage } from 'node:http';
import { setHeader } from './relayed-headers.ts';

/**
 * The listener's response headers, as a browser on the relay's origin may safely be given them: `headers` itself
 * when nothing in it or in the request concerns the origin (most answers: no copy), else a copy made safe.
 */
export function confinedToEntity(headers: Record<string, string | string[]>, req: Pick<IncomingMessage, 'url' | 'headers'>): Record<string, string | string[]> {
  if (req.headers['service-worker'] !== 'script' && !Object.keys(headers).some(concernsTheOrigin)) return headers;
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (DROPPED.has(lower)) continue;
    if (lower === OPENER_POLICY) {
      const values = (Array.isArray(value) ? value : [value]).map((v) => (policyOf(v) === 'same-origin' ? 'same-origin-allow-popups' : v));
      out[name] = Array.isArray(value) ? values : values[0];
      continue;
    }
    // A header named `__proto__` stays a header (setHeader).
    setHeader(out, name, value);
  }
  if (req.headers['service-worker'] === 'script') out['service-worker-allowed'] = entityScope(req.url ?? '/');
  return out;
}

/** Headers of a listener's answer that never reach the browser (above). */
const DROPPED = new Set(['service-worker-allowed', 'clear-site-data']);
/** The header whose `same-origin` is passed on as `same-origin-allow-popups` (above). */
const OPENER_POLICY = 'cross-origin-opener-policy';
/** The lengths of the names confinedToEntity acts on: most names are passed over on their length, not lower-cased. */
const ACTED_ON_LENGTHS = new Set([...DROPPED, OPENER_POLICY].map((name) => name.length));

/** Whether a header of this name is dropped or rewritten by confinedToEntity. */
function concernsTheOrigin(name: string): boolean {
  if (!ACTED_ON_LENGTHS.has(name.length)) return false;
  const lower = name.toLowerCase();
  return DROPPED.has(lower) || lower === OPENER_POLICY;
}

/** A Cross-Origin-Opener-Policy value's policy, without its parameters (`same-origin; report-to="x"`). */
function policyOf(value: string): string {
  return value.split(';')[0].trim().toLowerCase();
}

/** `/{entity}/` as the request spelled it: the first segment of its path. */
function entityScope(url: string): string {
  const path = url.split(/[?#]/)[0];
  const first = path.split('/')[1] ?? '';
  return `/${first}/`;
}
