// The primary of `serve --workers` outlives what its workers do to it
// (src/server/worker-cluster.ts). Run with stand-in workers
// (helpers/worker-primary-fixture.ts) to make the timing happen at will.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { withTimeout } from '../helpers/wait.ts';

const FIXTURE = fileURLToPath(new URL('../helpers/worker-primary-fixture.ts', import.meta.url));

describe('serve --workers: the primary', () => {
  it('lives through a message to a worker that has just died (EPIPE)', async (t) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.stderr.on('data', (c: Buffer) => (out += c));
    const code = await withTimeout(new Promise<number | null>((resolve) => child.once('exit', resolve)), 30000, 'the primary to exit');
    // Before: "Unhandled 'error' event ... write EPIPE" ended the primary (exit 1), and every worker with it.
    assert.equal(code, 0, out);
    assert.match(out, /survived/);
  });
});
