import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Collects clean-up work for a suite: run() undoes everything, last added first.
export class Cleanup {
  private readonly tasks: (() => unknown)[] = [];

  after(fn: () => unknown): void {
    this.tasks.push(fn);
  }

  async run(): Promise<void> {
    while (this.tasks.length > 0) {
      try {
        await this.tasks.pop()!();
      } catch {
        // keep cleaning
      }
    }
  }
}

const perTest = new WeakMap<object, Cleanup>();

/**
 * One Cleanup per test context, run (last added first) in that test's after
 * hook. node:test runs after hooks first-registered first, so clients that
 * must stop before the relay closes register here, after the relay.
 */
export function cleanupFor(t: { after(fn: () => unknown): void }): Cleanup {
  let cleanup = perTest.get(t);
  if (!cleanup) {
    cleanup = new Cleanup();
    perTest.set(t, cleanup);
    const run = cleanup;
    t.after(() => run.run());
  }
  return cleanup;
}

/** A new folder under the system's temporary folder, named `prefix` and a random tail, removed with the test. */
export function tempDirFor(t: { after(fn: () => unknown): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
