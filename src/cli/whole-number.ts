// Numbers the command line takes: whole numbers written in digits only. Number() alone takes 1e300, 0x10, ' 3'
// and '', each a number: `bridge --buffer 1e300` let -L grow by hundreds of MiB a second, `--ttl 1e21` minted
// tokens every relay refuses, `sub --after 1e3` read the history after 1000.

/** `text` as a whole number when it is 1 to `maxDigits` decimal digits, else NaN. */
export function wholeNumber(text: string, maxDigits: number): number {
  return text.length <= maxDigits && /^[0-9]+$/.test(text) ? Number(text) : NaN;
}

/**
 * `text` as a whole number when it is decimal digits naming at most Number.MAX_SAFE_INTEGER (2^53 - 1, the largest a
 * JSON number and so the relay carries exactly); 'not digits' or 'too large' say why not, for a message that says which.
 */
export function safeWholeNumber(text: string): number | 'not digits' | 'too large' {
  if (!/^[0-9]+$/.test(text)) return 'not digits';
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : 'too large';
}
