// `edge-relay serve` whose stdout or stderr reader is gone (EPIPE): a script
// that reads the ready line and closes the pipe, `serve 2>&1 | head -1`, a log
// shipper that died. The relay goes on serving and stops on SIGTERM. Found by
// review: the ready line's failed write ended it as crashed (exit 70), and
// with stderr gone too, the crash's own log line failed again and again: the
// process neither ended nor heeded SIGTERM.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { tracked } from '../helpers/child-processes.ts';
import { runCliWithOutputClosed } from '../helpers/cli-process.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { httpRequest } from '../helpers/http.ts';
import { freePort } from '../helpers/nats.ts';
import { untilAnswered, withTimeout } from '../helpers/wait.ts';

/** `serve` on `port`, logging at debug, with its stdout (and `alsoStderr`, its stderr) closed by its reader at once. */
function serveWithOutputClosed(t: TestContext, port: number, alsoStderr: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'closed-output-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'relay.json');
  writeFileSync(config, JSON.stringify({
    listen: { host: '127.0.0.1', port },
    log: { level: 'debug' },
    sas: [{ keyName: 'RootManageSharedAccessKey', key: 'dev-only-key-0123456789', rights: ['Manage'] }],
    timeouts: { shutdownMs: 2000 },
  }));
  return runCliWithOutputClosed(t, ['serve', '--config', config], alsoStderr);
}

describe('serve with its output closed', () => {
  for (const alsoStderr of [false, true]) {
    it(`goes on serving and stops on SIGTERM, exit 0: stdout closed${alsoStderr ? ', and stderr' : ''}`, async (t) => {
      const port = await freePort();
      const relay = serveWithOutputClosed(t, port, alsoStderr);
      const url = `http://127.0.0.1:${port}`;
      await untilAnswered(async () => (await httpRequest(`${url}/$relay/health`, { timeoutMs: 2000 }).catch(() => ({ status: 0 }))).status === 200, 20000, 'the relay to serve');
      // Some requests, each logged, and time for the ready line's and the log's failed writes to have come back.
      for (let i = 0; i < 20; i++) await httpRequest(`${url}/nowhere-${i}`, { timeoutMs: 2000 });
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(relay.child.exitCode, null, `the relay ended (${relay.child.exitCode}): ${relay.stderr().slice(-600)}`);
      assert.equal((await httpRequest(`${url}/$relay/health`, { timeoutMs: 2000 })).status, 200);
      relay.child.kill('SIGTERM');
      assert.equal(await withTimeout(relay.exited, 10000, 'the relay to stop on SIGTERM'), 0, relay.stderr().slice(-600));
    });
  }
});

describe('the log with a write to stderr that fails for a moment', () => {
  it('goes on (before, any error ended the writing for good): a disk full for a moment under a redirect loses nothing (found by review)', async (t) => {
    // One write to fd 2 fails with ENOSPC; the lines before and after it must come out.
    const script = `
      import fs from 'node:fs';
      import { createLogger, droppedLogLines } from './src/telemetry/logger.ts';
      const write = fs.write;
      let failed = false;
      fs.write = function (fd, ...rest) {
        if (fd === 2 && !failed) {
          failed = true;
          const callback = rest[rest.length - 1];
          return process.nextTick(() => callback(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })));
        }
        return write.call(fs, fd, ...rest);
      };
      const log = createLogger('info', 'n');
      log.info({ event: 'first' });
      setTimeout(() => {
        for (let i = 0; i < 5; i++) log.info({ event: 'later', i });
        setTimeout(() => { process.stdout.write('dropped ' + droppedLogLines(log) + '\\n'); process.exit(0); }, 300);
      }, 300);
    `;
    const child = tracked(spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    cleanupFor(t).after(() => void child.kill('SIGKILL'));
    const code = await withTimeout(new Promise<number | null>((resolve) => child.once('exit', resolve)), 20000, 'the script to end');
    assert.equal(code, 0, err);
    assert.equal(out.trim(), 'dropped 0');
    const events = err.split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { event: string }).event);
    assert.deepEqual(events, ['first', 'later', 'later', 'later', 'later', 'later']);
  });
});
