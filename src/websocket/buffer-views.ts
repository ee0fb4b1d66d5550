// A Buffer read from a socket is a view of that read's memory, and a frame's
// payload a view of that: kept or queued as is, a few bytes keep the whole
// read alive while every cap counts only their length. Kept pieces are copied
// out when they are a small part of what they hold.

/** Whether keeping `buf` keeps more than twice its bytes alive. */
export function holdsMoreThanItself(buf: Buffer): boolean {
  return buf.byteLength * 2 < buf.buffer.byteLength;
}

/** `buf` itself when it is at least half of the memory it keeps alive, else a copy of it. */
export function ownedPiece(buf: Buffer): Buffer {
  return holdsMoreThanItself(buf) ? Buffer.from(buf) : buf;
}
