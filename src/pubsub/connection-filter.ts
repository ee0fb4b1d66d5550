// The OData filter Azure Web PubSub's REST API takes on sends and on
// :addToGroups / :removeFromGroups (docs/protocols/web-pubsub.md, "Filters"):
// a boolean expression over one connection's `userId`, `connectionId` and
// `groups`, in the syntax of Azure's "OData filter syntax" reference
// (filter-parser.ts has the grammar).
//
// A filter is parsed once (and again by each edge that receives it: filters
// travel on the bus as text) and compiled into closures that are run per
// connection: each node runs at most once per connection, the body of
// groups/any once per group, and any cannot nest, so a hostile filter costs
// at most its length times the connection's groups, and the string work the
// parser bounds (MAX_BUILT_STRING, MAX_FILTER_WORK, MAX_ANY_WORK in filter-parser.ts). Values follow OData: a
// connection without a user has `userId` null; string and integer functions
// of null are null; `eq`/`ne` compare null like any value; `gt`/`lt` with a
// null are false, `ge`/`le` true only for two nulls; the boolean functions
// (startswith, endswith, contains) of null are false. Strings compare by
// UTF-16 code unit (ordinal), as .NET and JavaScript both index them.
import type { FilterTerm } from '../bus/messages.ts';
import { FilterSyntaxError, groupFunctionKey, parseFilterExpression, type CompareOp, type Expr } from './filter-parser.ts';

export { FilterSyntaxError } from './filter-parser.ts';

/** What a filter is evaluated against. */
export interface FilterSubject {
  readonly id: string;
  readonly userId: string | null;
  readonly groups: ReadonlySet<string>;
}

export const MAX_FILTER_LENGTH = 4096;

type Value = string | number | boolean | null;
/** A compiled expression: its value for one connection, and the group a groups/any lambda is at. */
type Evaluator = (subject: FilterSubject, group: string | undefined) => Value;

/**
 * A function of the group, computed once per group however often the filter names it (the parser counts it once:
 * MAX_ANY_WORK): the last group's value is kept (one string, never a connection).
 */
function onceper(inner: Evaluator): Evaluator {
  let last: string | undefined;
  let value: Value = null;
  let has = false;
  return (s, g) => {
    if (has && g === last) return value;
    value = inner(s, g);
    last = g;
    has = true;
    return value;
  };
}

/** Compiles `node`; `shared` holds the evaluators of functions of the group compiled so far, by what they compute. */
function compile(node: Expr, shared = new Map<string, Evaluator>()): Evaluator {
  if (node.kind === 'call') {
    const key = groupFunctionKey(node);
    if (key !== undefined) {
      let evaluator = shared.get(key);
      if (!evaluator) shared.set(key, (evaluator = onceper(compileCall(node.fn, node.args, shared))));
      return evaluator;
    }
  }
  const sub = (e: Expr) => compile(e, shared);
  switch (node.kind) {
    case 'literal': {
      const value = node.value;
      return () => value;
    }
    case 'field':
      return node.field === 'userId' ? (s) => s.userId : (s) => s.id;
    case 'variable':
      return (_s, g) => g ?? null;
    case 'groups':
      throw new Error('groups outside in/length survived the parser');
    case 'groupCount':
      return (s) => s.groups.size;
    case 'call':
      return compileCall(node.fn, node.args, shared);
    case 'not': {
      const operand = sub(node.operand);
      return (s, g) => operand(s, g) !== true;
    }
    case 'and': {
      const items = node.items.map(sub);
      return (s, g) => {
        for (const item of items) if (item(s, g) !== true) return false;
        return true;
      };
    }
    case 'or': {
      const items = node.items.map(sub);
      return (s, g) => {
        for (const item of items) if (item(s, g) === true) return true;
        return false;
      };
    }
    case 'compare':
      return compileCompare(node.op, sub(node.left), sub(node.right));
    case 'inList': {
      const operand = sub(node.operand);
      if (node.items.every((i) => i.kind === 'literal')) {
        const values = new Set(node.items.map((i) => (i as Expr & { kind: 'literal' }).value));
        return (s, g) => values.has(operand(s, g));
      }
      const items = node.items.map(sub);
      return (s, g) => {
        const v = operand(s, g);
        for (const item of items) if (item(s, g) === v) return true;
        return false;
      };
    }
    case 'inGroups': {
      const operand = sub(node.operand);
      return (s, g) => {
        const v = operand(s, g);
        return typeof v === 'string' && s.groups.has(v);
      };
    }
    case 'any': {
      if (!node.body) return (s) => s.groups.size > 0;
      const body = sub(node.body);
      return (s) => {
        for (const group of s.groups) if (body(s, group) === true) return true;
        return false;
      };
    }
  }
}

function compileCompare(op: CompareOp, left: Evaluator, right: Evaluator): Evaluator {
  switch (op) {
    case 'eq':
      return (s, g) => left(s, g) === right(s, g);
    case 'ne':
      return (s, g) => left(s, g) !== right(s, g);
    case 'gt':
    case 'lt':
    case 'ge':
    case 'le':
      // The parser lets only two strings or two integers (or null) meet here.
      return (s, g) => {
        const l = left(s, g) as string | number | null;
        const r = right(s, g) as string | number | null;
        if (l === null || r === null) return (op === 'ge' || op === 'le') && l === r;
        return op === 'gt' ? l > r : op === 'lt' ? l < r : op === 'ge' ? l >= r : l <= r;
      };
  }
}

function compileCall(fn: (Expr & { kind: 'call' })['fn'], args: Expr[], shared: Map<string, Evaluator>): Evaluator {
  // The string arguments; substring's counts are integer literals, read below.
  const [a, b] = args.map((arg) => (arg.type === 'integer' ? undefined : compile(arg, shared)));
  /** A string function of one argument: null stays null. */
  const unary = (f: (v: string) => Value): Evaluator => (s, g) => {
    const v = a!(s, g);
    return v === null ? null : f(v as string);
  };
  /** A function of two strings; `none` is its value when either is null. */
  const binary = (none: Value, f: (x: string, y: string) => Value): Evaluator => (s, g) => {
    const x = a!(s, g);
    const y = b!(s, g);
    return x === null || y === null ? none : f(x as string, y as string);
  };
  switch (fn) {
    case 'tolower':
      return unary((v) => v.toLowerCase());
    case 'toupper':
      return unary((v) => v.toUpperCase());
    case 'trim':
      return unary((v) => v.trim());
    case 'length':
      return unary((v) => v.length);
    case 'substring': {
      const start = (args[1] as Expr & { kind: 'literal' }).value as number;
      const length = args[2] ? ((args[2] as Expr & { kind: 'literal' }).value as number) : undefined;
      return unary((v) => (length === undefined ? v.slice(start) : v.slice(start, start + length)));
    }
    case 'concat':
      return binary(null, (x, y) => x + y);
    case 'indexof':
      return binary(null, (x, y) => x.indexOf(y));
    case 'startswith':
      return binary(false, (x, y) => x.startsWith(y));
    case 'endswith':
      return binary(false, (x, y) => x.endsWith(y));
    case 'contains':
      return binary(false, (x, y) => x.includes(y));
  }
}

/** A parsed filter: which connections it selects. */
export class ConnectionFilter {
  private constructor(
    readonly text: string,
    private readonly root: Evaluator,
  ) {}

  /** Parses a filter; throws FilterSyntaxError with the position of the problem. */
  static parse(text: string): ConnectionFilter {
    if (text.length > MAX_FILTER_LENGTH) throw new FilterSyntaxError(MAX_FILTER_LENGTH, `longer than ${MAX_FILTER_LENGTH} characters`);
    if (text.trim() === '') throw new FilterSyntaxError(0, 'empty filter');
    return new ConnectionFilter(text, compile(parseFilterExpression(text)));
  }

  matches(subject: FilterSubject): boolean {
    return this.root(subject, undefined) === true;
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
