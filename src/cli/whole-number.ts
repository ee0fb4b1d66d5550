// Numbers the command line takes: whole numbers written in digits only. Number() alone takes 1e300, 0x10, ' 3'
// and '', each a number: `bridge --buffer 1e300` let -L grow by hundreds of MiB a second, `--ttl 1e21` minted
// tokens every relay refuses.

/** `text` as a whole number when it is 1 to `maxDigits` decimal digits, else NaN. */
export function wholeNumber(text: string, maxDigits: number): number {
  return text.length <= maxDigits && /^[0-9]+$/.test(text) ? Number(text) : NaN;
}
