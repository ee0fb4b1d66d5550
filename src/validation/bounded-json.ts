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
  // Nesting deeper than maxDepth needs more than maxDepth characters.
  if (text.length <= maxDepth) return false;
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

/** JSON.parse with a bound on nesting; throws SyntaxError (JsonTooDeepError past the bound). */
export function parseJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  if (jsonDepthExceeds(text, maxDepth)) throw new JsonTooDeepError(maxDepth);
  return JSON.parse(text);
}
