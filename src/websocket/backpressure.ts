// When to stop reading one side because the other has too much queued.
// A relay pauses its source once `limit` bytes wait in the destination's
// write queue and resumes at the destination's 'drain'; but Node emits
// 'drain' only after a write() that returned false, which happens once the
// queue reaches the socket's own high-water mark (16 KiB on Node 20, 64 KiB
// on Node 22). A limit below that mark would pause a source for a 'drain'
// that never comes: the leg stalled for good. So the queue counts as past the
// limit only when a 'drain' is also owed.
import type { Writable } from 'node:stream';

/** True when `limit` or more bytes wait in `socket`'s write queue and its 'drain' will follow. */
export function queuedPast(socket: Writable, limit: number): boolean {
  return socket.writableLength >= limit && socket.writableNeedDrain;
}
