// Buffers that hold only their own bytes. Node cuts buffers under 4 KiB from
// shared 8 KiB slabs, and what NATS delivers is a view into the 64 KiB read
// it came in: a small buffer kept keeps all of that memory, whatever else was
// in it and dropped since. What is kept for long (a reliable session's
// messages, the core-NATS replay window) is copied out first, so the bounds
// that count it by its length (limits.sessionBufferBytes,
// bus.replayBufferBytes) hold: before, 2,000 held messages of 320 bytes held
// 8.2 MB, and 2,000 window entries of 150 bytes 16 MB.

/** `parts` joined in a buffer of their own. */
export function ownBytes(...parts: Uint8Array[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = Buffer.allocUnsafeSlow(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** `bytes` itself when they are the whole of their memory, else a copy of their own. */
export function owned<T extends Uint8Array>(bytes: T): T | Buffer {
  return bytes.byteLength === bytes.buffer.byteLength ? bytes : ownBytes(bytes);
}
