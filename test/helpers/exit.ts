// A child process's end as a test that reads what it printed needs it:
// 'exit' can come while the last of its output is still in the pipe, unread;
// 'close' comes once its stdout and stderr have ended too (and those of any
// process it started that shares them, as the workers of serve --workers do).
import type { ChildProcess } from 'node:child_process';

/** Resolves with the exit code (null when a signal ended it) once the child has exited and all it printed has been read. */
export function exitedWithOutput(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('close', (code: number | null) => resolve(code)));
}
