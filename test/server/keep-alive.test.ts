// Many requests on one keep-alive connection: what the relay keeps per
// request must go with it, not with the connection. A request answered before
// its body was read (a 404, a refused REST call) left a 'close' listener on
// the socket holding the request, its response and a timer until the
// connection closed: ~1.7 KB a request, for ever on a connection that keeps
// sending, with no credential needed (found by review).
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { describe, it } from 'node:test';
import { startTestRelay } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const REQUESTS = 40;

function post(url: string, agent: Agent): Promise<{ status: number; reused: boolean }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'text/plain' } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end('a body nobody reads');
    }),
    5000,
    'POST',
  );
}

describe('requests on one keep-alive connection', () => {
  it('leave nothing on the connection once answered, when answered before their body was read', async (t) => {
    const relay = await startTestRelay(t);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    let reused = 0;
    for (let i = 0; i < REQUESTS; i++) {
      const answer = await post(`${relay.url}/api/nothing`, agent);
      assert.equal(answer.status, 404);
      if (answer.reused) reused++;
    }
    assert.equal(reused, REQUESTS - 1, 'one connection carried them all');
    // process.emitWarning reports on a later tick.
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(warnings.filter((w) => w.includes('MaxListenersExceeded')), []);
  });
});
