// JSON from the network, parsed with a bound on how deeply it nests. V8's
// JSON.parse does not recurse, but JSON.stringify and every other walk of the
// value do: `[[[…]]]` 10,000 deep (20 KB) re-serialized for delivery threw
// RangeError out of a socket handler and ended the process (issue 18, defect
// 3). Every parser of network input (pub/sub frames, REST bodies, control
// channel and rendezvous messages, upstream replies, bus envelopes, JWT
// segments) goes through parseJson, so nothing deeper than MAX_JSON_DEPTH
// reaches code that walks it. The check is one pass over the text, before
// the parse, so a deep document also costs no parsing.

/** Deepest nesting of arrays and objects accepted (docs/limits.md). */
export const MAX_JSON_DEPTH = 128;

/** Thrown by parseJson for a document nested deeper than its bound; a SyntaxError, so callers that refuse bad JSON refuse it too. */
export class JsonTooDeepError extends SyntaxError {
  constructor(readonly maxDepth: number) {
    super(`JSON nested deeper than ${maxDepth}`);
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** True when `text` opens more than `maxDepth` arrays or objects at once (brackets inside strings do not count). */
export function jsonDepthExceeds(text: string, maxDepth: number): boolean {
  // Nesting deeper than maxDepth needs more than maxDepth characters, and more than maxDepth of `[` and `{`.
  if (text.length <= maxDepth || !openersExceed(text, maxDepth)) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACKET || c === OPEN_BRACE) {
      if (++depth > maxDepth) return true;
    } else if (c === CLOSE_BRACKET || c === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}

/**
 * True when `text` holds more than `limit` of `[` and `{` together, strings
 * included. Found by indexOf, without a loop over every character: most
 * messages (a control channel's answer, a pub/sub frame) hold a few, and need
 * no scan at all (the scan was 2.5 % of a relayed HTTP request's CPU).
 */
function openersExceed(text: string, limit: number): boolean {
  let count = 0;
  for (let i = text.indexOf('['); i >= 0; i = text.indexOf('[', i + 1)) if (++count > limit) return true;
  for (let i = text.indexOf('{'); i >= 0; i = text.indexOf('{', i + 1)) if (++count > limit) return true;
  return false;
}

/** JSON.parse with a bound on nesting; throws SyntaxError (JsonTooDeepError past the bound). */
export function parseJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  if (jsonDepthExceeds(text, maxDepth)) throw new JsonTooDeepError(maxDepth);
  return JSON.parse(text);
}

const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

function skipWhitespace(text: string, i: number): number {
  while (i < text.length && WHITESPACE.has(text.charCodeAt(i))) i++;
  return i;
}

/** Index after the string token starting at `i` (a quote). */
function stringEnd(text: string, i: number): number {
  let j = i + 1;
  while (j < text.length && text.charCodeAt(j) !== QUOTE) j += text.charCodeAt(j) === BACKSLASH ? 2 : 1;
  return j + 1;
}

/** Index after the value token starting at `i`. */
function valueEnd(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === QUOTE) return stringEnd(text, i);
  if (c === OPEN_BRACKET || c === OPEN_BRACE) {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text.charCodeAt(j);
      if (d === QUOTE) j = stringEnd(text, j) - 1;
      else if (d === OPEN_BRACKET || d === OPEN_BRACE) depth++;
      else if ((d === CLOSE_BRACKET || d === CLOSE_BRACE) && --depth === 0) return j + 1;
    }
    return text.length;
  }
  let j = i;
  while (j < text.length && !',}] \t\r\n'.includes(text[j])) j++;
  return j;
}

/**
 * A copy of `part` that does not keep the string it was cut from alive. V8
 * makes a slice of 13 characters or more a view into its parent: a member
 * of a frame kept in a group's history or a reliable session's log kept the
 * whole frame (a 36-byte `data` beside a 900 KiB member nobody reads held
 * 900 KiB, counted as 100 bytes). Joining forces a flat copy of one more
 * character, and the slice after it is a view into that copy.
 */
export function unsliced(part: string): string {
  return part.length < 13 ? part : (' ' + part).slice(1);
}

/**
 * The value of the top-level member `name` of a JSON object, as written (the
 * last one, as JSON.parse keeps): what parsing loses, such as the digits of a
 * number past 2^53, can be echoed exactly. `text` must be JSON that parsed;
 * undefined when it is not an object or has no such member. The value is a
 * copy (unsliced): it may be kept long after the frame.
 */
export function rawMemberText(text: string, name: string): string | undefined {
  let i = skipWhitespace(text, 0);
  if (text.charCodeAt(i) !== OPEN_BRACE) return undefined;
  let found: string | undefined;
  i = skipWhitespace(text, i + 1);
  while (i < text.length && text.charCodeAt(i) === QUOTE) {
    const keyEnd = stringEnd(text, i);
    let key: unknown;
    try {
      key = JSON.parse(text.slice(i, keyEnd));
    } catch {
      return undefined;
    }
    i = skipWhitespace(text, skipWhitespace(text, keyEnd) + 1);
    const end = valueEnd(text, i);
    if (key === name) found = text.slice(i, end);
    i = skipWhitespace(text, end);
    if (text[i] === ',') i = skipWhitespace(text, i + 1);
  }
  return found === undefined ? undefined : unsliced(found);
}
