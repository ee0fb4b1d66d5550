// edge-relay bridge as users run it: two bridge processes (-R on the
// listening side, -L on the dialing side) around a real relay, moving bytes
// and an ordinary TCP protocol (HTTP) through a hybrid connection.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, get as httpGet, Agent } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { dialThrough, howItEnds, localPort, startBridge } from '../helpers/bridge-process.ts';
import { runCli } from '../helpers/cli-process.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startServeProcess, startTestRelay, testConfig, tokenFor } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';


describe('edge-relay bridge', () => {
  it('moves 100 MB through a hybrid connection byte-exact, both ways', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'tunnel', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    await startBridge(t, relay.url, ['-R', `tunnel:127.0.0.1:${echo.port}`], [/^listening on tunnel -> /]);
    // An IPv6 bind is printed in brackets, as -L takes it (before: `forwarding ::1:PORT`).
    const dialer = await startBridge(t, relay.url, ['-L', '0:tunnel', '-L', '[::1]:0:tunnel'], [/^forwarding 127\.0\.0\.1:\d+ -> tunnel$/, /^forwarding \[::1\]:\d+ -> tunnel$/]);

    const total = 100 * 1024 * 1024;
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let receivedBytes = 0;
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    const done = new Promise<void>((resolve, reject) => {
      socket.on('data', (d: Buffer) => {
        received.update(d);
        receivedBytes += d.length;
        if (receivedBytes >= total) resolve();
      });
      socket.on('error', reject);
      socket.on('close', () => reject(new Error(`closed after ${receivedBytes} bytes`)));
    });
    const chunk = 256 * 1024;
    let written = 0;
    const writeMore = () => {
      while (written < total) {
        const piece = randomBytes(chunk);
        sent.update(piece);
        written += piece.length;
        if (!socket.write(piece)) return void socket.once('drain', writeMore);
      }
    };
    socket.once('connect', writeMore);
    await withTimeout(done, 90000, '100 MB echoed through the bridge');
    assert.equal(receivedBytes, total);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  it('carries HTTP: many concurrent requests, each on its own relayed connection', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: true }] });
    const server = createHttpServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`you asked for ${req.url}`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanupFor(t).after(() => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    });
    const port = (server.address() as { port: number }).port;
    await startBridge(t, relay.url, ['-R', `web:127.0.0.1:${port}`], [/^listening on web/]);
    const dialer = await startBridge(t, relay.url, ['-L', '127.0.0.1:0:web'], [/^forwarding /]);
    const agent = new Agent({ keepAlive: false });
    cleanupFor(t).after(() => agent.destroy());
    const fetchOne = (i: number) =>
      new Promise<string>((resolve, reject) => {
        httpGet({ host: '127.0.0.1', port: localPort(dialer), path: `/item/${i}`, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(`${res.statusCode} ${body}`));
        }).on('error', reject);
      });
    const answers = await withTimeout(Promise.all(Array.from({ length: 40 }, (_, i) => fetchOne(i))), 30000, '40 requests');
    answers.forEach((a, i) => assert.equal(a, `200 you asked for /item/${i}`));
  });

  it('takes its key from --key-file or EDGE_RELAY_KEY, off the command line (which ps shows every user)', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'keyed', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bridge-key-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, 'key');
    writeFileSync(keyFile, `${ROOT_KEY}\n`);
    const base = ['bridge', '--relay', relay.url, '--key-name', ROOT_KEY_NAME];
    const listener = runCli(t, [...base, '--key-file', keyFile, '-R', `keyed:127.0.0.1:${echo.port}`]);
    await until(() => listener.lines.some((l) => l.startsWith('listening on keyed')), 10000, `-R up with --key-file: ${listener.stderr()}`);
    const dialer = runCli(t, [...base, '-L', '0:keyed'], { EDGE_RELAY_KEY: ROOT_KEY });
    await until(() => dialer.lines.some((l) => l.startsWith('forwarding ')), 10000, '-L up with EDGE_RELAY_KEY');
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    socket.write('keyed');
    assert.equal(await withTimeout(new Promise<string>((r) => socket.once('data', (d) => r(String(d)))), 10000, 'the echo'), 'keyed');
    const missing = runCli(t, [...base, '--key-file', join(dir, 'none'), '-L', '0:keyed']);
    assert.equal(await withTimeout(missing.exited, 20000, 'bridge to refuse'), 2);
    assert.match(missing.stderr(), /--key-file \S+none: ENOENT/);
    const both = runCli(t, [...base, '--key', ROOT_KEY, '--key-file', keyFile, '-L', '0:keyed']);
    assert.equal(await withTimeout(both.exited, 20000, 'bridge to refuse'), 2);
  });

  it('closes the local connection when the target cannot be reached, and says why', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'nowhere', requiresClientAuthorization: true }] });
    // A port nothing listens on: bind one, note it, close it.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const deadPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const listener = await startBridge(t, relay.url, ['-R', `nowhere:127.0.0.1:${deadPort}`], [/^listening on nowhere/]);
    const dialer = await startBridge(t, relay.url, ['-L', '0:nowhere'], [/^forwarding /]);
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    // Reset, as a direct connection to that port would be refused (before: a clean, empty end, read as a complete answer).
    assert.equal(await howItEnds(socket), 'reset');
    await until(() => /bridge\.target_unreachable/.test(listener.stderr()), 5000, 'listener logs the unreachable target');
    await until(() => /"status":502/.test(dialer.stderr()), 5000, 'dialer logs the 502');
  });

  it('tells -L the 502 of a -R target that never answers, with the same --connect-timeout on both sides', async (t) => {
    // A port whose accept queue is full: a connect to it is neither accepted nor refused (its SYNs are dropped).
    const holder = spawn(process.execPath, ['-e', `const s = require('net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => { process.stdout.write(s.address().port + '\\n'); setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0), 100); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanupFor(t).after(() => holder.kill('SIGKILL'));
    const port = Number(await withTimeout(new Promise<string>((r) => holder.stdout!.once('data', (d) => r(String(d).trim()))), 10000, 'the holder'));
    await new Promise((r) => setTimeout(r, 300));
    const filling: Socket[] = [];
    cleanupFor(t).after(() => filling.forEach((c) => c.destroy()));
    for (let i = 0; i < 8; i++) {
      const c = connect(port, '127.0.0.1');
      c.on('error', () => {});
      filling.push(c);
      const connected = await new Promise((r) => {
        const timer = setTimeout(() => r(false), 500);
        c.once('connect', () => {
          clearTimeout(timer);
          r(true);
        });
      });
      if (!connected) break;
      assert.ok(i < 7, 'the accept queue never filled');
    }
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'stuck', requiresClientAuthorization: true }] });
    const listener = await startBridge(t, relay.url, ['--connect-timeout', '2', '-R', `stuck:127.0.0.1:${port}`], [/^listening on stuck/]);
    const dialer = await startBridge(t, relay.url, ['--connect-timeout', '2', '-L', '0:stuck'], [/^forwarding /]);
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    assert.equal(await howItEnds(socket), 'reset');
    await until(() => /bridge\.target_unreachable.*no answer in 2 s/.test(listener.stderr()), 10000, 'the listener gives up on the target');
    // Before: -L's own wait was as long, began earlier, and ended first ("Opening handshake has timed out").
    await until(() => /"status":502/.test(dialer.stderr()), 10000, 'the dialer logs the 502');
    assert.doesNotMatch(dialer.stderr(), /handshake has timed out/);
  });

  it('re-opens a lost control channel with backoff and logs why', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-relay-bridge-'));
    cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(testConfig({ hybridConnections: [{ name: 'again', requiresClientAuthorization: true }] })));
    const relay = await startServeProcess(t, ['--config', file, '--port', '0']);
    const echo = await startTcpEcho(t);
    const listener = await startBridge(t, relay.url, ['-R', `again:127.0.0.1:${echo.port}`], [/^listening on again/]);
    await relay.stop();
    await until(() => /bridge\.control_lost/.test(listener.stderr()), 10000, 'control_lost logged');
    assert.match(listener.stderr(), /"retryInMs":\d+/);
    // The relay comes back on the same port: the bridge listens again and traffic flows.
    const again = await startServeProcess(t, ['--config', file, '--port', String(relay.port)]);
    // Its backoff doubles up to 30 s with full jitter: after several refused tries the next can be up to 30 s away.
    await until(() => (listener.stderr().match(/bridge\.listening/g) ?? []).length >= 2, 35000, 'bridge listening again');
    const dialer = await startBridge(t, again.url, ['-L', '0:again'], [/^forwarding /]);
    const socket = connect({ host: '127.0.0.1', port: localPort(dialer) });
    cleanupFor(t).after(() => socket.destroy());
    socket.write('ping through the relay');
    const echoed = await withTimeout(new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString()))), 10000, 'echo');
    assert.equal(echoed, 'ping through the relay');
  });
});

/** A TCP server on 127.0.0.1 that takes connections and never answers; closed with the test. */
async function silentServer(t: TestContext): Promise<{ port: number; open: () => number }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    // Reads (and drops) what comes, so it sees the other side close.
    socket.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as { port: number }).port, open: () => sockets.size };
}

/** A TCP proxy to `port` whose connections so far can be frozen (nothing passes, nothing closes), as a NAT that dropped them would. */
async function freezableProxy(t: TestContext, port: number): Promise<{ port: number; freeze: () => void }> {
  const pairs: [Socket, Socket][] = [];
  const all = new Set<Socket>();
  const server = createServer((inbound) => {
    const outbound = connect(port, '127.0.0.1');
    for (const s of [inbound, outbound]) s.on('error', () => {});
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
    pairs.push([inbound, outbound]);
    for (const s of [inbound, outbound]) {
      all.add(s);
      s.on('close', () => all.delete(s));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    for (const s of all) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return {
    port: (server.address() as { port: number }).port,
    freeze: () => {
      for (const [inbound, outbound] of pairs.splice(0)) {
        inbound.unpipe(outbound);
        outbound.unpipe(inbound);
        inbound.pause();
        outbound.pause();
      }
    },
  };
}

/** Writes to `socket` until it ends (with backpressure), as a bulk transfer that never finishes would. */
function streamForever(socket: Socket): void {
  const chunk = randomBytes(64 * 1024);
  const more = () => {
    while (!socket.destroyed && socket.writable) if (!socket.write(chunk)) return void socket.once('drain', more);
  };
  socket.on('error', () => {});
  more();
}

describe('edge-relay bridge: an end (FIN) on one side', () => {
  it("leaves the other direction open: a client's request and FIN get the answer, a server's FIN lets the client still send", async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'half', requiresClientAuthorization: true }] });
    const heard: string[] = [];
    // /answer: reads to the end, then answers what it read (as `nc -N`, `echo x | socat - TCP:...` expect);
    // /first: says hello and ends its side at once, then reads what the client still sends.
    const server = createServer({ allowHalfOpen: true }, (s) => {
      let got = '';
      s.on('error', () => {});
      s.on('data', (d: Buffer) => (got += d));
      s.once('data', (d: Buffer) => {
        if (d.toString().startsWith('first')) s.end('hello');
      });
      s.on('end', () => {
        heard.push(got);
        if (got.startsWith('answer')) s.end(`got: ${got}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanupFor(t).after(() => new Promise<void>((r) => (server.close(() => r()), undefined)));
    await startBridge(t, relay.url, ['-R', `half:127.0.0.1:${(server.address() as { port: number }).port}`], [/^listening on half/]);
    const local = await startBridge(t, relay.url, ['-L', '0:half'], [/^forwarding /]);
    const open = () => {
      const c = connect({ host: '127.0.0.1', port: localPort(local), allowHalfOpen: true });
      cleanupFor(t).after(() => c.destroy());
      let got = '';
      c.on('data', (d: Buffer) => (got += d));
      const ended = withTimeout(new Promise<string>((resolve, reject) => (c.once('end', () => resolve(got)), c.once('error', reject))), 10000, 'the end from the server');
      return { c, ended, got: () => got };
    };
    // Before: the client's FIN closed the whole connection; it read nothing, and the server's answer was lost.
    const one = open();
    one.c.end('answer me');
    assert.equal(await one.ended, 'got: answer me');
    // Before: the server's FIN closed it too; what the client sent after it was lost.
    const two = open();
    two.c.write('first');
    assert.equal(await two.ended, 'hello');
    two.c.end(' and more after your end');
    await until(() => heard.includes('first and more after your end'), 10000, `the server to read what came after its end (${JSON.stringify(heard)})`);
    await withTimeout(new Promise((r) => (two.c.destroyed ? r(undefined) : two.c.once('close', r))), 10000, 'the connection closed once both ends ended');
  });
});

describe('edge-relay bridge stopped mid-stream', () => {
  // SIGHUP: a closed terminal or ssh session (before: left to its default, the process ended with each socket closed
  // by a clean end; found by review).
  for (const [stopped, signal] of [['-L', 'SIGTERM'], ['-R', 'SIGTERM'], ['-L', 'SIGHUP'], ['-R', 'SIGHUP']] as const) {
    it(`resets both far ends when ${stopped} stops (${signal}) while bytes flow both ways: neither takes the cut for a complete transfer`, async (t) => {
      const relay = await startTestRelay(t, { hybridConnections: [{ name: 'stream', requiresClientAuthorization: true }] });
      let serverEnd: Promise<'end' | 'reset'> | undefined;
      const server = createServer((s) => {
        serverEnd = howItEnds(s);
        streamForever(s);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      cleanupFor(t).after(() => new Promise<void>((r) => (server.close(() => r()), undefined)));
      const remote = await startBridge(t, relay.url, ['-R', `stream:127.0.0.1:${(server.address() as { port: number }).port}`], [/^listening on stream/]);
      const local = await startBridge(t, relay.url, ['-L', '0:stream'], [/^forwarding /]);
      const client = connect({ host: '127.0.0.1', port: localPort(local) });
      cleanupFor(t).after(() => client.destroy());
      const clientEnd = howItEnds(client, 15000);
      let read = 0;
      client.on('data', (d: Buffer) => (read += d.length));
      client.once('connect', () => streamForever(client));
      await until(() => read > 4 * 1024 * 1024 && serverEnd !== undefined, 10000, 'bytes flowing both ways');
      const bridge = stopped === '-L' ? local : remote;
      bridge.signal(signal);
      // Before: a clean end (FIN) at the client and the server when -L stopped, at the server when -R stopped.
      assert.deepEqual({ client: await clientEnd, server: await serverEnd! }, { client: 'reset', server: 'reset' });
      assert.equal(await withTimeout(bridge.exited, 10000, 'the bridge to exit'), 0);
    });
  }

  it("exits 0 when a second Ctrl-C comes while it stops (a terminal's and npm's both; before: ended by the signal; found by review)", async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'twice', requiresClientAuthorization: true }] });
    const echo = await startTcpEcho(t);
    await startBridge(t, relay.url, ['-R', `twice:127.0.0.1:${echo.port}`], [/^listening on twice/]);
    const local = await startBridge(t, relay.url, ['-L', '0:twice'], [/^forwarding /]);
    const client = connect({ host: '127.0.0.1', port: localPort(local) });
    cleanupFor(t).after(() => client.destroy());
    client.on('error', () => {});
    client.write('x');
    await withTimeout(new Promise((r) => client.once('data', r)), 10000, 'the echo');
    local.signal('SIGINT');
    await until(() => /bridge\.signal/.test(local.stderr()), 5000, 'the first SIGINT taken');
    local.signal('SIGINT');
    assert.equal(await withTimeout(local.exited, 10000, 'the bridge to exit'), 0);
  });
});

describe('edge-relay bridge and large messages', () => {
  it('-R holds no more than --buffer per connection when a sender (not a bridge) sends one large message (before: ws gathered up to 100 MiB of it; found by review)', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'big', requiresClientAuthorization: true }], limits: { connectRatePerAddress: 100000 } });
    const held: Socket[] = [];
    // A target that never reads.
    const server = createServer((socket) => {
      held.push(socket);
      socket.on('error', () => {});
      socket.pause();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanupFor(t).after(() => new Promise<void>((r) => {
      for (const socket of held) socket.destroy();
      server.close(() => r());
    }));
    const remote = await startBridge(t, relay.url, ['-R', `big:127.0.0.1:${(server.address() as { port: number }).port}`], [/^listening on big/]);
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${remote.pid}/status`, 'utf8'))![1]) * 1024;
    const before = rss();
    const url = `${relay.url.replace(/^http/, 'ws')}/$hc/big?sb-hc-action=connect`;
    const payload = Buffer.alloc(64 * 1024 * 1024, 7);
    const closes: Promise<number>[] = [];
    for (let i = 0; i < 4; i++) {
      const sender = new WebSocket(url, { headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/$hc/big`) }, perMessageDeflate: false });
      cleanupFor(t).after(() => sender.terminate());
      sender.on('error', () => {});
      closes.push(new Promise((r) => sender.once('close', (code) => r(code))));
      await withTimeout(new Promise((r) => sender.once('open', r)), 10000, 'the sender open');
      sender.send(payload, { binary: true });
    }
    // Each leg is closed (1009 at -R, passed on by the relay) rather than its message gathered.
    await withTimeout(Promise.all(closes), 20000, 'the senders closed');
    const grew = rss() - before;
    assert.ok(grew < 64 * 1024 * 1024, `-R grew ${grew >> 20} MiB for 4 connections with --buffer 1 MiB`);
  });
});

describe('edge-relay bridge when the other side misbehaves', () => {
  it('-L outlives a local client that resets before the relay answers, and drops one the relay never answers', async (t) => {
    const relay = await silentServer(t);
    const dialer = runCli(t, ['bridge', '--relay', `http://127.0.0.1:${relay.port}`, '--token', 'SharedAccessSignature sr=x&sig=y&se=9999999999&skn=k', '--connect-timeout', '1', '-L', '0:entity']);
    await until(() => dialer.lines.some((l) => l.startsWith('forwarding ')), 10000, 'the bridge to listen');
    // Resets while the relay has not answered (before: an unhandled 'error' ended the bridge, every forward with it).
    const resetting = connect(localPort(dialer), '127.0.0.1');
    await withTimeout(new Promise((r) => resetting.once('connect', r)), 5000, 'connect');
    await until(() => relay.open() >= 1, 5000, 'the bridge to dial the relay');
    resetting.resetAndDestroy();
    // Writes, closes its side, and is not answered: dropped after --connect-timeout and 5 s (before: held for good).
    const waiting = connect(localPort(dialer), '127.0.0.1');
    cleanupFor(t).after(() => waiting.destroy());
    waiting.on('error', () => {});
    waiting.end('hello?');
    await withTimeout(new Promise((r) => waiting.once('close', r)), 10000, 'the bridge to drop the unanswered connection');
    await until(() => relay.open() === 0, 5000, 'the bridge to close its relay connections');
    const stillThere = await Promise.race([dialer.exited.then((code) => `exited ${code}`), new Promise((r) => setTimeout(() => r('running'), 200))]);
    assert.equal(stillThere, 'running', dialer.stderr());
    assert.match(dialer.stderr(), /bridge\.connect_failed/);
  });

  it('-R re-opens a listener connection whose path went silent, and ignores an accept address it cannot dial', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'quiet', requiresClientAuthorization: true }] });
    const proxy = await freezableProxy(t, relay.port);
    const echo = await startTcpEcho(t);
    const listener = await startBridge(t, `http://127.0.0.1:${proxy.port}`, ['--keepalive', '1', '-R', `quiet:127.0.0.1:${echo.port}`], [/^listening on quiet/]);
    proxy.freeze();
    // Before: no keep-alive of its own; the bridge went on believing it listened while the relay had dropped it.
    await until(() => /bridge\.control_lost.*no answer from the relay/.test(listener.stderr()), 10000, 'the silent path noticed');
    await until(() => (listener.stderr().match(/bridge\.listening/g) ?? []).length >= 2, 15000, 'listening again');
    // An accept notice whose address is no WebSocket URL (a relay gone wrong): logged, the bridge lives on.
    const fake = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    cleanupFor(t).after(() => new Promise<void>((r) => fake.close(() => r())));
    // Before it, JSON that is no accept notice, ignored (before: `null` threw in the message handler and ended the bridge).
    fake.on('connection', (ws) => {
      for (const text of ['null', '"x"', '[1]', '5', '{"accept":null}', '{"accept":{"address":5}}']) ws.send(text);
      ws.send(JSON.stringify({ accept: { address: 'ftp://127.0.0.1/x', id: 'x' } }));
    });
    await withTimeout(new Promise((r) => fake.once('listening', r)), 5000, 'the fake relay');
    const odd = runCli(t, ['bridge', '--relay', `http://127.0.0.1:${(fake.address() as { port: number }).port}`, '--token', 'SharedAccessSignature sr=x&sig=y&se=9999999999&skn=k', '-R', `odd:[::1]:${echo.port}`]);
    await until(() => /bridge\.accept_failed/.test(odd.stderr()), 10000, 'the odd accept logged');
    // An IPv6 target is printed in brackets, as -L's address is (before: `::1:PORT`).
    assert.ok(odd.lines.includes(`listening on odd -> [::1]:${echo.port}`), odd.lines.join('\n'));
    const stillThere = await Promise.race([odd.exited.then((code) => `exited ${code}`), new Promise((r) => setTimeout(() => r('running'), 200))]);
    assert.equal(stillThere, 'running', odd.stderr());
  });
});
