// decodeURIComponent for the parts of every request's target (path segments,
// scopes), where most parts hold no escape at all. V8 decodes through a byte
// vector grown one byte at a time whatever the text, ~1,000 instructions for a
// five-letter segment, and a relayed request decoded six (callgrind,
// docs/performance.md). Without a `%` there is nothing to decode and nothing
// malformed: the text is its own decoding.

/** decodeURIComponent(text), without the work when `text` has no `%`; throws URIError as it does. */
export function decodeComponent(text: string): string {
  return text.includes('%') ? decodeURIComponent(text) : text;
}
