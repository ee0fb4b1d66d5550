// The OData filter subset Azure Web PubSub's REST API takes on sends and on
// :addToGroups / :removeFromGroups (docs/protocols/web-pubsub.md, "Filters"):
// a boolean expression over one connection's `userId`, `connectionId` and
// `groups`:
//
//   expr    := and ('or' and)*
//   and     := unary ('and' unary)*
//   unary   := 'not' unary | primary
//   primary := '(' expr ')'
//            | operand ('eq' | 'ne') operand          userId eq 'a', 'a' ne connectionId, userId eq null
//            | field 'in' '(' literal (',' literal)* ')'   userId in ('a', 'b')
//            | literal 'in' 'groups'                       'g1' in groups
//            | 'groups/any(' [var ':' expr] ')'           groups/any(g: g eq 'a' or g eq 'b'), groups/any()
//
// String literals are single-quoted, a quote inside written twice (OData).
// A filter is parsed once (and again by each edge that receives it: filters
// travel on the bus as text) into a tree that is evaluated per connection.
// Text and nesting are bounded, so a hostile filter costs at most its length
// times the connection's groups. A malformed filter names the position
// (0-based, in characters) where the parser stopped.
import type { FilterTerm } from '../bus/messages.ts';

/** What a filter is evaluated against. */
export interface FilterSubject {
  readonly id: string;
  readonly userId: string | null;
  readonly groups: ReadonlySet<string>;
}

export const MAX_FILTER_LENGTH = 4096;
const MAX_DEPTH = 32;

type Field = 'userId' | 'connectionId';
type Value = string | null;
/** A comparison operand: a field of the connection, the lambda variable (a group), or a literal. */
type Operand = { field: Field } | { variable: true } | { literal: Value };

type Node =
  | { kind: 'or' | 'and'; left: Node; right: Node }
  | { kind: 'not'; operand: Node }
  | { kind: 'compare'; op: 'eq' | 'ne'; left: Operand; right: Operand }
  | { kind: 'inList'; operand: Operand; values: Value[] }
  | { kind: 'inGroups'; value: Value }
  | { kind: 'any'; body: Node | undefined };

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
  | { type: 'word'; value: string; at: number }
  | { type: 'punct'; value: '(' | ')' | ',' | ':' | '/'; at: number }
  | { type: 'end'; at: number };

const WORD = /[A-Za-z_][A-Za-z0-9_]*/y;

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

class Parser {
  private pos = 0;
  private depth = 0;
  /** The lambda variable while parsing inside groups/any(...). */
  private variable: string | undefined;

  constructor(private readonly tokens: Token[]) {}

  private get peek(): Token {
    return this.tokens[this.pos];
  }

  private next(): Token {
    return this.tokens[this.pos++];
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

  parseFilter(): Node {
    const node = this.expression();
    if (this.peek.type !== 'end') throw new FilterSyntaxError(this.peek.at, "expected 'and', 'or' or the end of the filter");
    return node;
  }

  private nested<T>(at: number, parse: () => T): T {
    if (++this.depth > MAX_DEPTH) throw new FilterSyntaxError(at, `nested deeper than ${MAX_DEPTH}`);
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  private expression(): Node {
    let left = this.conjunction();
    while (this.isWord('or')) {
      this.pos++;
      left = { kind: 'or', left, right: this.conjunction() };
    }
    return left;
  }

  private conjunction(): Node {
    let left = this.unary();
    while (this.isWord('and')) {
      this.pos++;
      left = { kind: 'and', left, right: this.unary() };
    }
    return left;
  }

  private unary(): Node {
    const t = this.peek;
    if (this.isWord('not')) {
      this.pos++;
      return this.nested(t.at, () => ({ kind: 'not', operand: this.unary() }));
    }
    if (this.isPunct('(')) {
      this.pos++;
      const inner = this.nested(t.at, () => this.expression());
      this.expect(')');
      return inner;
    }
    return this.predicate();
  }

  private predicate(): Node {
    const t = this.peek;
    if (t.type === 'word' && t.value === 'groups') return this.anyGroup();
    const left = this.operand();
    const op = this.peek;
    if (op.type === 'word' && (op.value === 'eq' || op.value === 'ne')) {
      this.pos++;
      return { kind: 'compare', op: op.value, left, right: this.operand() };
    }
    if (op.type === 'word' && op.value === 'in') {
      this.pos++;
      if (this.isWord('groups')) {
        if (!('literal' in left)) throw new FilterSyntaxError(t.at, "only a string literal can be 'in groups'");
        this.pos++;
        return { kind: 'inGroups', value: left.literal };
      }
      if ('literal' in left) throw new FilterSyntaxError(t.at, "a literal 'in' needs 'groups' on the right");
      return { kind: 'inList', operand: left, values: this.literalList() };
    }
    if (op.type === 'word' && ['gt', 'ge', 'lt', 'le'].includes(op.value)) {
      throw new FilterSyntaxError(op.at, `operator '${op.value}' is not supported (eq, ne, in)`);
    }
    throw new FilterSyntaxError(op.at, "expected 'eq', 'ne' or 'in'");
  }

  private operand(): Operand {
    const t = this.next();
    if (t.type === 'string') return { literal: t.value };
    if (t.type === 'word') {
      if (t.value === 'userId' || t.value === 'connectionId') return { field: t.value };
      if (t.value === 'null') return { literal: null };
      if (this.variable !== undefined && t.value === this.variable) return { variable: true };
      throw new FilterSyntaxError(t.at, `unknown identifier '${t.value}' (userId, connectionId, groups)`);
    }
    throw new FilterSyntaxError(t.at, 'expected userId, connectionId or a string literal');
  }

  private literalList(): Value[] {
    this.expect('(');
    const values: Value[] = [];
    for (;;) {
      const t = this.next();
      if (t.type === 'string') values.push(t.value);
      else if (t.type === 'word' && t.value === 'null') values.push(null);
      else throw new FilterSyntaxError(t.at, 'expected a string literal');
      if (this.isPunct(')')) break;
      this.expect(',', "',' or ')'");
    }
    this.pos++;
    return values;
  }

  /** groups/any(g: ...) or groups/any(). */
  private anyGroup(): Node {
    const start = this.next();
    if (!this.isPunct('/')) throw new FilterSyntaxError(this.peek.at, "'groups' is a collection: use '<literal> in groups' or 'groups/any(...)'");
    this.pos++;
    this.expect('any', "'any'");
    this.expect('(');
    if (this.isPunct(')')) {
      this.pos++;
      return { kind: 'any', body: undefined };
    }
    if (this.variable !== undefined) throw new FilterSyntaxError(start.at, "'any' inside 'any' is not supported");
    const v = this.next();
    if (v.type !== 'word' || ['userId', 'connectionId', 'groups', 'null', 'and', 'or', 'not', 'eq', 'ne', 'in'].includes(v.value)) {
      throw new FilterSyntaxError(v.at, 'expected a lambda variable name');
    }
    this.expect(':');
    this.variable = v.value;
    try {
      const body = this.nested(start.at, () => this.expression());
      this.expect(')');
      return { kind: 'any', body };
    } finally {
      this.variable = undefined;
    }
  }
}

function valueOf(operand: Operand, subject: FilterSubject, group: string | undefined): Value {
  if ('literal' in operand) return operand.literal;
  if ('variable' in operand) return group ?? null;
  return operand.field === 'userId' ? subject.userId : subject.id;
}

function evaluate(node: Node, subject: FilterSubject, group: string | undefined): boolean {
  switch (node.kind) {
    case 'or':
      return evaluate(node.left, subject, group) || evaluate(node.right, subject, group);
    case 'and':
      return evaluate(node.left, subject, group) && evaluate(node.right, subject, group);
    case 'not':
      return !evaluate(node.operand, subject, group);
    case 'compare': {
      const equal = valueOf(node.left, subject, group) === valueOf(node.right, subject, group);
      return node.op === 'eq' ? equal : !equal;
    }
    case 'inList':
      return node.values.includes(valueOf(node.operand, subject, group));
    case 'inGroups':
      return node.value !== null && subject.groups.has(node.value);
    case 'any':
      if (!node.body) return subject.groups.size > 0;
      for (const g of subject.groups) if (evaluate(node.body, subject, g)) return true;
      return false;
  }
}

/** A parsed filter: which connections it selects. */
export class ConnectionFilter {
  private constructor(
    readonly text: string,
    private readonly root: Node,
  ) {}

  /** Parses a filter; throws FilterSyntaxError with the position of the problem. */
  static parse(text: string): ConnectionFilter {
    if (text.length > MAX_FILTER_LENGTH) throw new FilterSyntaxError(MAX_FILTER_LENGTH, `longer than ${MAX_FILTER_LENGTH} characters`);
    if (text.trim() === '') throw new FilterSyntaxError(0, 'empty filter');
    return new ConnectionFilter(text, new Parser(tokenize(text)).parseFilter());
  }

  matches(subject: FilterSubject): boolean {
    return evaluate(this.root, subject, undefined);
  }
}

/**
 * Filters from the bus by their text, parsed once per edge for as long as
 * they are in use: the same send reaches a hub once per edge, but a session
 * replay reads it again. Bounded: the oldest is forgotten.
 */
const parsedFromBus = new Map<string, ConnectionFilter | null>();
const MAX_CACHED = 256;

/** The filter a bus message carries, parsed; null when it does not parse (the message is then dropped). */
export function filterFromBus(text: string | undefined): ConnectionFilter | undefined | null {
  if (text === undefined) return undefined;
  let parsed = parsedFromBus.get(text);
  if (parsed === undefined) {
    try {
      parsed = ConnectionFilter.parse(text);
    } catch {
      parsed = null;
    }
    if (parsedFromBus.size >= MAX_CACHED) parsedFromBus.delete(parsedFromBus.keys().next().value as string);
    parsedFromBus.set(text, parsed);
  }
  return parsed;
}

/** Whether a membership filter selects the connection: a parsed filter, or the terms older edges sent (any matches). */
export function selects(filter: ConnectionFilter | FilterTerm[], subject: FilterSubject): boolean {
  if (!Array.isArray(filter)) return filter.matches(subject);
  return filter.some((t) => (t.field === 'connectionId' ? subject.id : subject.userId) === t.value);
}
