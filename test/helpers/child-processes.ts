// The processes tests start (relays, nats-server, haproxy, CLI commands,
// client scripts), ended with the test process itself. Each test stops its own
// in an after hook; but node's test runner ends a file that overran
// --test-timeout with SIGTERM, which runs no hook, and what its tests had
// started lived on: a `serve --workers 2` and its nats-server, left by a
// cancelled workers test, were still up 36 minutes later (2026-12-05). On
// SIGTERM or SIGINT each gets SIGTERM (a relay drains; `serve --workers` takes
// its workers down), then SIGKILL after 3 s; at exit, SIGKILL.
import type { ChildProcess } from 'node:child_process';

const running = new Set<ChildProcess>();
let installed = false;

function killAll(): void {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

async function endAll(): Promise<void> {
  for (const child of running) {
    try {
      child.kill('SIGTERM');
    } catch {
      // gone meanwhile
    }
  }
  const deadline = Date.now() + 3000;
  while (running.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  killAll();
}

function install(): void {
  installed = true;
  process.once('exit', killAll);
  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    process.once(signal, () => void endAll().finally(() => process.exit(code)));
  }
}

/** `child`, ended with this process if it still runs then (see above). */
export function tracked<T extends ChildProcess>(child: T): T {
  if (!installed) install();
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}
