// `edge-relay bridge` whose stdout or stderr reader is gone (EPIPE): a script or supervisor that read the
// `forwarding` line for its port and closed the pipe, `bridge 2>&1 | head -1`. The bridge goes on forwarding and
// stops on SIGTERM, exit 0. Found by review: the failed write of a `forwarding` or `listening on` line (a -R's
// comes whenever the relay first lets it listen) was an 'error' nothing listened to, and the bridge ended as
// crashed, exit 1, every forwarded connection cut, as `serve` did before (test/cli/closed-output.test.ts).
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { runCliWithOutputClosed } from '../helpers/cli-process.ts';
import { freePort } from '../helpers/nats.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay } from '../helpers/relay.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { withTimeout } from '../helpers/wait.ts';

/** `edge-relay bridge ARGS` with its stdout (and `alsoStderr`, its stderr) closed by its reader at once. */
function bridgeWithOutputClosed(t: TestContext, args: string[], alsoStderr: boolean) {
  return runCliWithOutputClosed(t, ['bridge', ...args], alsoStderr);
}

describe('bridge with its output closed', () => {
  for (const alsoStderr of [false, true]) {
    it(`goes on forwarding and stops on SIGTERM, exit 0: stdout closed${alsoStderr ? ', and stderr' : ''} (before: ended as crashed, exit 1)`, async (t) => {
      const relay = await startTestRelay(t, { hybridConnections: [{ name: 'quiet', requiresClientAuthorization: true }] });
      const echo = await startTcpEcho(t);
      const credentials = ['--relay', relay.url, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY];
      // The -L port is given: its line, which would say it, is not read.
      const port = await freePort();
      const bridge = bridgeWithOutputClosed(t, [...credentials, '-R', `quiet:127.0.0.1:${echo.port}`, '-L', `127.0.0.1:${port}:quiet`], alsoStderr);
      // Until it forwards (its -R listens, its -L port is open): an echo through both.
      let echoed = '';
      for (const deadline = Date.now() + 15000; echoed !== 'through' && Date.now() < deadline; ) {
        echoed = await new Promise<string>((resolve) => {
          const c = connect({ host: '127.0.0.1', port });
          c.on('error', () => resolve(''));
          c.on('close', () => resolve(''));
          c.once('data', (d: Buffer) => (c.destroy(), resolve(d.toString())));
          c.write('through');
        });
        if (echoed !== 'through') await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(echoed, 'through', `nothing came through (exit ${bridge.child.exitCode}): ${bridge.stderr().slice(-600)}`);
      // Time for the lines' failed writes to have come back.
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(bridge.child.exitCode, null, `the bridge ended (${bridge.child.exitCode}): ${bridge.stderr().slice(-600)}`);
      bridge.child.kill('SIGTERM');
      assert.equal(await withTimeout(bridge.exited, 10000, 'the bridge to stop on SIGTERM'), 0, bridge.stderr().slice(-600));
    });
  }
});
