// The bridge's forwarders against a real relay, in process: what a refused
// connection and a long token leave behind (found by review).
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { LocalForwarder } from '../../src/bridge/local-forwarder.ts';
import { RelayAccess } from '../../src/bridge/relay-access.ts';
import { RemoteForwarder, renewDelayMs } from '../../src/bridge/remote-forwarder.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { blockEventLoop } from '../helpers/busy-pause.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startTcpEcho } from '../helpers/tcp-echo.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

describe('bridge forwarders', () => {
  it('-L and -R send their token in the ServiceBusAuthorization header, never in the URL a proxy would log (before: sb-hc-token in the query)', async (t) => {
    // A stand-in for the relay that records each upgrade request and refuses it.
    const upgrades: IncomingMessage[] = [];
    const fake = createServer();
    fake.on('upgrade', (req, socket) => {
      upgrades.push(req);
      socket.on('error', () => {});
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise((r) => fake.close(r)));
    const url = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    const access = new RelayAccess({ url, keyName: ROOT_KEY_NAME, key: ROOT_KEY, tokenTtlSeconds: 60, handshakeTimeoutMs: 5000 });
    const log = createLogger('silent', 'test');
    const remote = new RemoteForwarder({ entity: 'echo', host: '127.0.0.1', port: 9 }, access, log, 1 << 20, { keepAliveMs: 30000, connectTimeoutMs: 1000 });
    remote.start();
    cleanupFor(t).after(() => remote.stop());
    const local = new LocalForwarder({ bindHost: '127.0.0.1', port: 0, entity: 'echo' }, access, log, 1 << 20);
    const port = await local.start();
    cleanupFor(t).after(() => local.stop());
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    cleanupFor(t).after(() => socket.destroy());
    await until(() => ['listen', 'connect'].every((action) => upgrades.some((r) => r.url!.includes(`sb-hc-action=${action}`))), 5000, 'a listen and a connect');
    for (const req of upgrades) {
      assert.doesNotMatch(req.url!, /sb-hc-token|SharedAccessSignature|sig=/i, req.url);
      assert.match(String(req.headers.servicebusauthorization), /^SharedAccessSignature sr=.*&sig=.*&se=\d+&skn=/);
    }
  });

  it('-R keeps its control channel when its own process was paused past two pings while the relay answered all along (before: re-opened it)', async (t) => {
    // A stand-in for the relay, in this process: it takes the listener and, at the second ping, pauses the process
    // (a busy loop: no timer, no read) before it answers. The check after the pause runs before that pong is read.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: false });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    cleanupFor(t).after(() => {
      for (const c of wss.clients) c.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    let channels = 0;
    let pings = 0;
    wss.on('connection', (ws) => {
      channels++;
      ws.on('ping', (data) => {
        if (++pings === 2) blockEventLoop(600);
        ws.pong(data);
      });
    });
    const access = new RelayAccess({ url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, keyName: ROOT_KEY_NAME, key: ROOT_KEY, tokenTtlSeconds: 60, handshakeTimeoutMs: 5000 });
    const remote = new RemoteForwarder({ entity: 'echo', host: '127.0.0.1', port: 9 }, access, createLogger('silent', 'test'), 1 << 20, { keepAliveMs: 100, connectTimeoutMs: 1000 });
    remote.start();
    cleanupFor(t).after(() => remote.stop());
    await withTimeout(remote.ready, 5000, 'the control channel');
    await until(() => pings >= 4 || channels > 1, 5000, 'two pings after the pause');
    assert.equal(channels, 1, 'the control channel was re-opened');
  });

  it('-L lets go of a connection the relay refuses (before: each stayed CONNECTING for good, ~7 KB)', async (t) => {
    const relay = await startTestRelay(t);
    const access = new RelayAccess({ url: relay.url, keyName: ROOT_KEY_NAME, key: ROOT_KEY, tokenTtlSeconds: 60, handshakeTimeoutMs: 5000 });
    const forwarder = new LocalForwarder({ bindHost: '127.0.0.1', port: 0, entity: 'echo' }, access, createLogger('silent', 'test'), 1 << 20);
    const port = await forwarder.start();
    cleanupFor(t).after(() => forwarder.stop());
    // No listener on echo: each relayed connection is refused 404.
    const closed = Array.from({ length: 20 }, () => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      cleanupFor(t).after(() => socket.destroy());
      return new Promise<void>((resolve) => socket.once('close', () => resolve()));
    });
    await Promise.all(closed);
    await until(() => forwarder.handshakes === 0, 3000, 'the refused handshakes to be let go');
  });

  it('-L answers a connection it cannot relay (a relay URL ws refuses) with a reset and keeps its port (before: an uncaught SyntaxError ended the process)', async (t) => {
    const access = new RelayAccess({ url: 'http://relay host:9400', token: 'x', tokenTtlSeconds: 60 });
    const forwarder = new LocalForwarder({ bindHost: '127.0.0.1', port: 0, entity: 'echo' }, access, createLogger('silent', 'test'), 1 << 20);
    const port = await forwarder.start();
    cleanupFor(t).after(() => forwarder.stop());
    for (let i = 0; i < 2; i++) {
      const socket = connect(port, '127.0.0.1');
      cleanupFor(t).after(() => socket.destroy());
      const outcome = new Promise<string>((resolve) => {
        socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        socket.once('end', () => resolve('end'));
      });
      assert.equal(await withTimeout(outcome, 3000, 'the local client to hear'), 'ECONNRESET');
    }
  });

  it('-R being retired takes no accept its closing control channel still delivers (before: it dialed the target, a connection the bridge then reset at exit)', async (t) => {
    // A stand-in for the relay: it takes the listener, and sends an accept as the relay would for a sender that came
    // just before the listener's close frame reached it. The real relay then fails that sender 502 ListenerGone.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    cleanupFor(t).after(() => {
      for (const c of wss.clients) c.terminate();
      return new Promise<void>((r) => wss.close(() => r()));
    });
    const channel = new Promise<import('ws').WebSocket>((resolve) => wss.once('connection', resolve));
    const echo = await startTcpEcho(t);
    const relayUrl = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
    const access = new RelayAccess({ url: relayUrl, keyName: ROOT_KEY_NAME, key: ROOT_KEY, tokenTtlSeconds: 60, handshakeTimeoutMs: 5000 });
    const remote = new RemoteForwarder({ entity: 'echo', host: '127.0.0.1', port: echo.port }, access, createLogger('silent', 'test'), 1 << 20, { keepAliveMs: 30000, connectTimeoutMs: 1000 });
    remote.start();
    cleanupFor(t).after(() => remote.stop());
    await withTimeout(remote.ready, 5000, 'the control channel');
    const relaySide = await channel;
    const idle = remote.retire();
    relaySide.send(JSON.stringify({ accept: { address: `${relayUrl.replace('http', 'ws')}/$hc/echo?sb-hc-action=accept&sb-hc-id=late`, id: 'late' } }));
    await withTimeout(idle, 5000, 'the retired listener to be idle');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(echo.connections(), 0, 'the target was dialed for an accept that came after retire');
    assert.equal(remote.openConnections, 0);
  });

  it('-R renews a minted token at half its life, never sooner than a timer can wait (before: a 50-day --ttl renewed every millisecond)', () => {
    assert.equal(renewDelayMs(3600), 1_800_000);
    assert.equal(renewDelayMs(5_000_000), 2 ** 31 - 1);
  });
});
