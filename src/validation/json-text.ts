// JSON from the network passed on as written. Azure Web PubSub publishes json
// data "as what it is" and hands a CloudEvents reply's data on untouched; a
// value parsed and encoded again is not the same text (12345678901234567890
// becomes 12345678901234567000, 1.10 becomes 1.1, 1e400 becomes null, -0
// becomes 0). So JSON that is only carried is parsed to check it (with the
// nesting bound of bounded-json.ts, as receivers parse it again) and its own
// text goes on.
import { parseJson, unsliced } from './bounded-json.ts';

/**
 * The text of a JSON document as it is to be passed on: trimmed of the
 * whitespace around it and otherwise as written (whitespace inside is kept:
 * the text is one complete JSON value, safe to embed as a member's value).
 * Undefined when it is not JSON, or nests deeper than parseJson allows.
 */
export function jsonTextOf(text: string): string | undefined {
  try {
    parseJson(text);
  } catch {
    return undefined;
  }
  // JSON.parse accepted it, so only JSON's own whitespace (space, tab, CR, LF) can surround it.
  // A copy: a short value trimmed out of much whitespace would otherwise keep all of it.
  const trimmed = text.trim();
  return trimmed.length === text.length ? text : unsliced(trimmed);
}
