// Names compared without regard to case (entities, hubs, the paths tokens are
// scoped to) fold A-Z only, as Azure compares them (.NET's OrdinalIgnoreCase
// on ASCII names). String#toLowerCase folds more: the Kelvin sign (U+212A)
// becomes an ASCII "k", so a token scoped to "\u212Aey" covered the entity
// "key", and /client/hubs/%E2%84%AAey reached the hub "key".

/** `s` with A-Z lower-cased and every other character as it is. */
export function asciiLowerCase(s: string): string {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}
