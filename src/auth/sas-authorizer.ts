// Decides whether a SAS token grants a right on a hybrid connection, using the
// configured rules. Scope: the token's resource must name this relay's host
// (port and scheme ignored, as clients drop them) and a path that is the
// namespace root or the entity (segment prefix, case-insensitive); a rule with
// `entity` covers only that entity. Manage implies Listen and Send.
import type { Right, SasRule } from '../config/types.ts';
import { hasDotSegment, rawUrlPath } from './dot-segments.ts';
import { hostListed } from './token-hosts.ts';
import { parseSasToken, signatureMatches } from './sas-token.ts';

export type SasDecision =
  | { ok: true; expiresAt: number; keyName: string }
  | { ok: false; code: 'TokenMissing' | 'TokenMalformed' | 'TokenExpired' | 'SignatureInvalid' | 'TokenScopeInvalid' | 'RightMissing' };

export interface SasCheck {
  token: string | undefined;
  entity: string;
  /** Path segments below the entity (HTTP mode), decoded; a token may be scoped to them. */
  subPath?: string[];
  right: Right;
  /** Host names a token's resource may name for this request. */
  hosts: string[];
  nowSeconds?: number;
}

export class SasAuthorizer {
  private readonly rulesByName = new Map<string, SasRule[]>();

  constructor(rules: SasRule[]) {
    for (const rule of rules) {
      const list = this.rulesByName.get(rule.keyName) ?? [];
      list.push(rule);
      this.rulesByName.set(rule.keyName, list);
    }
  }

  check({ token, entity, subPath = [], right, hosts, nowSeconds = Math.floor(Date.now() / 1000) }: SasCheck): SasDecision {
    if (!token) return { ok: false, code: 'TokenMissing' };
    const parsed = parseSasToken(token);
    if (!parsed) return { ok: false, code: 'TokenMalformed' };
    const rules = (this.rulesByName.get(parsed.keyName) ?? []).filter((r) => signatureMatches(parsed, r.key));
    if (rules.length === 0) return { ok: false, code: 'SignatureInvalid' };
    if (parsed.expiresAt <= nowSeconds) return { ok: false, code: 'TokenExpired' };
    if (!resourceCovers(parsed.resource, [entity, ...subPath], hosts)) return { ok: false, code: 'TokenScopeInvalid' };
    const granted = rules.some(
      (r) =>
        (r.entity === undefined || r.entity.toLowerCase() === entity.toLowerCase()) &&
        (r.rights.includes(right) || r.rights.includes('Manage')),
    );
    if (!granted) return { ok: false, code: 'RightMissing' };
    return { ok: true, expiresAt: parsed.expiresAt, keyName: parsed.keyName };
  }
}

/**
 * True when `resource` (a decoded URI) names one of `hosts` and its path is a
 * segment prefix of `requested` (entity first), compared case-insensitively.
 * A path with dot segments covers nothing (dot-segments.ts).
 */
export function resourceCovers(resource: string, requested: string[], hosts: string[]): boolean {
  if (hasDotSegment(rawUrlPath(resource))) return false;
  let url: URL;
  try {
    url = new URL(resource);
  } catch {
    return false;
  }
  if (!hostListed(url.hostname, hosts)) return false;
  let segments: string[];
  try {
    segments = url.pathname.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s).toLowerCase());
  } catch {
    return false;
  }
  if (segments[0] === '$hc') segments.shift();
  if (segments.length > requested.length) return false;
  return segments.every((s, i) => s === requested[i].toLowerCase());
}
