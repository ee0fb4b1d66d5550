// Full garbage collections for tests that measure what is kept: node:v8 lets a
// running process expose gc() (to contexts made after the flag is set), so the
// suite needs no --expose-gc on its command line.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');

/** A full collection, now. */
export const gc = runInNewContext('gc') as () => void;

/**
 * Buffer memory (process.memoryUsage().arrayBuffers) after two full collections a moment apart: buffers are freed
 * by a sweep that may finish after gc() returns.
 */
export async function arrayBuffersAfterGc(): Promise<number> {
  gc();
  await new Promise((r) => setTimeout(r, 50));
  gc();
  return process.memoryUsage().arrayBuffers;
}
