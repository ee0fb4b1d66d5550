// Decides whether a SAS token grants a right on a hybrid connection, using the
// configured rules. Scope: the token's resource must name this relay's host
// (port and scheme ignored, as clients drop them) and a path that is the
// namespace root or the entity (segment prefix, case-insensitive); a rule with
// `entity` covers only that entity. Manage implies Listen and Send. On a
// reload the rules change in place (update); a key a rule had before still
// signs for that rule (same `keyName` and `entity`), with the rights it has
// now, until its grace ends (retired-keys.ts). Never for another rule sharing
// the key name, nor for a rule that was removed.
import type { Right, SasRule } from '../config/types.ts';
import { tokenScopeUrl } from './dot-segments.ts';
import { RetiredKeys } from './retired-keys.ts';
import { hostListed } from './token-hosts.ts';
import { parseSasToken, signatureMatches } from './sas-token.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { decodeComponent } from '../validation/percent-decoding.ts';

export type SasDecision =
  | { ok: true; expiresAt: number; keyName: string }
  | { ok: false; code: 'TokenMissing' | 'TokenMalformed' | 'TokenExpired' | 'SignatureInvalid' | 'TokenScopeInvalid' | 'RightMissing' };

export interface SasCheck {
  token: string | undefined;
  entity: string;
  /** Path segments below the entity (HTTP mode), as scopeSegment gives them; a token may be scoped to them. */
  subPath?: string[];
  right: Right;
  /** Host names a token's resource may name for this request. */
  hosts: string[];
  nowSeconds?: number;
  /**
   * Judge all but the expiry: an open listener's token, whose expiry the keep-alive judges (with its renewal grace),
   * is held to changed rules whether or not it has expired (a reload's check).
   */
  ignoreExpiry?: boolean;
}

export class SasAuthorizer {
  private rulesByName = new Map<string, SasRule[]>();
  readonly retired = new RetiredKeys();

  constructor(rules: SasRule[]) {
    this.rulesByName = groupBy(rules, keyNameOf);
  }

  /**
   * Takes the rules of a reloaded config. A rule (key name and entity) whose
   * key changed keeps accepting the old key for `graceMs`; a rule that is gone
   * signs nothing from now on. Returns the key names whose key was retired.
   */
  update(rules: SasRule[], graceMs: number, now = Date.now()): string[] {
    const before = groupBy([...this.rulesByName.values()].flat(), ruleOf);
    const next = groupBy(rules, ruleOf);
    const rotated = new Set<string>();
    for (const [rule, old] of before) {
      const kept = next.get(rule);
      if (!kept) {
        this.retired.forget(rule);
        continue;
      }
      const keys = new Set(kept.map((r) => r.key));
      const gone = [...new Set(old.map((r) => r.key))].filter((k) => !keys.has(k));
      // Every key replaced so far is bounded by this rotation's grace (0: they all stop now).
      for (const key of gone) this.retired.retire(rule, key, now + graceMs);
      for (const key of keys) this.retired.restore(rule, key);
      if (gone.length > 0) rotated.add(kept[0].keyName);
    }
    this.rulesByName = groupBy(rules, keyNameOf);
    return [...rotated];
  }

  check({ token, entity, subPath = [], right, hosts, nowSeconds: given, ignoreExpiry = false }: SasCheck): SasDecision {
    const nowMs = given === undefined ? Date.now() : given * 1000;
    const nowSeconds = Math.floor(nowMs / 1000);
    if (!token) return { ok: false, code: 'TokenMissing' };
    const parsed = parseSasToken(token);
    if (!parsed) return { ok: false, code: 'TokenMalformed' };
    const named = this.rulesByName.get(parsed.keyName) ?? [];
    // Signed with a rule's key, or with a key the rule had before a reload: that rule, and only it, while the grace
    // runs. Each rule on its own: another rule of the key name that still has the old key does not hide the rotated
    // rule's grace (before, the retired keys were asked only when no rule's current key matched, and a listener of the
    // rotated rule was closed RightMissing at the reload).
    const rules = named.filter((r) => signatureMatches(parsed, r.key) || this.retired.keys(ruleOf(r), nowMs).some((key) => signatureMatches(parsed, key)));
    if (rules.length === 0) return { ok: false, code: 'SignatureInvalid' };
    if (parsed.expiresAt <= nowSeconds && !ignoreExpiry) return { ok: false, code: 'TokenExpired' };
    if (!resourceCovers(parsed.resource, [entity, ...subPath], hosts)) return { ok: false, code: 'TokenScopeInvalid' };
    const granted = rules.some(
      (r) =>
        (r.entity === undefined || asciiLowerCase(r.entity) === asciiLowerCase(entity)) &&
        (r.rights.includes(right) || r.rights.includes('Manage')),
    );
    if (!granted) return { ok: false, code: 'RightMissing' };
    return { ok: true, expiresAt: parsed.expiresAt, keyName: parsed.keyName };
  }
}

/** A rule's identity across reloads: its key name and the entity it covers (none: the namespace). */
function ruleOf(rule: SasRule): string {
  return `${rule.keyName}\n${rule.entity === undefined ? '' : asciiLowerCase(rule.entity)}`;
}

/** The rules grouped by `key` (a rule's key name, or its identity: ruleOf). */
function groupBy(rules: SasRule[], key: (rule: SasRule) => string): Map<string, SasRule[]> {
  const map = new Map<string, SasRule[]>();
  for (const rule of rules) {
    const k = key(rule);
    const list = map.get(k) ?? [];
    list.push(rule);
    map.set(k, list);
  }
  return map;
}

const keyNameOf = (rule: SasRule): string => rule.keyName;

/** Marks a segment kept as sent: a lone surrogate, which no decoded segment can hold. */
const UNDECODED = '\ud800';

/**
 * A path segment as a token's scope compares it: decoded, or, when its escapes
 * are not UTF-8 (`caf%E9.txt`, a Latin-1 name: a valid URI, which the
 * listener gets as sent), as sent behind a mark, so it equals only that same
 * segment and never a decoded one (`caf%25E9.txt`).
 */
export function scopeSegment(raw: string): string {
  try {
    return decodeComponent(raw);
  } catch {
    // Escapes name the same byte in either case of their hex digits (RFC 3986 6.2.2.1).
    return UNDECODED + raw.replace(/%[0-9a-fA-F]{2}/g, (escape) => escape.toUpperCase());
  }
}

/**
 * True when `resource` (a decoded URI) names one of `hosts` and its path is a
 * segment prefix of `requested` (entity first): the entity's name compared
 * case-insensitively (entity names are), the path below it as sent, as a
 * listener routes it (before, also case-insensitively: a token scoped to
 * `/web/public` took `/web/PUBLIC/x`, found by review).
 * A path with dot segments, or one a URL parser would read otherwise, covers nothing (dot-segments.ts).
 */
export function resourceCovers(resource: string, requested: string[], hosts: string[]): boolean {
  const url = tokenScopeUrl(resource);
  if (!url) return false;
  if (!hostListed(url.hostname, hosts)) return false;
  const segments = url.pathname.split('/').filter((s) => s !== '').map(scopeSegment);
  if (segments[0] === '$hc') segments.shift();
  if (segments.length > requested.length) return false;
  return segments.every((s, i) => (i === 0 ? asciiLowerCase(s) === asciiLowerCase(requested[0]) : s === requested[i]));
}
