// `edge-relay serve --workers N`: N edges in one command sharing the port, on
// the NATS bus. A listener's rendezvous leg that lands on the wrong worker is
// handed to the worker holding the rendezvous; pub/sub spans the workers.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { makePki } from '../helpers/certs.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { exitedWithOutput } from '../helpers/exit.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { edgeOverrides } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHaproxy } from '../helpers/proxy-protocol.ts';
import { startHycoWsListener, hycoHttps, listenUrl } from '../helpers/hyco.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { accessUrl } from '../helpers/pubsub.ts';
import { startServeProcess, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { serviceClient, startClient } from '../helpers/web-pubsub-sdk.ts';
import { until, withTimeout } from '../helpers/wait.ts';

function configFile(t: Parameters<typeof cleanupFor>[0], config: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-workers-'));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(testConfig(config)));
  return file;
}

async function echoOnce(url: string, text: string): Promise<string> {
  const ws = new WebSocket(wsUrl(url, '/$hc/echo?sb-hc-action=connect'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(url, '/$hc/echo')) } });
  try {
    await withTimeout(new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject))), 10000, 'sender open');
    const reply = withTimeout(new Promise<string>((resolve) => ws.once('message', (m) => resolve(String(m)))), 10000, 'echo');
    ws.send(text);
    return await reply;
  } finally {
    ws.terminate();
  }
}

/** The worker processes of the primary `pid` (its children running the CLI, not tsx's esbuild service), from /proc. */
function workerPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('edge-relay.js')) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Kills one of the primary's two workers (SIGKILL) and waits until the primary has forked its successor: the pid killed. */
async function killWorkerUntilForkedAgain(primary: number): Promise<number> {
  const [killed] = workerPids(primary);
  process.kill(killed, 'SIGKILL');
  await until(() => {
    const pids = workerPids(primary);
    return pids.length === 2 && !pids.includes(killed);
  }, 10000, 'the new worker to be forked');
  return killed;
}

/** A raw listener on entity echo whose legs echo; closed with the test. */
async function echoListener(t: Parameters<typeof cleanupFor>[0], url: string): Promise<RawListener> {
  const listener = await RawListener.connect(wsUrl(url, '/$hc/echo?sb-hc-action=listen'), tokenFor(wsUrl(url, '/$hc/echo')));
  cleanupFor(t).after(() => listener.ws.terminate());
  listener.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const accept = (JSON.parse(String(data)) as { accept?: { address: string } }).accept;
    if (!accept) return;
    const leg = new WebSocket(accept.address);
    leg.on('message', (m) => leg.send(String(m)));
    leg.on('error', () => leg.terminate());
    cleanupFor(t).after(() => leg.terminate());
  });
  return listener;
}

// Two tests at a time: each has a command and a nats-server of its own, and most of a test is waiting for processes.
describe('serve --workers', { concurrency: 2 }, () => {
  it('runs N edges on one port: rendezvous legs find their worker, pub/sub spans the workers, POST /$relay/reload reaches them all', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('host', [nats.url]);
    const file = configFile(t, overrides);
    const relay = await startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']);
    // One listener, attached to one of the workers; senders land on either.
    const echoListener = await startHycoWsListener(t, relay.url, (ws) => ws.on('message', (m: Buffer) => ws.send(String(m))));
    for (let i = 0; i < 12; i++) assert.equal(await echoOnce(relay.url, `hello ${i}`), `hello ${i}`);
    assert.match(relay.stderr(), /"node":"host-w1"/);
    assert.match(relay.stderr(), /"node":"host-w2"/);

    // HTTP mode with a body too large for the control channel: the listener fetches it over a rendezvous leg.
    const url = listenUrl(relay.url, 'web');
    const server = hycoHttps.createRelayedServer({ server: url, token: () => tokenFor(url) }, (req, res) => {
      let size = 0;
      req.on('data', (c: Buffer) => (size += c.length));
      req.on('end', () => res.end(`got ${size}`));
    });
    server.on('error', () => {});
    cleanupFor(t).after(() => server.close());
    server.listen();
    await new Promise((r) => server.once('listening', r));
    const body = Buffer.alloc(200 * 1024, 1);
    for (let i = 0; i < 6; i++) {
      const res = await httpRequest(`${relay.url}/web/upload`, { method: 'POST', headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/web`) }, body });
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), `got ${body.length}`);
    }

    // Pub/sub: a subscriber and REST calls on whichever workers the connections land.
    const subs = await Promise.all([1, 2, 3, 4].map(() => startClient(t, accessUrl(relay.url))));
    for (const sub of subs) await sub.client.joinGroup('g');
    const publisher = await startClient(t, accessUrl(relay.url));
    await publisher.client.sendToGroup('g', 'across', 'text');
    await until(() => subs.every((s) => s.groupData.some((m) => m.data === 'across')), 10000, 'every subscriber, on either worker');
    await serviceClient(relay).sendToAll('from REST', { contentType: 'text/plain' });
    await until(() => subs.every((s) => s.serverData.some((m) => m.data === 'from REST')), 10000, 'a REST send to every worker');

    // A reload through the API lands on one worker, which passes it on: both reload, and a
    // worker's node id (host-wN) is not taken for a change that needs a restart.
    writeFileSync(file, JSON.stringify(testConfig({ ...overrides, limits: { pendingPerEntity: 77 } })));
    const reloaded = await httpRequest(`${relay.url}/$relay/reload`, { method: 'POST', headers: { authorization: tokenFor(`${relay.url}/`) } });
    assert.equal(reloaded.status, 200, String(reloaded.body));
    const answer = JSON.parse(String(reloaded.body)) as { changed?: string[]; restartNeeded?: string[] };
    assert.ok(answer.changed?.includes('limits'), String(reloaded.body));
    assert.deepEqual(answer.restartNeeded ?? [], []);
    await until(() => ['host-w1', 'host-w2'].every((node) => new RegExp(`"node":"${node}"[^\n]*"event":"config.reloaded"`).test(relay.stderr())), 10000, 'both workers to reload');

    // SIGTERM to the command stops every worker. (The clients go first: an SDK
    // client that is reconnecting to a stopped relay does not stop, and hyco-ws
    // answers each refused reconnect with two more, at once.)
    for (const client of [...subs, publisher]) await client.client.stop();
    echoListener.close();
    server.close();
    await relay.stop();
    assert.notEqual(relay.child.exitCode ?? relay.child.signalCode, null);
  });

  it('over TLS: a leg that lands on the wrong worker is relayed to the right one (a TLS connection cannot change process)', async (t) => {
    const nats = await startNatsServer(t);
    const pki = makePki(t);
    const overrides = { ...edgeOverrides('tls', [nats.url]), listen: { host: '127.0.0.1', port: 0, tls: pki.server } };
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    assert.match(relay.url, /^https:/);
    const wss = (path: string) => relay.url.replace(/^https/, 'wss') + path;
    const listenUri = wss('/$hc/echo?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUri, tokenFor(wss('/$hc/echo')), { ca: pki.ca });
    t.after(() => listener.ws.terminate());
    // The listener accepts each connect by dialling the rendezvous address it is given, and echoes.
    listener.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const accept = (JSON.parse(String(data)) as { accept?: { address: string } }).accept;
      if (!accept) return;
      const leg = new WebSocket(accept.address, { ca: pki.ca });
      leg.on('message', (m) => leg.send(String(m)));
      leg.on('error', () => leg.terminate());
      t.after(() => leg.terminate());
    });
    for (let i = 0; i < 10; i++) {
      const sender = new WebSocket(wss('/$hc/echo?sb-hc-action=connect'), { ca: pki.ca, headers: { ServiceBusAuthorization: tokenFor(wss('/$hc/echo')) } });
      t.after(() => sender.terminate());
      await withTimeout(new Promise((resolve, reject) => (sender.once('open', resolve), sender.once('error', reject))), 10000, `sender ${i} open`).catch((err) => {
        throw new Error(`${err.message}\n${relay.stderr().split('\n').filter((l) => /connect|rendezvous|handoff|listener/.test(l)).slice(-15).join('\n')}`);
      });
      const reply = withTimeout(new Promise<string>((resolve) => sender.once('message', (m) => resolve(String(m)))), 10000, `echo ${i}`);
      sender.send(`over tls ${i}`);
      assert.equal(await reply, `over tls ${i}`);
      sender.close();
    }
    await relay.stop();
  });

  it('behind a balancer sending PROXY headers (listen.proxyProtocol): legs handed between workers need none again, senders are named', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = { ...edgeOverrides('proxied', [nats.url]), listen: { host: '127.0.0.1', port: 0, trustProxy: ['127.0.0.1'], proxyProtocol: true } };
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    const relayPort = new URL(relay.url).port;
    const { v2 } = await startHaproxy(t, Number(relayPort));
    const base = `http://127.0.0.1:${v2}`;
    const listener = await RawListener.connect(wsUrl(base, '/$hc/echo?sb-hc-action=listen'), tokenFor(wsUrl(base, '/$hc/echo')));
    t.after(() => listener.ws.terminate());
    const told: { address: string; port: number }[] = [];
    listener.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const accept = (JSON.parse(String(data)) as { accept?: { address: string; remoteEndpoint: { address: string; port: number } } }).accept;
      if (!accept) return;
      told.push(accept.remoteEndpoint);
      // Every connection to the relay's port goes through the balancer, the legs too.
      const leg = new WebSocket(accept.address.replace(`:${relayPort}/`, `:${v2}/`));
      leg.on('message', (m) => leg.send(String(m)));
      leg.on('error', () => leg.terminate());
      t.after(() => leg.terminate());
    });
    const senderPorts: number[] = [];
    for (let i = 0; i < 12; i++) {
      const sender = new WebSocket(wsUrl(base, '/$hc/echo?sb-hc-action=connect'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(base, '/$hc/echo')) } });
      t.after(() => sender.terminate());
      await withTimeout(new Promise((resolve, reject) => (sender.once('open', resolve), sender.once('error', reject))), 10000, `sender ${i} open`).catch((err) => {
        throw new Error(`${err.message}\n${relay.stderr().split('\n').filter((l) => /connect|rendezvous|proxy_protocol|listener/.test(l)).slice(-15).join('\n')}`);
      });
      senderPorts.push((sender as unknown as { _socket: { localPort: number } })._socket.localPort);
      const reply = withTimeout(new Promise<string>((resolve) => sender.once('message', (m) => resolve(String(m)))), 10000, `echo ${i}`);
      sender.send(`proxied ${i}`);
      assert.equal(await reply, `proxied ${i}`);
      sender.close();
    }
    assert.deepEqual(told, senderPorts.map((port) => ({ address: '127.0.0.1', port })));
    assert.match(relay.stderr(), /"node":"proxied-w1"/);
    assert.match(relay.stderr(), /"node":"proxied-w2"/);
    assert.doesNotMatch(relay.stderr(), /proxy_protocol\.refused/);
    await relay.stop();
  });

  it('keeps its workers: one that dies is started again, legs handed between them do not hold up the stop, Ctrl-C to every process drains them', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('keep', [nats.url], { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 10000 } });
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    let listener = await echoListener(t, relay.url);
    for (let i = 0; i < 4; i++) assert.equal(await echoOnce(relay.url, `before ${i}`), `before ${i}`);

    // A worker killed (a crash, the OOM killer) is started again; before, the primary only logged it and exited 0 with the last.
    const killed = await killWorkerUntilForkedAgain(primary);
    // A SIGHUP while the new worker starts is for the workers that listen (before, it ended the starting one).
    process.kill(primary, 'SIGHUP');
    await until(() => /worker \d is back/.test(relay.stderr()), 15000, `the worker started again\n${relay.stderr().slice(-2000)}`);
    assert.doesNotMatch(relay.stderr(), /exited \(SIGHUP\)/);
    const now = workerPids(primary);
    assert.equal(now.length, 2);
    assert.ok(!now.includes(killed));
    listener.ws.terminate();
    listener = await echoListener(t, relay.url);
    // Legs that land on the wrong worker are handed to the right one: some of these are.
    for (let i = 0; i < 8; i++) assert.equal(await echoOnce(relay.url, `after ${i}`), `after ${i}`);

    // A relayed connection open while every process gets SIGINT at once (a terminal's Ctrl-C, systemd's
    // control-group kill): the workers drain (before: the primary's second SIGINT killed them mid-drain, 1006).
    const sender = new WebSocket(wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, '/$hc/echo')) } });
    t.after(() => sender.terminate());
    await withTimeout(new Promise((resolve, reject) => (sender.once('open', resolve), sender.once('error', reject))), 10000, 'sender open');
    const closed = new Promise<number>((resolve) => sender.once('close', (code) => resolve(code)));
    // Its end with all it printed read: the last worker's relay.stopped comes just before the primary exits.
    const exited = exitedWithOutput(relay.child);
    for (const pid of [primary, ...workerPids(primary)]) process.kill(pid, 'SIGINT');
    // A window, not a wait for an event: what is checked is that nothing kills the draining worker in it (the
    // primary's repeat of the signal may even merge with the worker's own, so no log line marks its arrival).
    // The drain closes relayed WebSockets (1001) min(closeHandshakeMs, shutdownMs / 2) before its deadline:
    // with shutdownMs 10 s that is 5 s in, well after this window and the echo (with 4 s it was 2 s in, and
    // a loaded machine's late timer once sent the message after it).
    await new Promise((r) => setTimeout(r, 1000));
    const reply = withTimeout(new Promise<string>((resolve) => sender.once('message', (m) => resolve(String(m)))), 5000, 'an echo while draining');
    sender.send('still here');
    // On failure, what the processes said: the drain's log lines and any exit.
    const said = () => relay.stderr().split('\n').filter((l) => !/"level":20/.test(l)).slice(-40).join('\n');
    assert.equal(await reply.catch((err: Error) => `${err.message}; sender ${sender.readyState}\n${said()}`), 'still here');
    sender.close(1000);
    assert.equal(await withTimeout(closed, 5000, 'the sender to close'), 1000);
    await withTimeout(exited, 10000, 'the command to exit');
    // Both workers finished their drain, and none waited for its deadline on sockets it had handed away
    // (before: each hand-off left a socket counted open in the worker that sent it).
    assert.equal(relay.stderr().match(/"event":"relay.stopped"/g)?.length, 2, relay.stderr().split('\n').filter((l) => !/"level":20/.test(l)).slice(-40).join('\n'));
    assert.doesNotMatch(relay.stderr(), /relay\.shutdown_deadline/);
  });

  it("a worker started again after a crash keeps the command's restart-only config (its NATS servers), not the file's since", async (t) => {
    const nats = await startNatsServer(t);
    const file = configFile(t, edgeOverrides('pinned', [nats.url], { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 2000 } }));
    const relay = await startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    // The file now names a NATS server nowhere (bus: a change that waits for a restart), then a worker crashes.
    const changed = JSON.parse(readFileSync(file, 'utf8')) as { bus: { servers: string[] } };
    changed.bus.servers = ['nats://127.0.0.1:1'];
    writeFileSync(file, JSON.stringify(changed));
    await killWorkerUntilForkedAgain(primary);
    const back = await withTimeout(
      (async () => {
        for (;;) {
          const found = /worker (\d) is back/.exec(relay.stderr());
          if (found) return found[1];
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      20000,
      `the worker started again\n${relay.stderr().slice(-2000)}`,
    );
    const connects = () => relay.stderr().match(new RegExp(`"node":"pinned-w${back}","component":"bus","event":"bus.connected"`, 'g'))?.length ?? 0;
    const unreachable = new RegExp(`"node":"pinned-w${back}","component":"bus","event":"bus.unreachable"`);
    await until(() => connects() === 2 || unreachable.test(relay.stderr()), 15000, 'the new worker on NATS, or not');
    // Before: it read the file as it is now, and stayed off the NATS server its peers are on (bus.unreachable).
    assert.doesNotMatch(relay.stderr(), unreachable);
    assert.equal(connects(), 2);
    const listener = await echoListener(t, relay.url);
    for (let i = 0; i < 4; i++) assert.equal(await echoOnce(relay.url, `pinned ${i}`), `pinned ${i}`);
    listener.ws.terminate();
  });

  it('a worker started again hands legs over, and is handed them, as soon as it listens, not once it is ready', async (t) => {
    const nats = await startNatsServer(t);
    // NATS away when the worker is started again: it listens at once, and says it is ready only after waiting up to
    // bus.requestTimeoutMs for NATS. Legs landing on the wrong worker in that window were answered 404
    // RendezvousNotFound (before: the new worker knew no other, and the others not it), and their senders hung.
    const overrides = edgeOverrides('rejoin', [nats.url], { bus: { requestTimeoutMs: 10000 }, timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500, acceptMs: 3000 } });
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    await nats.kill();
    await killWorkerUntilForkedAgain(primary);
    const listening = () => relay.stderr().match(/"event":"relay\.listening"/g)?.length ?? 0;
    await until(() => listening() === 3, 15000, 'the new worker to listen');
    // A listener on one worker; senders land on either (those on the other worker are refused: no NATS to route them),
    // and the accept legs of those on the listener's worker land on either too.
    await echoListener(t, relay.url);
    const attempts = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        withTimeout(echoOnce(relay.url, `in the window ${i}`), 4500, 'one echo').then(
          () => 'echoed',
          () => 'refused',
        ),
      ),
    );
    const said = () => relay.stderr().split('\n').filter((l) => /rendezvous|is back|listening/.test(l)).slice(-20).join('\n');
    assert.doesNotMatch(relay.stderr(), /worker \d is back/, `the window was over before the senders were done\n${said()}`);
    assert.ok(attempts.includes('echoed'), said());
    assert.doesNotMatch(relay.stderr(), /"event":"rendezvous\.unknown"/, said());
  });

  it('answers a leg naming no worker that is up, keeps its private sockets in a folder of its own, and says when a worker was cut', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('private', [nats.url], { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500 } });
    // A temporary directory too deep for a socket path (Node cut them short: both workers on one path, EADDRINUSE).
    const deep = join(mkdtempSync(join(tmpdir(), 'edge-relay-deep-')), 'd'.repeat(80));
    mkdirSync(deep);
    t.after(() => rmSync(join(deep, '..'), { recursive: true, force: true }));
    const tmp = process.env.TMPDIR;
    process.env.TMPDIR = deep;
    const starting = startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    if (tmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = tmp;
    const relay = await starting;
    const primary = relay.child.pid!;
    // Worker 7 of 2 (before: whichever worker the leg landed on handed it to the primary, which closed it unanswered).
    for (let i = 0; i < 6; i++) {
      const id = `${randomUUID().slice(0, 32)}0007`;
      const answer = await rawUpgrade(t, relay.port, `/$hc/echo?sb-hc-action=accept&sb-hc-id=${id}`);
      assert.equal(answer.status, 404);
    }
    // TLS legs go to the right worker over a Unix socket in a folder only this user can use (before: a TCP port on
    // 127.0.0.1, which any local process could bind once its worker died, and be sent the hand-over secret).
    const env = readFileSync(`/proc/${workerPids(primary)[0]}/environ`, 'utf8').split('\0');
    const dir = env.find((e) => e.startsWith('EDGE_RELAY_HANDOFF_DIR='))!.slice('EDGE_RELAY_HANDOFF_DIR='.length);
    assert.match(dir, /^\/tmp\/edge-relay-w-/, 'under /tmp, the temporary directory being too deep');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir).sort(), ['w1.sock', 'w2.sock']);
    // Named after the primary's node id (the default has its pid), not each worker's own.
    assert.ok(env.includes(`EDGE_RELAY_NODE_ID=private`), 'the node id passed on');

    // A worker that does not end its drain cleanly (killed past its deadline, as here at once): the command says so,
    // and exits 70 (before: 0).
    const exited = exitedWithOutput(relay.child);
    // One worker is held (SIGSTOP: it cannot drain), and killed once the primary stops (the other worker says it got
    // the signal the primary passed on; a worker dying before that would be started again).
    const [cut] = workerPids(primary);
    process.kill(cut, 'SIGSTOP');
    relay.child.kill('SIGTERM');
    await until(() => /"event":"relay\.signal","signal":"SIGTERM"/.test(relay.stderr()), 10000, 'the stop passed on to the workers');
    process.kill(cut, 'SIGKILL');
    assert.equal(await withTimeout(exited, 15000, 'the command to exit'), 70);
    assert.match(relay.stderr(), /a worker did not stop cleanly/);
    assert.equal(existsSync(dir), false, 'the folder removed');
  });


  it('ends with the code of a worker that cannot start, not a hang: a certificate it cannot use (78)', async (t) => {
    const nats = await startNatsServer(t);
    const file = configFile(t, {});
    const garbage = join(file, '..', 'not-a-certificate.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const badTls = { ...edgeOverrides('badtls', [nats.url]), listen: { host: '127.0.0.1', port: 0, tls: { certFile: garbage, keyFile: garbage } } };
    // Before: both workers printed the error and stayed (their channel to the primary kept them), and so did the command.
    // (A port taken, exit 1, took the same path: every return of a worker's command ends it now.)
    await assert.rejects(startServeProcess(t, ['--config', configFile(t, badTls), '--port', '0', '--workers', '2']), /relay exited with 78/);
  });

  it('refuses several workers on the memory bus, with the reason', async (t) => {
    const file = configFile(t, {});
    await assert.rejects(startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']), /--workers needs the NATS bus/);
  });

  it('kills a worker whose event loop is stuck (--worker-watchdog), starts it again, and stops cleanly (0) meanwhile', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('watchdog', [nats.url], { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500 } });
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2', '--worker-watchdog', '2']);
    const primary = relay.child.pid!;
    const [stuck, other] = workerPids(primary);
    // The whole command frozen and thawed (Ctrl-Z and fg, a paused container) past the bound: nobody was silent
    // alone, and no worker is killed (before the review's fix: both were).
    const all = [primary, stuck, other];
    for (const pid of all) process.kill(pid, 'SIGSTOP');
    t.after(() => {
      for (const pid of all) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone
        }
      }
    });
    await new Promise((r) => setTimeout(r, 3000));
    for (const pid of all) process.kill(pid, 'SIGCONT');
    await new Promise((r) => setTimeout(r, 3000));
    assert.doesNotMatch(relay.stderr(), /killing it/);
    // A stopped process answers nothing, as one stuck in a loop; it is killed whether or not the watchdog did.
    process.kill(stuck, 'SIGSTOP');
    t.after(() => {
      try {
        process.kill(stuck, 'SIGKILL');
      } catch {
        // killed by the watchdog
      }
    });
    // Before: the primary went on handing it connections and the kernel went on giving it its share, for good.
    await until(() => /worker \d answered no ping for \d+ s \(--worker-watchdog\): killing it/.test(relay.stderr()), 15000, `the watchdog\n${relay.stderr().slice(-1500)}`);
    await until(() => {
      const now = workerPids(primary);
      return now.length === 2 && !now.includes(stuck);
    }, 10000, 'the new worker to be forked');
    // The worker that kept answering was left alone.
    assert.ok(workerPids(primary).includes(other));
    assert.equal(relay.stderr().match(/killing it/g)?.length, 1);
    // Stopped while the new worker starts: it ends by the stop signal itself (before: counted as cut, exit 70).
    const exited = exitedWithOutput(relay.child);
    relay.child.kill('SIGTERM');
    assert.equal(await withTimeout(exited, 15000, 'the command to exit'), 0, relay.stderr().slice(-1500));
  });
});
