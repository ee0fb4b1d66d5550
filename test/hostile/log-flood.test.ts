// Log lines while stderr does not take them: a log shipper that stalled, or a
// pipe nobody reads. Lines wait in memory up to log.bufferBytes, past which
// new ones are dropped and counted; once stderr takes lines again, one line
// says how many went. Before, the wait had no bound: every refused request
// or connection, each logged, grew the relay's memory while the reader was
// stuck. A real relay process whose stderr this test leaves unread.
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { httpRequest } from '../helpers/http.ts';
import { startRelayProcess, type RelayProcess } from '../helpers/relay.ts';
import { untilAnswered, withTimeout } from '../helpers/wait.ts';

const BUFFER_BYTES = 65536;
/** Requests refused at info level ("http.refused", ~200 bytes each): several times what the buffer, the pipe and node's read-ahead hold. */
const REQUESTS = 3000;

/** GET `path` `count` times over `parallel` keep-alive connections; resolves with the statuses seen. */
async function getMany(port: number, path: string, count: number, parallel: number): Promise<Set<number>> {
  const agent = new Agent({ keepAlive: true, maxSockets: parallel });
  const statuses = new Set<number>();
  let left = count;
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
        statuses.add(res.statusCode ?? 0);
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
  try {
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (left-- > 0) await one();
    }));
  } finally {
    agent.destroy();
  }
  return statuses;
}

/** A relay process at info level whose stderr nobody reads. */
function relayWithUnreadStderr(t: TestContext): Promise<RelayProcess> {
  return startRelayProcess(t, { log: { level: 'info', bufferBytes: BUFFER_BYTES }, metrics: { requireManage: false } }, { readStderr: false });
}

/** edge_relay_log_lines_dropped_total of the relay at `url`. */
async function droppedLines(url: string): Promise<number> {
  const res = await httpRequest(`${url}/$relay/metrics`);
  assert.equal(res.status, 200, 'metrics while stderr is stuck');
  return Number(/^edge_relay_log_lines_dropped_total\{[^}]*\} (\d+)$/m.exec(res.body.toString())?.[1] ?? NaN);
}

describe('log lines while stderr is not read', () => {
  it('drops and counts past log.bufferBytes, keeps serving, and reports the count once stderr reads again', async (t) => {
    const { child, url, port } = await relayWithUnreadStderr(t);

    // Each is refused 404 EntityNotFound, and logged.
    const statuses = await withTimeout(getMany(port, '/no-such-entity/x', REQUESTS, 8), 60000, 'requests while stderr is stuck');
    assert.deepEqual([...statuses], [404]);
    const dropped = () => droppedLines(url);
    let count = NaN;
    await untilAnswered(async () => (count = await dropped()) > 0, 10000, 'dropped log lines counted');
    t.diagnostic(`${count} of about ${REQUESTS} lines dropped`);
    assert.ok(count < REQUESTS, 'what fitted was kept');
    const health = await httpRequest(`${url}/$relay/health`);
    assert.equal(health.status, 200, 'serving while stderr is stuck');

    // stderr reads again: what waited comes out, then one line with the count.
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stderr!.resume();
    const reported = () =>
      err
        .split('\n')
        .filter((line) => line.includes('"log.lines_dropped"'))
        .reduce((sum, line) => sum + Number((JSON.parse(line) as { lines: number }).lines), 0);
    // Every dropped line reported, and counted the same (a report that did not fit is tried again a second later).
    await untilAnswered(async () => reported() > 0 && reported() === (await dropped()), 10000, 'the dropped lines reported');
    assert.ok(err.includes('"http.refused"'), 'the lines that fitted came out');
  });

  it('lets a relay told to stop exit while stderr is stuck', async (t) => {
    const { child, url, port } = await relayWithUnreadStderr(t);
    await withTimeout(getMany(port, '/no-such-entity/x', REQUESTS, 8), 60000, 'requests while stderr is stuck');
    await untilAnswered(async () => (await droppedLines(url)) > 0, 10000, 'stderr stuck');
    // The drain has nothing to wait for; what is left for stderr is not waited on past a moment.
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await withTimeout(exited, 15000, 'the relay to exit with stderr stuck'), 0);
  });
});
