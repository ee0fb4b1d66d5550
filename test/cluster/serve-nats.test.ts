// `edge-relay serve --nats URLS`: the README's way to start edges on a NATS
// cluster without writing a bus section into the config.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { readiness, waitReady } from '../helpers/cluster.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { withTimeout } from '../helpers/wait.ts';

describe('serve --nats', () => {
  it('runs an edge on the NATS bus with the development config', async (t) => {
    const nats = await startNatsServer(t);
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', 'config/dev.json', '--port', '0', '--node-id', 'edge-cli', '--nats', nats.url, '--log-level', 'warn'],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: new URL('../..', import.meta.url).pathname },
    );
    cleanupFor(t).after(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    });
    child.stderr!.resume();
    const url = await withTimeout(
      new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d;
          const m = /listening on (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
      }),
      15000,
      'serve to listen',
    );
    await waitReady({ url });
    const { body } = await readiness({ url });
    assert.deepEqual(body.bus, { kind: 'nats', connected: true });
  });
});
