// NATS subject matching: tokens split by `.`; in a subscription `*` matches
// exactly one token and a final `>` matches one or more.
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

export function isWildcard(pattern: string): boolean {
  return pattern.split('.').some((t) => t === '*' || t === '>');
}

/** A subject a client may publish to: non-empty tokens, no wildcards, no white space. */
export function isValidSubject(subject: string, allowWildcards: boolean): boolean {
  if (subject === '' || /\s/.test(subject)) return false;
  const tokens = subject.split('.');
  return tokens.every((t, i) => t !== '' && (allowWildcards ? t !== '>' || i === tokens.length - 1 : t !== '*' && t !== '>'));
}
