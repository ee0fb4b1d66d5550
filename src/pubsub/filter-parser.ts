// The syntax of a REST `filter`: Azure Web PubSub's OData subset
// (Azure's "OData filter syntax in Azure Web PubSub service", its formal
// grammar and its table of operations), parsed into a typed tree that
// connection-filter.ts compiles. Precedence, highest first, as OData's
// (its URL conventions' operator precedence, and ODataLib's parser, which
// Microsoft's Web PubSub emulator runs: `in` is a primary operator):
//
//   in  >  not  >  eq ne gt ge lt le  >  and  >  or
//
//   or         := and ('or' and)*
//   and        := compare ('and' compare)*
//   compare    := unary (('eq'|'ne'|'gt'|'ge'|'lt'|'le') unary)*
//   unary      := 'not' unary | membership
//   membership := term ('in' ( '(' expr (',' expr)* ')' | collection ))*
//   term    := '(' or ')' | string | integer | 'true' | 'false' | 'null'
//            | userId | connectionId | groups | groups/any( [var ':' or] )
//            | function '(' or (',' or)* ')'
//
// Functions: tolower, toupper, trim, concat, substring (string); startswith,
// endswith, contains (boolean); indexof, length (integer; length also takes
// groups). The identifiers are case-insensitive, as Azure documents;
// keywords and function names are the lowercase ones the grammar spells.
// Types are checked here, so `not length(userId) gt 5` (not binds to the
// integer) is refused, as Azure refuses it, instead of failing per connection;
// `not 'g1' in groups` is `not ('g1' in groups)`, and comparisons chain left
// to right (`'g1' in groups eq true`).
// Text and nesting are bounded by the caller (MAX_FILTER_LENGTH) and here
// (MAX_DEPTH); no regular expression is built from the input. A malformed
// filter names the position (0-based, in characters) of the problem.

export const MAX_DEPTH = 32;

/** The static type of an expression; `null` is the literal, which compares with any type but boolean order. */
export type ValueType = 'string' | 'integer' | 'boolean' | 'null' | 'collection';

export type StringFunction = 'tolower' | 'toupper' | 'trim' | 'concat' | 'substring';
export type BooleanFunction = 'startswith' | 'endswith' | 'contains';
export type IntegerFunction = 'indexof' | 'length';
export type CompareOp = 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le';

/** A parsed, type-checked expression. `at` is where it starts in the text. */
export type Expr = { at: number; type: ValueType } & (
  | { kind: 'literal'; value: string | number | boolean | null }
  | { kind: 'field'; field: 'userId' | 'connectionId' }
  | { kind: 'variable' } // the group a groups/any lambda is at
  | { kind: 'groups' } // the collection; only under 'in' and length()
  | { kind: 'call'; fn: StringFunction | BooleanFunction | IntegerFunction; args: Expr[] }
  | { kind: 'groupCount' } // length(groups)
  | { kind: 'not'; operand: Expr }
  | { kind: 'and' | 'or'; items: Expr[] }
  | { kind: 'compare'; op: CompareOp; left: Expr; right: Expr }
  | { kind: 'inList'; operand: Expr; items: Expr[] }
  | { kind: 'inGroups'; operand: Expr }
  | { kind: 'any'; body: Expr | undefined }
);

export class FilterSyntaxError extends Error {
  constructor(
    readonly position: number,
    problem: string,
  ) {
    super(`${problem} at position ${position}`);
  }
}

type Token =
  | { type: 'string'; value: string; at: number }
  | { type: 'integer'; value: number; at: number }
  | { type: 'word'; value: string; at: number }
  | { type: 'punct'; value: '(' | ')' | ',' | ':' | '/'; at: number }
  | { type: 'end'; at: number };

const WORD = /[A-Za-z_][A-Za-z0-9_]*/y;
const INTEGER = /[+-]?[0-9]+/y;

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      i++;
    } else if (c === '(' || c === ')' || c === ',' || c === ':' || c === '/') {
      tokens.push({ type: 'punct', value: c, at: i });
      i++;
    } else if (c === "'") {
      const at = i;
      let value = '';
      for (i++; ; i++) {
        if (i >= text.length) throw new FilterSyntaxError(at, 'unterminated string literal');
        if (text[i] === "'") {
          if (text[i + 1] === "'") {
            value += "'";
            i++;
            continue;
          }
          i++;
          break;
        }
        value += text[i];
      }
      tokens.push({ type: 'string', value, at });
    } else if ((c >= '0' && c <= '9') || c === '+' || c === '-') {
      INTEGER.lastIndex = i;
      const m = INTEGER.exec(text);
      if (!m) throw new FilterSyntaxError(i, `unexpected character '${c}'`);
      const value = Number(m[0]);
      if (!Number.isSafeInteger(value)) throw new FilterSyntaxError(i, 'integer out of range');
      tokens.push({ type: 'integer', value, at: i });
      i += m[0].length;
    } else {
      WORD.lastIndex = i;
      const m = WORD.exec(text);
      if (!m) throw new FilterSyntaxError(i, `unexpected character '${c}'`);
      tokens.push({ type: 'word', value: m[0], at: i });
      i += m[0].length;
    }
  }
  tokens.push({ type: 'end', at: text.length });
  return tokens;
}

const COMPARE_OPS: ReadonlySet<string> = new Set(['eq', 'ne', 'gt', 'ge', 'lt', 'le']);
const KEYWORDS: ReadonlySet<string> = new Set([...COMPARE_OPS, 'and', 'or', 'not', 'in', 'true', 'false', 'null', 'any']);
/** Argument types of each function; 'text' is a string or null, 'count' a non-negative integer literal. */
const FUNCTIONS: Record<string, { args: ('text' | 'count')[]; optional?: number; result: ValueType }> = {
  tolower: { args: ['text'], result: 'string' },
  toupper: { args: ['text'], result: 'string' },
  trim: { args: ['text'], result: 'string' },
  concat: { args: ['text', 'text'], result: 'string' },
  substring: { args: ['text', 'count', 'count'], optional: 1, result: 'string' },
  startswith: { args: ['text', 'text'], result: 'boolean' },
  endswith: { args: ['text', 'text'], result: 'boolean' },
  contains: { args: ['text', 'text'], result: 'boolean' },
  indexof: { args: ['text', 'text'], result: 'integer' },
  length: { args: ['text'], result: 'integer' }, // or groups: see call()
};

/** The identifier a word names, compared case-insensitively as Azure documents. */
function identifier(word: string): 'userId' | 'connectionId' | 'groups' | undefined {
  const lower = word.toLowerCase();
  if (lower === 'userid') return 'userId';
  if (lower === 'connectionid') return 'connectionId';
  if (lower === 'groups') return 'groups';
  return undefined;
}

const COLLECTION_HINT = "'groups' is a collection: use '<value> in groups', 'length(groups)' or 'groups/any(...)'";

class Parser {
  private pos = 0;
  private depth = 0;
  /** The lambda variable while parsing inside groups/any(...). */
  private variable: string | undefined;

  constructor(private readonly tokens: Token[]) {}

  private get peek(): Token {
    return this.tokens[this.pos];
  }

  private isWord(value: string): boolean {
    const t = this.peek;
    return t.type === 'word' && t.value === value;
  }

  private isPunct(value: string): boolean {
    const t = this.peek;
    return t.type === 'punct' && t.value === value;
  }

  private expect(value: string, what = `'${value}'`): void {
    const t = this.peek;
    if ((t.type === 'punct' || t.type === 'word') && t.value === value) {
      this.pos++;
      return;
    }
    throw new FilterSyntaxError(t.at, `expected ${what}`);
  }

  parseFilter(): Expr {
    const node = this.or();
    if (this.peek.type !== 'end') throw new FilterSyntaxError(this.peek.at, "expected 'and', 'or' or the end of the filter");
    const root = condition(node, 'the filter');
    // What runs once per connection (the body of groups/any, run per group, has its own bound: work counts it as 0).
    const cost = work(root);
    if (cost > MAX_FILTER_WORK) {
      throw new FilterSyntaxError(0, `the filter could read ${cost} characters of strings per connection; at most ${MAX_FILTER_WORK} (fewer string functions of userId and connectionId)`);
    }
    return root;
  }

  private nested<T>(at: number, parse: () => T): T {
    if (++this.depth > MAX_DEPTH) throw new FilterSyntaxError(at, `nested deeper than ${MAX_DEPTH}`);
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  /** 'or' and 'and' chains become one node with a list, so a long chain is not a deep tree. */
  private chain(op: 'or' | 'and', operand: () => Expr): Expr {
    const first = operand();
    if (!this.isWord(op)) return first;
    const items = [condition(first, `'${op}'`)];
    while (this.isWord(op)) {
      this.pos++;
      items.push(condition(operand(), `'${op}'`));
    }
    return { kind: op, items: op === 'or' ? mergeEqualities(items) : items, at: first.at, type: 'boolean' };
  }

  private or(): Expr {
    return this.chain('or', () => this.and());
  }

  private and(): Expr {
    return this.chain('and', () => this.compare());
  }

  /** Comparisons chain left to right, `a eq b eq c` being `(a eq b) eq c`; each one past the first nests (MAX_DEPTH). */
  private compare(): Expr {
    let left = this.unary();
    for (let chained = 0; this.peek.type === 'word' && COMPARE_OPS.has(this.peek.value); chained++) {
      const op = this.peek;
      this.pos++;
      const right = this.unary();
      checkComparable(left, right, op.value as CompareOp, op.at);
      left = this.chained(chained, op.at, { kind: 'compare', op: op.value as CompareOp, left, right, at: left.at, type: 'boolean' });
    }
    return left;
  }

  /** A term and the `in`s that follow it (`in` binds tighter than `not` and the comparisons), left to right. */
  private membership(): Expr {
    let operand = this.term();
    for (let chained = 0; this.isWord('in'); chained++) {
      const at = this.peek.at;
      this.pos++;
      operand = this.chained(chained, at, this.inRight(operand, at));
    }
    return operand;
  }

  /** The tree of a chain grows one level per link: past the first, each counts as nesting. */
  private chained(links: number, at: number, node: Expr): Expr {
    if (links > 0 && this.depth + links > MAX_DEPTH) throw new FilterSyntaxError(at, `nested deeper than ${MAX_DEPTH}`);
    return node;
  }

  /** The right of 'in': groups (possibly parenthesized), or a parenthesized list of values. */
  private inRight(operand: Expr, at: number): Expr {
    if (!this.isPunct('(')) {
      const t = this.peek;
      if (t.type === 'word' && identifier(t.value) === 'groups' && !this.followedBySlash()) {
        this.pos++;
        return this.inGroups(operand, at);
      }
      throw new FilterSyntaxError(t.at, "expected '(' or 'groups' after 'in'");
    }
    const items = this.parenthesizedList();
    if (items.length === 1 && items[0].kind === 'groups') return this.inGroups(operand, at);
    for (const item of items) checkComparable(operand, item, 'in', item.at);
    return { kind: 'inList', operand, items, at: operand.at, type: 'boolean' };
  }

  private inGroups(operand: Expr, at: number): Expr {
    if (operand.type !== 'string' && operand.type !== 'null') throw new FilterSyntaxError(at, `${a(operand.type)} cannot be 'in groups' (group names are strings)`);
    return { kind: 'inGroups', operand, at: operand.at, type: 'boolean' };
  }

  private unary(): Expr {
    const t = this.peek;
    if (this.isWord('not')) {
      this.pos++;
      const operand = this.nested(t.at, () => this.unary());
      if (operand.type !== 'boolean') {
        throw new FilterSyntaxError(t.at, `'not' binds tighter than comparisons and applies to ${a(operand.type)} here: write not (...)`);
      }
      return { kind: 'not', operand, at: t.at, type: 'boolean' };
    }
    return this.membership();
  }

  private term(): Expr {
    const t = this.peek;
    this.pos++;
    switch (t.type) {
      case 'string':
        return { kind: 'literal', value: t.value, at: t.at, type: 'string' };
      case 'integer':
        return { kind: 'literal', value: t.value, at: t.at, type: 'integer' };
      case 'end':
        throw new FilterSyntaxError(t.at, 'unexpected end of the filter');
      case 'punct': {
        if (t.value !== '(') throw new FilterSyntaxError(t.at, `unexpected '${t.value}'`);
        const inner = this.nested(t.at, () => this.or());
        this.expect(')', "')'");
        return inner;
      }
      case 'word':
        return this.word(t);
    }
  }

  private word(t: Token & { type: 'word' }): Expr {
    if (t.value === 'true' || t.value === 'false') return { kind: 'literal', value: t.value === 'true', at: t.at, type: 'boolean' };
    if (t.value === 'null') return { kind: 'literal', value: null, at: t.at, type: 'null' };
    if (KEYWORDS.has(t.value)) throw new FilterSyntaxError(t.at, `unexpected '${t.value}'`);
    if (this.variable !== undefined && t.value === this.variable) return { kind: 'variable', at: t.at, type: 'string' };
    const id = identifier(t.value);
    if (id === 'groups') {
      if (this.isPunct('/')) return this.anyGroup(t.at);
      return { kind: 'groups', at: t.at, type: 'collection' };
    }
    if (id !== undefined) return { kind: 'field', field: id, at: t.at, type: 'string' };
    if (this.isPunct('(')) return this.call(t);
    throw new FilterSyntaxError(t.at, `unknown identifier '${t.value}' (userId, connectionId, groups)`);
  }

  private followedBySlash(): boolean {
    const next = this.tokens[this.pos + 1];
    return next.type === 'punct' && next.value === '/';
  }

  /** `( expr, expr, ... )` from the opening parenthesis under the cursor: an `in` list, or a call's arguments. */
  private parenthesizedList(): Expr[] {
    const open = this.peek.at;
    this.pos++;
    const list = this.nested(open, () => {
      const items = [this.or()];
      while (this.isPunct(',')) {
        this.pos++;
        items.push(this.or());
      }
      return items;
    });
    this.expect(')', "',' or ')'");
    return list;
  }

  private call(t: Token & { type: 'word' }): Expr {
    const spec = Object.hasOwn(FUNCTIONS, t.value) ? FUNCTIONS[t.value] : undefined;
    if (!spec) throw new FilterSyntaxError(t.at, `unknown function '${t.value}'`);
    const args = this.parenthesizedList();
    const least = spec.args.length - (spec.optional ?? 0);
    if (args.length < least || args.length > spec.args.length) {
      const count = least === spec.args.length ? `${least}` : `${least} or ${spec.args.length}`;
      throw new FilterSyntaxError(t.at, `${t.value}() takes ${count} argument${spec.args.length === 1 ? '' : 's'}`);
    }
    if (t.value === 'length' && args[0].kind === 'groups') return { kind: 'groupCount', at: t.at, type: 'integer' };
    args.forEach((arg, i) => {
      if (spec.args[i] === 'count') {
        if (arg.kind !== 'literal' || arg.type !== 'integer' || (arg.value as number) < 0) {
          throw new FilterSyntaxError(arg.at, `${t.value}() takes a non-negative integer literal here`);
        }
      } else if (arg.type !== 'string' && arg.type !== 'null') {
        throw new FilterSyntaxError(arg.at, arg.type === 'collection' ? COLLECTION_HINT : `${t.value}() takes a string here, not ${a(arg.type)}`);
      }
    });
    const call: Expr = { kind: 'call', fn: t.value as StringFunction | BooleanFunction | IntegerFunction, args, at: t.at, type: spec.result };
    if (spec.result === 'string') {
      const most = longest(call);
      if (most > MAX_BUILT_STRING) throw new FilterSyntaxError(t.at, `${t.value}() could build a string of ${most} characters; at most ${MAX_BUILT_STRING}`);
    }
    return call;
  }

  /** groups/any(g: ...) or groups/any(); the 'groups' word is consumed. */
  private anyGroup(at: number): Expr {
    this.pos++;
    this.expect('any', "'any'");
    const open = this.peek.at;
    this.expect('(');
    if (this.isPunct(')')) {
      this.pos++;
      return { kind: 'any', body: undefined, at, type: 'boolean' };
    }
    if (this.variable !== undefined) throw new FilterSyntaxError(at, "'any' inside 'any' is not supported");
    const v = this.peek;
    if (v.type !== 'word' || KEYWORDS.has(v.value) || identifier(v.value) || Object.hasOwn(FUNCTIONS, v.value)) {
      throw new FilterSyntaxError(v.at, 'expected a lambda variable name');
    }
    this.pos++;
    this.expect(':');
    this.variable = v.value;
    try {
      const body = condition(this.nested(open, () => this.or()), "'any'");
      this.expect(')');
      const cost = work(body);
      if (cost > MAX_ANY_WORK) {
        throw new FilterSyntaxError(at, `'any' could read ${cost} characters of strings per group; at most ${MAX_ANY_WORK} (fewer string functions of the group)`);
      }
      const count = steps(body);
      if (count > MAX_ANY_STEPS) {
        throw new FilterSyntaxError(at, `'any' takes ${count} steps per group; at most ${MAX_ANY_STEPS} (test a list of names with 'g in (...)' or '... in groups')`);
      }
      return { kind: 'any', body, at, type: 'boolean' };
    } finally {
      this.variable = undefined;
    }
  }
}

/**
 * The longest string a filter may build (concat, toupper...). Evaluated per
 * connection, and per group under groups/any, a string built from 1,024-
 * character names could otherwise reach hundreds of thousands of characters
 * at each step: one REST call held the event loop for seconds.
 */
export const MAX_BUILT_STRING = 4096;
/** The longest a user id, connection id or group name is (schemas/pubsub-client-message.schema.json). */
const LONGEST_NAME = 1024;

/** The most characters a string expression can evaluate to. */
function longest(e: Expr): number {
  switch (e.kind) {
    case 'literal':
      return typeof e.value === 'string' ? e.value.length : 0;
    case 'field':
    case 'variable':
      return LONGEST_NAME;
    case 'call': {
      const [first, second, third] = e.args;
      if (e.fn === 'concat') return longest(first) + longest(second);
      // A case mapping can take up to three characters for one (U+0390 upper-cased; U+0130 lower-cased is
      // two), once: the characters it gives map to as many again, so case calls around case calls (and
      // trim) count once over what is inside them all.
      if (e.fn === 'toupper' || e.fn === 'tolower') return 3 * longest(caseFree(first));
      if (e.fn === 'substring' && third?.kind === 'literal') return Math.min(longest(first), third.value as number);
      return longest(first);
    }
    default:
      return 0;
  }
}

/**
 * The most UTF-16 code units of strings the body of groups/any may read per
 * group. The body runs once per group of each connection, and a client
 * chooses its groups' names (up to 1,024 characters, 2,048 code units, each
 * of up to limits.groupsPerConnection groups): without a bound, one REST send
 * with many case mappings of the group held the event loop for seconds per
 * such client. A function of the group repeated is computed once per group
 * (connection-filter.ts) and counted once: one case mapping costs 2,048, and
 * `contains` of it 3,072 more (a mapping can triple a character).
 */
export const MAX_ANY_WORK = 16384;

/**
 * The most UTF-16 code units of strings a filter, outside its groups/any, may
 * read per connection. It runs once for every connection a call reaches, and
 * a user id may be 1,024 characters a case mapping triples (U+0390): without
 * a bound, 104 `toupper(userId) eq toupper(userId)` joined by `and` (4,051
 * characters) held the event loop 3.4 s over 1,000 such connections, 42 s
 * over 10,000 (found by review); at this bound, about a tenth of a second.
 * Twice MAX_ANY_WORK, which a connection pays per group: a dozen `contains`
 * of userId fit, and `startswith` and equalities with literals cost only
 * their literals.
 */
export const MAX_FILTER_WORK = 32768;

/**
 * The most evaluation steps (nodes, a function of the group named again counted once) the body of groups/any may
 * take per group. It runs for every group of every connection a call reaches: 250 clauses of
 * `startswith(g, '...')` over 10,000 connections in 100 groups each held the event loop for about 2 s (found by
 * review), 20 s with 1,000 groups each. Comparisons of one value with string literals joined by `or` are one
 * set lookup (mergeEqualities), so a list of names any length takes one step.
 */
export const MAX_ANY_STEPS = 32;

function steps(e: Expr, counted = new Set<string>()): number {
  switch (e.kind) {
    case 'call': {
      const key = groupFunctionKey(e);
      if (key !== undefined) {
        if (counted.has(key)) return 1;
        counted.add(key);
      }
      return 1 + e.args.reduce((sum, arg) => sum + steps(arg, counted), 0);
    }
    case 'not':
      return 1 + steps(e.operand, counted);
    case 'and':
    case 'or':
      return 1 + e.items.reduce((sum, item) => sum + steps(item, counted), 0);
    case 'compare':
      return 1 + steps(e.left, counted) + steps(e.right, counted);
    case 'inList':
      // A list of literals is one set lookup.
      return 1 + steps(e.operand, counted) + (e.items.every((i) => i.kind === 'literal') ? 0 : e.items.reduce((sum, item) => sum + steps(item, counted), 0));
    case 'inGroups':
      return 1 + steps(e.operand, counted);
    default:
      return 1;
  }
}

/**
 * The items of an `or` with `X eq 'a'`, `'b' eq X`, `X in ('c')` for the same X (no literal of its own) merged into
 * one `X in ('a', 'b', 'c')`, compiled as a set (connection-filter.ts): the same answer, in one step. Other items
 * keep their order.
 */
function mergeEqualities(items: Expr[]): Expr[] {
  const lists = new Map<string, Expr & { kind: 'inList' }>();
  const out: Expr[] = [];
  for (const item of items) {
    const equality = stringEquality(item);
    const key = equality && keyOf(equality.operand, true)?.text;
    if (!equality || key === undefined || equality.operand.kind === 'literal') {
      out.push(item);
      continue;
    }
    const list = lists.get(key);
    if (list) {
      list.items.push(...equality.values);
      continue;
    }
    const merged: Expr & { kind: 'inList' } = { kind: 'inList', operand: equality.operand, items: [...equality.values], at: item.at, type: 'boolean' };
    lists.set(key, merged);
    out.push(merged);
  }
  return out;
}

/** `X eq 'a'`, `'a' eq X` or `X in ('a', ...)` with string literals: X and the literals; else undefined. */
function stringEquality(e: Expr): { operand: Expr; values: Expr[] } | undefined {
  const isText = (x: Expr) => x.kind === 'literal' && typeof x.value === 'string';
  if (e.kind === 'inList' && e.items.every(isText)) return { operand: e.operand, values: e.items };
  if (e.kind !== 'compare' || e.op !== 'eq') return undefined;
  if (isText(e.right) && e.left.type === 'string') return { operand: e.left, values: [e.right] };
  if (isText(e.left) && e.right.type === 'string') return { operand: e.right, values: [e.left] };
  return undefined;
}

/** The most code units a string expression can evaluate to. */
function units(e: Expr): number {
  switch (e.kind) {
    case 'literal':
      return typeof e.value === 'string' ? e.value.length : 0;
    case 'field':
    case 'variable':
      // A character of a name is one code unit or two (past U+FFFF).
      return 2 * LONGEST_NAME;
    case 'call': {
      const [first, second, third] = e.args;
      if (e.fn === 'concat') return units(first) + units(second);
      // A case mapping triples a character at most, and only one of one code unit (past U+FFFF, one maps to one).
      if (e.fn === 'toupper' || e.fn === 'tolower') return Math.max(3 * longest(caseFree(first)), units(caseFree(first)));
      if (e.fn === 'trim') return units(first);
      if (e.fn === 'substring') return third?.kind === 'literal' ? Math.min(units(first), third.value as number) : units(first);
      return 0;
    }
    default:
      return 0;
  }
}

/** A key naming what a function call of the lambda variable computes (the same key, the same value per group), or undefined. */
export function groupFunctionKey(e: Expr): string | undefined {
  const key = keyOf(e);
  return key?.usesGroup && e.kind === 'call' ? key.text : undefined;
}

/**
 * What an expression of literals, the lambda variable and calls of them computes, as text; with `fields`, of the
 * connection's fields too (one `or`'s items, mergeEqualities), else undefined when it reads one (a group function's
 * value is kept per group, the same for every connection).
 */
function keyOf(e: Expr, fields = false): { text: string; usesGroup: boolean } | undefined {
  if (e.kind === 'variable') return { text: '$g', usesGroup: true };
  if (e.kind === 'field') return fields ? { text: `$${e.field}`, usesGroup: false } : undefined;
  if (e.kind === 'literal') return { text: JSON.stringify(e.value), usesGroup: false };
  if (e.kind !== 'call') return undefined;
  const args = e.args.map((arg) => keyOf(arg, fields));
  if (args.some((arg) => arg === undefined)) return undefined;
  return { text: `${e.fn}(${args.map((arg) => arg!.text).join(',')})`, usesGroup: args.some((arg) => arg!.usesGroup) };
}

/**
 * An upper bound of the code units one evaluation of `e` reads or builds in
 * string functions and string comparisons (what its time is proportional to);
 * a function of the group already counted (`counted`) is computed once.
 */
function work(e: Expr, counted = new Set<string>()): number {
  switch (e.kind) {
    case 'call': {
      const key = groupFunctionKey(e);
      if (key !== undefined) {
        if (counted.has(key)) return 0;
        counted.add(key);
      }
      const [first, second] = e.args;
      const inner = e.args.reduce((sum, arg) => sum + work(arg, counted), 0);
      switch (e.fn) {
        case 'length':
          return inner;
        case 'startswith':
        case 'endswith':
          return inner + units(second);
        case 'substring':
          return inner + units(e);
        default:
          return inner + units(first) + (second ? units(second) : 0);
      }
    }
    case 'not':
      return work(e.operand, counted);
    case 'and':
    case 'or':
      return e.items.reduce((sum, item) => sum + work(item, counted), 0);
    case 'compare':
      return work(e.left, counted) + work(e.right, counted) + Math.min(units(e.left), units(e.right));
    case 'inList':
      return work(e.operand, counted) + e.items.reduce((sum, item) => sum + work(item, counted), 0);
    case 'inGroups':
      return work(e.operand, counted);
    default:
      return 0;
  }
}

/** `e` without the case calls and trims around it. */
function caseFree(e: Expr): Expr {
  return e.kind === 'call' && (e.fn === 'tolower' || e.fn === 'toupper' || e.fn === 'trim') ? caseFree(e.args[0]) : e;
}

function a(type: ValueType): string {
  return type === 'integer' ? 'an integer' : type === 'null' ? 'null' : `a ${type}`;
}

/** An expression where a condition must stand. */
function condition(node: Expr, where: string): Expr {
  if (node.type === 'boolean') return node;
  if (node.type === 'collection') throw new FilterSyntaxError(node.at, COLLECTION_HINT);
  throw new FilterSyntaxError(node.at, `${where} needs a condition, not ${a(node.type)}`);
}

/** Whether two operands can be compared: the same type, or null with a string or integer (and eq/ne with anything). */
function checkComparable(left: Expr, right: Expr, op: CompareOp | 'in', at: number): void {
  for (const side of [left, right]) if (side.type === 'collection') throw new FilterSyntaxError(at, COLLECTION_HINT);
  const ordered = op !== 'eq' && op !== 'ne' && op !== 'in';
  if (ordered && (left.type === 'boolean' || right.type === 'boolean')) throw new FilterSyntaxError(at, `'${op}' does not order booleans`);
  if (left.type === right.type || left.type === 'null' || right.type === 'null') return;
  throw new FilterSyntaxError(at, `cannot compare ${a(left.type)} with ${a(right.type)}`);
}

/** Parses filter text (already bounded in length) into a type-checked boolean expression. */
export function parseFilterExpression(text: string): Expr {
  return new Parser(tokenize(text)).parseFilter();
}
