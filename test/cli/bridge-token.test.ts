// edge-relay bridge with a ready --token, never renewed (src/bridge/relay-access.ts): one expired is refused at
// start; when it expires, or the relay refuses it 401 on -R's listener connection, the bridge takes no new
// connection, lets those open finish (the relay lets a relayed connection outlive its token) and ends, exit 1;
// what a retry may heal is still tried again.
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { buildConfig } from '../../src/config/load.ts';
import { dialThrough, howItEnds, localPort, startBridge, type BridgeProcess } from '../helpers/bridge-process.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { runCli } from '../helpers/cli-process.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay, testConfig, tokenFor } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

/**
 * The lifetime of the tokens that expire while a test runs: long enough for a bridge to start, listen and carry a
 * first exchange on a loaded machine (3 s was not, in a full suite: the bridge had not printed its first line after
 * 10 s), short enough for a test.
 */
const TOKEN_TTL_S = 9;

/** A SAS token for `url` that expires TOKEN_TTL_S from now, and when (Unix seconds). */
function expiringToken(url: string): { token: string; expires: number } {
  return { token: tokenFor(url, { ttl: TOKEN_TTL_S }), expires: Math.floor(Date.now() / 1000) + TOKEN_TTL_S };
}

/** A relay stand-in answering every WebSocket handshake `status`, as a relay restarting behind a proxy would; how many it answered. */
async function refusingServer(t: TestContext, status: number): Promise<{ url: string; answered: () => number }> {
  let answered = 0;
  const server = createHttpServer();
  server.on('upgrade', (_req, socket: Socket) => {
    answered++;
    socket.on('error', () => {});
    socket.end(`HTTP/1.1 ${status} Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, answered: () => answered };
}

/** Waits until `ms` past `expires` (a token's, Unix seconds). */
async function pastExpiry(expires: number, ms: number): Promise<void> {
  const left = expires * 1000 + ms - Date.now();
  if (left > 15000) throw new Error(`the token expires in ${left} ms: longer than a test waits`);
  if (left > 0) await new Promise((r) => setTimeout(r, left));
}

/** Writes `text` to `socket` (an echo's, through bridges) and resolves with what comes back first. */
function echoed(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const closed = () => reject(new Error(`the connection closed before the echo of "${text}"`));
      socket.once('close', closed);
      socket.once('data', (d: Buffer) => {
        socket.off('close', closed);
        resolve(String(d));
      });
    }),
    10000,
    `the echo of "${text}"`,
  );
}

/** How a TCP connect to `port` on 127.0.0.1 goes: 'connected', or its error's code (ECONNREFUSED when nothing listens). */
function connectOutcome(port: number): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    }),
    5000,
    `a connect to ${port}`,
  );
}

/** Resolves 'running' when the process is still up `ms` from now, else 'exited CODE'. */
function stillRunning(bridge: BridgeProcess, ms = 200): Promise<string> {
  return Promise.race([bridge.exited.then((code) => `exited ${code}`), new Promise<string>((r) => setTimeout(() => r('running'), ms))]);
}

describe('edge-relay bridge with a ready --token (never renewed)', () => {
  it('-R ends (exit 1, saying why) when the relay refuses the token 401, rather than trying it again for ever', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'refused', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    const token = tokenFor(`${relay.url}/$hc/refused`, { key: 'not-the-relay-key-0123456789' });
    const listener = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-R', `refused:127.0.0.1:${echo.port}`]);
    // Before: bridge.control_lost with retryInMs, again and again, with backoff.
    assert.equal(await withTimeout(listener.exited, 10000, `the bridge to end (stderr: ${listener.stderr()})`), 1);
    assert.match(listener.stderr(), /"event":"bridge\.credentials_unusable"/);
    assert.match(listener.stderr(), /^edge-relay bridge: the relay refused --token for refused \(401 [^)]*\): a ready token is used as it is, never renewed/m);
    assert.doesNotMatch(listener.stderr(), /retryInMs/);
    assert.deepEqual(listener.lines, []);
  });

  it('-R and -L with no connection open end (exit 1) when their token expires while they run, and say so', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'brief', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    const { token, expires } = expiringToken(`${relay.url}/$hc/brief`);
    const listener = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-R', `brief:127.0.0.1:${echo.port}`]);
    const dialer = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-L', '0:brief']);
    await until(() => listener.lines.some((l) => l.startsWith('listening on brief')), 10000, `-R listening with the token (stderr: ${listener.stderr()})`);
    await until(() => dialer.lines.some((l) => l.startsWith('forwarding ')), 10000, `-L forwarding (stderr: ${dialer.stderr()})`);
    // While the token lasts, it carries: the echo comes back through both bridges; then the connection ends.
    const socket = dialThrough(t, dialer);
    assert.equal(await echoed(socket, 'before it expires'), 'before it expires');
    socket.end();
    assert.equal(await howItEnds(socket), 'end');
    // Before: -R was closed by the relay (TokenExpired) and then retried the 401 for ever; -L kept its port, every connection refused.
    for (const bridge of [listener, dialer]) {
      assert.equal(await withTimeout(bridge.exited, 15000, `the bridge to end at the expiry (stderr: ${bridge.stderr()})`), 1);
      assert.ok(Date.now() >= expires * 1000 - 1000, 'not long before the expiry');
      assert.match(bridge.stderr(), /"event":"bridge\.credentials_unusable"/);
      assert.match(bridge.stderr(), /^edge-relay bridge: --token expired at \d{4}-/m);
    }
  });

  it("-L: a connection open when its token expires carries on, a new connect is refused, and the bridge ends (exit 1) once that connection has (before: it was reset at the expiry)", async (t) => {
    // The relay checks tokens every 200 ms with no grace: were it to cut a sender's leg whose token expired, it would here.
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'lasting', requiresClientAuthorization: true }], timeouts: { keepAliveIntervalMs: 200, tokenGraceMs: 0 } });
    const echo = await startTcpEcho(t);
    await startBridge(t, relay.url, ['-R', `lasting:127.0.0.1:${echo.port}`], [/^listening on lasting/]);
    const { token, expires } = expiringToken(`${relay.url}/$hc/lasting`);
    const dialer = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-L', '0:lasting']);
    await until(() => dialer.lines.some((l) => l.startsWith('forwarding ')), 10000, `-L forwarding (stderr: ${dialer.stderr()})`);
    const port = localPort(dialer);
    const socket = connect({ host: '127.0.0.1', port });
    cleanupFor(t).after(() => socket.destroy());
    socket.on('error', () => {});
    assert.equal(await echoed(socket, 'before it expires'), 'before it expires');
    // A second of the relay's token checks past the expiry, and the bridge's: the connection is still up, and carries.
    await pastExpiry(expires, 1000);
    assert.equal(await stillRunning(dialer), 'running', dialer.stderr());
    assert.equal(await echoed(socket, 'after it expired'), 'after it expired');
    assert.match(dialer.stderr(), /"event":"bridge\.accepting_stopped"[^\n]*"open":1/);
    assert.equal(await connectOutcome(port), 'ECONNREFUSED');
    assert.equal(await stillRunning(dialer), 'running', dialer.stderr());
    // Its end crosses as one (not a reset), and then the bridge ends, saying why.
    socket.end();
    assert.equal(await howItEnds(socket), 'end');
    assert.equal(await withTimeout(dialer.exited, 10000, `-L to end once its connection has (stderr: ${dialer.stderr()})`), 1);
    assert.match(dialer.stderr(), /"event":"bridge\.connections_ended"/);
    assert.match(dialer.stderr(), /^edge-relay bridge: --token expired at \d{4}-/m);
  });

  it('a signal while the open connections finish cuts them at once (a reset), exit 1 still, saying why the bridge ended', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'cut', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    await startBridge(t, relay.url, ['-R', `cut:127.0.0.1:${echo.port}`], [/^listening on cut/]);
    const { token, expires } = expiringToken(`${relay.url}/$hc/cut`);
    const dialer = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-L', '0:cut']);
    await until(() => dialer.lines.some((l) => l.startsWith('forwarding ')), 10000, `-L forwarding (stderr: ${dialer.stderr()})`);
    const socket = dialThrough(t, dialer);
    assert.equal(await echoed(socket, 'before it expires'), 'before it expires');
    await pastExpiry(expires, 300);
    await until(() => /"event":"bridge\.accepting_stopped"/.test(dialer.stderr()), 5000, `-L to stop taking connections (stderr: ${dialer.stderr()})`);
    const ends = howItEnds(socket);
    dialer.signal('SIGTERM');
    assert.equal(await ends, 'reset');
    assert.equal(await withTimeout(dialer.exited, 5000, `-L to stop (stderr: ${dialer.stderr()})`), 1);
    assert.match(dialer.stderr(), /"event":"bridge\.signal"/);
    assert.match(dialer.stderr(), /^edge-relay bridge: --token expired at \d{4}-/m);
  });

  it('-R: a leg open when its token expires carries on, no new connection reaches it, and the bridge ends (exit 1) once that leg has (before: it was reset at the expiry)', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'held', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    const { token, expires } = expiringToken(`${relay.url}/$hc/held`);
    const listener = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-R', `held:127.0.0.1:${echo.port}`]);
    await until(() => listener.lines.some((l) => l.startsWith('listening on held')), 10000, `-R listening with the token (stderr: ${listener.stderr()})`);
    const dialer = await startBridge(t, relay.url, ['-L', '0:held'], [/^forwarding /]);
    const socket = dialThrough(t, dialer);
    assert.equal(await echoed(socket, 'before it expires'), 'before it expires');
    await pastExpiry(expires, 500);
    assert.equal(await echoed(socket, 'after it expired'), 'after it expired');
    assert.match(listener.stderr(), /"event":"bridge\.listening_stopped"[^\n]*"open":1/);
    // No listener now: the relay refuses a new connect, and -L resets its client.
    const late = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => late.destroy());
    assert.equal(await howItEnds(late), 'reset');
    assert.equal(echo.connections(), 1);
    assert.equal(await stillRunning(listener), 'running', listener.stderr());
    assert.equal(await echoed(socket, 'still'), 'still');
    socket.end();
    assert.equal(await howItEnds(socket), 'end');
    assert.equal(await withTimeout(listener.exited, 10000, `-R to end once its leg has (stderr: ${listener.stderr()})`), 1);
    assert.match(listener.stderr(), /^edge-relay bridge: --token expired at \d{4}-/m);
  });

  it("-R: a 401 when it listens again is the end (no retry), but a leg open then finishes first (before: it was reset)", async (t) => {
    // A rule a reload removes: the relay closes the listener (1008 AccessRevoked) and refuses its token (401) after.
    const tenant = { keyName: 'tenant', key: 'tenant-key-0123456789' };
    let withTenant = true;
    const overrides = () => ({
      sas: [{ keyName: ROOT_KEY_NAME, key: ROOT_KEY, rights: ['Manage'] }, ...(withTenant ? [{ ...tenant, rights: ['Listen'] }] : [])],
      hybridConnections: [{ name: 'revoked', requiresClientAuthorization: true }],
    });
    const relay = await startTestRelay(t, overrides(), { loadConfig: () => buildConfig(testConfig(overrides())) });
    const echo = await startTcpEcho(t);
    const token = tokenFor(`${relay.url}/$hc/revoked`, tenant);
    const listener = runCli(t, ['bridge', '--relay', relay.url, '--token', token, '-R', `revoked:127.0.0.1:${echo.port}`]);
    await until(() => listener.lines.some((l) => l.startsWith('listening on revoked')), 10000, `-R listening with the token (stderr: ${listener.stderr()})`);
    const dialer = await startBridge(t, relay.url, ['-L', '0:revoked'], [/^forwarding /]);
    const socket = dialThrough(t, dialer);
    assert.equal(await echoed(socket, 'before'), 'before');
    withTenant = false;
    assert.ok(relay.reload('api').ok);
    // Closed (AccessRevoked), tried again after 125 to 250 ms, refused 401.
    await until(() => /"event":"bridge\.credentials_unusable"/.test(listener.stderr()), 10000, `-R refused on listening again (stderr: ${listener.stderr()})`);
    assert.match(listener.stderr(), /AccessRevoked/);
    assert.equal(await echoed(socket, 'after'), 'after');
    assert.match(listener.stderr(), /"event":"bridge\.listening_stopped"[^\n]*"open":1/);
    assert.equal(await stillRunning(listener, 500), 'running', listener.stderr());
    // Refused once, not tried again.
    assert.equal((listener.stderr().match(/"retryInMs"/g) ?? []).length, 1, listener.stderr());
    socket.end();
    assert.equal(await howItEnds(socket), 'end');
    assert.equal(await withTimeout(listener.exited, 10000, `-R to end once its leg has (stderr: ${listener.stderr()})`), 1);
    assert.match(listener.stderr(), /^edge-relay bridge: the relay refused --token for revoked \(401 /m);
  });

  it('-R ends (exit 1) on a 403 that refuses the token itself (another entity\'s), and tries again a 403 that may clear (the most listeners allowed)', async (t) => {
    const relay = await startTestRelay(t, {
      hybridConnections: [
        { name: 'mine', requiresClientAuthorization: true },
        { name: 'full', requiresClientAuthorization: true },
      ],
      limits: { listenersPerEntity: 1 },
    });
    const echo = await startTcpEcho(t);
    const elsewhere = runCli(t, ['bridge', '--relay', relay.url, '--token', tokenFor(`${relay.url}/$hc/other`), '-R', `mine:127.0.0.1:${echo.port}`]);
    // Before: tried again for ever, as a 401 was.
    assert.equal(await withTimeout(elsewhere.exited, 10000, `the bridge to end (stderr: ${elsewhere.stderr()})`), 1);
    assert.match(elsewhere.stderr(), /^edge-relay bridge: the relay refused --token for mine \(403 [^)]*, TokenScopeInvalid\)/m);
    assert.doesNotMatch(elsewhere.stderr(), /retryInMs/);
    // 'full' has its one listener: a second is refused 403 ListenerLimitReached until the first leaves.
    await startBridge(t, relay.url, ['-R', `full:127.0.0.1:${echo.port}`], [/^listening/]);
    const waiting = runCli(t, ['bridge', '--relay', relay.url, '--token', tokenFor(`${relay.url}/$hc/full`), '-R', `full:127.0.0.1:${echo.port}`]);
    await until(() => (waiting.stderr().match(/"event":"bridge\.control_lost"[^\n]*403[^\n]*"retryInMs"/g) ?? []).length >= 2, 10000, `two tries at the 403 (stderr: ${waiting.stderr()})`);
    assert.equal(await stillRunning(waiting), 'running', waiting.stderr());
  });

  it('tries again what a retry may heal: a 503 with --token, a 401 with tokens minted from a key', async (t) => {
    const busy = await refusingServer(t, 503);
    const token = tokenFor(`${busy.url}/$hc/busy`);
    const fixed = runCli(t, ['bridge', '--relay', busy.url, '--token', token, '-R', 'busy:127.0.0.1:9']);
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'minted', requiresClientAuthorization: true }] });
    // A key the relay does not have (yet: one put back in its config lets the next minted token in).
    const minted = runCli(t, ['bridge', '--relay', relay.url, '--key-name', ROOT_KEY_NAME, '--key', 'not-the-relay-key-0123456789', '-R', 'minted:127.0.0.1:9']);
    await until(() => busy.answered() >= 3, 10000, `three tries at the 503 (stderr: ${fixed.stderr()})`);
    await until(() => (minted.stderr().match(/"event":"bridge\.control_lost"[^\n]*401[^\n]*"retryInMs"/g) ?? []).length >= 3, 10000, `three tries at the 401 (stderr: ${minted.stderr()})`);
    assert.equal(await stillRunning(fixed), 'running', fixed.stderr());
    assert.equal(await stillRunning(minted), 'running', minted.stderr());
    assert.match(fixed.stderr(), /"event":"bridge\.control_lost"[^\n]*503[^\n]*"retryInMs"/);
  });
});
