// `edge-relay serve --workers N` when workers die or hang: the primary starts
// them again with the command's restart-only config, legs are handed to a new
// worker as soon as it listens, a stuck worker is killed (--worker-watchdog),
// and stopping meanwhile ends cleanly. (Split from workers.test.ts, whose ten
// tests took longer than the suite's 120 s per file on a loaded machine.)
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { edgeOverrides } from '../helpers/cluster.ts';
import { exitedWithOutput } from '../helpers/exit.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { rawUpgrade } from '../helpers/raw-socket.ts';
import { configFile, startServeProcess, testConfig, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';
import { echoListener, echoOnce, killWorkerUntilForkedAgain, workerPids } from '../helpers/workers.ts';

// Two tests at a time: each has a command and a nats-server of its own, and most of a test is waiting for processes.
describe('serve --workers, workers dying and started again', { concurrency: 2 }, () => {
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

  it('leaves no connection open and unanswered when the worker it was going to dies (before: the primary held it for good)', async (t) => {
    const nats = await startNatsServer(t);
    const overrides = edgeOverrides('accepts', [nats.url], { timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 1000 } });
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    // Fresh connections, each asking for the health page, while a worker is killed: each is answered, or closed so
    // that its client tries again; none waits. (A health answer takes milliseconds: 8 s is a hang.)
    const probes: Promise<'answered' | 'closed' | 'hung'>[] = [];
    let going = true;
    const load = (async () => {
      while (going) {
        for (let k = 0; k < 4; k++) probes.push(healthProbe(t, relay.port, 8000));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const [victim] = workerPids(primary);
    process.kill(victim, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    going = false;
    await load;
    const outcomes = await Promise.all(probes);
    const count = (k: string) => outcomes.filter((o) => o === k).length;
    assert.equal(count('hung'), 0, `of ${outcomes.length} connections: ${count('answered')} answered, ${count('closed')} closed, ${count('hung')} open and unanswered after 8 s`);
    assert.ok(count('answered') > 0);
    await until(() => /worker \d is back/.test(relay.stderr()), 15000, 'the worker started again');
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
    const overrides = edgeOverrides('rejoin', [nats.url], { bus: { requestTimeoutMs: 20000 }, timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500, acceptMs: 3000 } });
    const relay = await startServeProcess(t, ['--config', configFile(t, overrides), '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    await nats.kill();
    await killWorkerUntilForkedAgain(primary);
    const listening = () => relay.stderr().match(/"event":"relay\.listening"/g)?.length ?? 0;
    await until(() => listening() === 3, 15000, 'the new worker to listen');
    const windowEnds = Date.now() + 12000;
    // Listeners and senders land on either worker: a sender on a worker with no listener is refused (503: no NATS to route
    // it), and the accept legs of the others land on either too. Which worker takes a connection is the kernel's
    // choice, and a burst often goes to one (libuv accepts until none waits): rounds, each with one more listener,
    // until a sender on a listener's worker is through (before, one burst of 16 with one listener: none through in
    // a clean clone's run).
    const attempts: string[] = [];
    for (let round = 0; !attempts.includes('echoed') && Date.now() < windowEnds; round++) {
      await echoListener(t, relay.url);
      attempts.push(
        ...(await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            withTimeout(echoOnce(relay.url, `round ${round}: ${i}`), 4000, 'one echo').then(
              () => 'echoed',
              (err: Error) => `round ${round}: ${err.message}`,
            ),
          ),
        )),
      );
    }
    const said = () => relay.stderr().split('\n').filter((l) => /rendezvous|is back|listening/.test(l)).slice(-20).join('\n');
    assert.doesNotMatch(relay.stderr(), /worker \d is back/, `the window was over before the senders were done\n${said()}`);
    assert.ok(attempts.includes('echoed'), `${attempts.join('\n')}\n${said()}`);
    assert.doesNotMatch(relay.stderr(), /"event":"rendezvous\.unknown"/, said());
  });

  it('a SIGHUP to the primary reaches a worker started again that listens while it waits for NATS: it reloads once ready (before: only ready workers were sent it, and that one never reloaded)', async (t) => {
    const nats = await startNatsServer(t);
    // NATS away when the worker is started again: it listens at once, and says it is ready only after bus.requestTimeoutMs.
    const overrides = edgeOverrides('hup', [nats.url], { bus: { requestTimeoutMs: 6000 }, timeouts: { keepAliveIntervalMs: 500, idleMs: 10000, shutdownMs: 500 } });
    const file = configFile(t, overrides);
    const relay = await startServeProcess(t, ['--config', file, '--port', '0', '--workers', '2']);
    const primary = relay.child.pid!;
    await nats.kill();
    await killWorkerUntilForkedAgain(primary);
    const listening = () => relay.stderr().match(/"event":"relay\.listening"/g)?.length ?? 0;
    await until(() => listening() === 3, 15000, 'the new worker to listen');
    writeFileSync(file, JSON.stringify(testConfig({ ...overrides, limits: { pendingPerEntity: 77 } })));
    process.kill(primary, 'SIGHUP');
    const reloaded = (node: string) => new RegExp(`"node":"${node}"[^\n]*"event":"config\\.reloaded"`).test(relay.stderr());
    await until(() => reloaded('hup-w1') || reloaded('hup-w2'), 10000, 'the worker that was ready to reload');
    assert.doesNotMatch(relay.stderr(), /worker \d is back/, 'the SIGHUP came while the new worker waited for NATS');
    // Before: the new worker was not sent the SIGHUP, and never reloaded.
    await until(() => /"event":"config\.reload_deferred"/.test(relay.stderr()), 5000, 'the new worker to owe the reload');
    await until(() => /worker \d is back/.test(relay.stderr()), 20000, 'the new worker to be ready');
    await until(() => reloaded('hup-w1') && reloaded('hup-w2'), 10000, `both workers to reload\n${relay.stderr().slice(-2000)}`);
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

/** One GET /$relay/health on a fresh connection: 'answered' (200), 'closed' (closed or reset unanswered), or 'hung' after `ms`. */
function healthProbe(t: { after(fn: () => unknown): void }, port: number, ms: number): Promise<'answered' | 'closed' | 'hung'> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    t.after(() => socket.destroy());
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('hung');
    }, ms);
    socket.on('connect', () => socket.write('GET /$relay/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got.startsWith('HTTP/1.1 200') ? 'answered' : 'closed');
    });
  });
}
