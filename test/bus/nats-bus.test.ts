// What only the NATS bus does: connect in the background, report its state,
// fail fast while NATS is away, and drop (and count) what is published meanwhile.
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { BusError, respond } from '../../src/bus/bus.ts';
import { NatsBus } from '../../src/bus/nats.ts';
import { ReplayingFeed } from '../../src/pubsub/replaying-feed.ts';
import { handleOps } from '../../src/ops/health.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { CuttableProxy } from '../helpers/pubsub.ts';
import { httpRequest } from '../helpers/http.ts';
import { captureLogger } from '../helpers/relay.ts';
import { until, untilAnswered, withTimeout } from '../helpers/wait.ts';

const options = { randomizeServers: false, name: 't', reconnectTimeWaitMs: 100, pingIntervalMs: 5000, flushTimeoutMs: 1000 };

describe('NATS bus', () => {
  it('reports its connection, refuses requests at once while NATS is away, and counts what it could not send', async (t) => {
    const server = await startNatsServer(t);
    const bus = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    const changes: boolean[] = [];
    bus.onConnectionChange((c) => changes.push(c));
    await until(() => bus.connected, 5000, 'connected');
    assert.equal(bus.reachesOtherNodes, true);

    await server.kill();
    await until(() => !bus.connected, 5000, 'disconnected');
    await assert.rejects(bus.request('x', Buffer.from('?'), 5000), (e: BusError) => e.code === 'Unavailable');
    await bus.flush(); // does not wait for NATS
    for (let i = 0; i < 100; i++) bus.publish('x', Buffer.alloc(100));
    assert.equal(bus.droppedTotal, 100, 'not handed to a client that would discard it at the reconnect');

    await server.restart();
    await until(() => bus.connected, 10000, 'reconnected');
    assert.deepEqual(changes, [true, false, true]);
  });

  it("says each reason a reconnect failed for once per server, however the reasons alternate, and at most 8 (found by the review of the day's changes: the last reason alone was remembered)", async (t) => {
    const server = await startNatsServer(t);
    const { log, lines } = captureLogger('info');
    const bus = new NatsBus({ ...options, servers: [server.url] }, log);
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    // What the client's wrapped dial tells the bus on each failed attempt (nats-transport.ts, DIAL_FAILED).
    const failed = (reason: string) => (bus as unknown as { reconnectFailed(server: string, err: Error): void }).reconnectFailed('nats://a:4222', new Error(reason));
    for (const reason of ['refused', 'timeout', 'refused', 'timeout', 'refused']) failed(reason);
    const said = () => lines().filter((l) => l.event === 'bus.reconnect_failed').map((l) => l.err);
    assert.deepEqual(said(), ['refused', 'timeout']);
    for (let i = 0; i < 20; i++) failed(`reason ${i}`);
    assert.equal(said().length, 8);
  });

  it('drops (and counts) what is published in the last part of its drain at shutdown, instead of throwing', async (t) => {
    const server = await startNatsServer(t);
    const bus = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    // A subscription for the drain to wait on, as an edge has.
    bus.subscribe('held', () => undefined);
    const closed = bus.close();
    let finished = false;
    void closed.then(() => (finished = true));
    // Early in the drain a publish still goes out (the drain is for that); in its last part nats.js takes none. Before:
    // it threw CONNECTION_DRAINING then, out of whatever answered last (a listener's channel closing at shutdown: the
    // edge process died before its drain finished).
    let published = 0;
    while (!finished) {
      bus.publish('late', Buffer.from('answer'));
      published++;
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(published > 1 && bus.droppedTotal > 0, `${published} published, ${bus.droppedTotal} dropped`);
    assert.throws(() => bus.publish('late', Buffer.alloc(bus.maxPayload + 1)), (e: BusError) => e.code === 'TooLarge');
    await closed;
  });

  it('connects again once NATS takes its credentials again, after refusing them on reconnects', async (t) => {
    const users = (password: string) => `authorization {\n  user: edge\n  password: "${password}"\n}\n`;
    const server = await startNatsServer(t, 'n1', undefined, { config: users('the-edges-password') });
    const log = captureLogger('info');
    const bus = new NatsBus({ ...options, servers: [server.url], user: 'edge', pass: 'the-edges-password' }, log.log);
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    // The server's password is rotated before the edge's: it drops the edge, and refuses each reconnect.
    server.reconfigure(users('rotated-on-the-server-first'));
    await until(() => !bus.connected, 5000, 'disconnected');
    const refusals = () => log.lines().filter((l) => /authorization/i.test(String(l.err))).length;
    await until(() => refusals() >= 2, 10000, 'reconnects refused');
    server.reconfigure(users('the-edges-password'));
    // Before: nats.js gave up after two refusals in a row and closed the connection for good.
    await until(() => bus.connected, 10000, 'connected again');
  });

  it('starts without NATS and connects when it appears; close() while waiting returns', async (t) => {
    const server = await startNatsServer(t);
    await server.kill();
    const bus = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    assert.equal(bus.connected, false);
    const got: string[] = [];
    bus.subscribe('early', (m) => got.push(Buffer.from(m.data).toString()));
    await server.restart();
    await until(() => bus.connected, 10000, 'connected once NATS is up');
    await bus.flush();
    bus.publish('early', Buffer.from('made before the first connection'));
    await until(() => got.length === 1, 5000, 'delivery to a subscription made before connecting');

    const orphan = new NatsBus({ ...options, servers: ['nats://127.0.0.1:1'] }, createLogger('silent', 't'));
    await orphan.close();
    assert.equal(orphan.connected, false);
  });

  it('drain() answers a request the server gave the subscription before it heard it go (a queue group member leaving)', async (t) => {
    const server = await startNatsServer(t);
    // What the leaving member sends reaches the server late: its UNSUB too, so a request still goes to it.
    const link = await CuttableProxy.start(server.port, t);
    const leaving = new NatsBus({ ...options, servers: [`nats://127.0.0.1:${link.port}`] }, createLogger('silent', 't'));
    const asking = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => Promise.all([leaving.close(), asking.close()]));
    await until(() => leaving.connected && asking.connected, 5000, 'both connected');
    const subscription = leaving.subscribe('work', (m) => respond(leaving, m, Buffer.from('answered')), { queue: 'members' });
    await leaving.flush();
    link.hold(300);
    subscription.drain();
    // Before (unsubscribe): the member dropped it, and the request waited out its timeout.
    const answer = await asking.request('work', Buffer.from('?'), 5000);
    assert.equal(Buffer.from(answer).toString(), 'answered');
    // And once the server has heard it go, the member gets nothing more.
    link.hold(0);
    await untilAnswered(
      async () => (await asking.request('work', Buffer.from('?'), 1000).catch((e: BusError) => e)) instanceof BusError,
      5000,
      'the member gone from the group',
    );
  });

  it('close() during a first connection attempt returns without the pause before the next attempt', async (t) => {
    // A server that takes the connection and never says a word: the attempt runs to connectTimeoutMs.
    const silent = createServer((socket) => socket.on('error', () => socket.destroy()));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise((resolve) => silent.close(resolve)));
    const port = (silent.address() as AddressInfo).port;
    const bus = new NatsBus({ ...options, servers: [`nats://127.0.0.1:${port}`], connectTimeoutMs: 1500, reconnectTimeWaitMs: 30000 }, createLogger('silent', 't'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    // Before: the failed attempt began its 30 s pause after close() had asked it to stop, and close() waited for it.
    await withTimeout(bus.close(), 10000, 'close() during a connection attempt');
    assert.ok(Date.now() - started < 5000, `closed after ${Date.now() - started} ms`);
  });

  it('closes for good while NATS is away: the client stops reconnecting', async (t) => {
    const server = await startNatsServer(t);
    const bus = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    const nc = bus.connection!;
    await server.kill();
    await until(() => !bus.connected, 5000, 'disconnected');
    await bus.close();
    assert.equal(nc.isClosed(), true, 'a client left reconnecting keeps the process alive');
  });

  it('ends a connection attempt it gave up on: a frozen server that wakes holds no connection of it', async (t) => {
    // nats.js 2.29 left such an attempt running: it completed when the server woke, unused, and when the server
    // dropped it the client took that for its real connection's loss and kept both, every message coming twice.
    const frozen = await startNatsServer(t, 'frozen');
    const other = await startNatsServer(t, 'other');
    const bus = new NatsBus({ ...options, pingIntervalMs: 500, connectTimeoutMs: 500, servers: [frozen.url, other.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    const clients = async (node: typeof frozen) => {
      const res = await fetch(`http://127.0.0.1:${node.monitorPort}/connz`, { signal: AbortSignal.timeout(2000) });
      return ((await res.json()) as { num_connections: number }).num_connections;
    };
    assert.equal(bus.connection?.info?.server_name, 'frozen', 'connected to the server to be frozen');
    assert.equal(await clients(frozen), 1);
    // Recorded, not polled: after an earlier reconnect nats.js tries the other server first, and the bus is down for
    // milliseconds only (a 10 ms poll missed it 4 times in 50 under load).
    const changes: boolean[] = [];
    bus.onConnectionChange((connected) => changes.push(connected));
    await frozen.freeze();
    // Stale after two unanswered pings; the frozen server first in the list is tried and given up on after 500 ms.
    await until(() => changes.includes(false), 5000, 'the frozen server noticed');
    await until(() => bus.connected, 5000, 'connected to the other server');
    assert.equal(await clients(other), 1);
    frozen.thaw();
    await untilAnswered(async () => (await clients(frozen)) === 0, 5000, 'no connection left on the server that woke');
    assert.equal(await clients(other), 1);
  });

  it('given up on a server that sent INFO and went silent, holds one connection to the next one', async (t) => {
    // A server that says INFO and never answers the client's PING: the attempt counts as connected when its connect
    // timeout passes, and closing it tells the client its connection was lost. That must not start a second reconnect
    // loop beside the one under way (two connections to the next server, every message read twice): nats.js 2.29
    // joins it to the loop under way, which this checks stays so.
    const silent = createServer((socket) => {
      socket.on('error', () => undefined);
      socket.write(`INFO ${JSON.stringify({ server_id: 'silent', version: '2.9.10', max_payload: 1048576, proto: 1, headers: true })}\r\n`);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.after(() => silent.close());
    const first = await startNatsServer(t, 'first');
    const other = await startNatsServer(t, 'other');
    const bus = new NatsBus(
      { ...options, connectTimeoutMs: 500, servers: [first.url, `nats://127.0.0.1:${(silent.address() as AddressInfo).port}`, other.url] },
      createLogger('silent', 't'),
    );
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 10000, 'connected');
    // Its server gone, the client tries the silent one (given up on after 500 ms), then the next.
    await first.kill();
    await until(() => !bus.connected, 5000, 'disconnected');
    await until(() => bus.connected, 10000, 'connected again');
    const clients = async () => {
      const res = await fetch(`http://127.0.0.1:${other.monitorPort}/connz`, { signal: AbortSignal.timeout(2000) });
      return ((await res.json()) as { num_connections: number }).num_connections;
    };
    // A second loop would connect within a connect timeout or two.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(await clients(), 1);
  });

  it('closes within a bound while its server is frozen (SIGSTOP): the drain is not waited for good', async (t) => {
    const server = await startNatsServer(t);
    const bus = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
    cleanupFor(t).after(() => bus.close());
    await until(() => bus.connected, 5000, 'connected');
    const nc = bus.connection!;
    // What a JetStream publisher has then: a subscription for answers, a request out unanswered.
    nc.subscribe('answers.>');
    await server.freeze();
    nc.publish('asked', new Uint8Array(8), { reply: 'answers.1' });
    const started = Date.now();
    // Before, the drain waited for the frozen server's answer for good: an edge told to stop never exited.
    await withTimeout(bus.close(), 20000, 'close() with a frozen server');
    t.diagnostic(`closed in ${Date.now() - started} ms`);
    assert.equal(nc.isClosed(), true);
  });

  describe('a frozen server while megabytes wait unsent to it', () => {
    const MiB = 1024 * 1024;
    const message = Buffer.alloc(256 * 1024, 7);

    it('is judged stale within its ping bound, however much waits: the socket goes at once, and the bus moves on', async (t) => {
      // nats.js 2.29 waited, before destroying a stale connection's socket, for a last write that a full buffer never
      // let out: with 4 MiB or more queued the bus stayed connected to the frozen server for as long as it was frozen.
      const frozen = await startNatsServer(t, 'frozen');
      const other = await startNatsServer(t, 'other');
      // Room for 64 MiB unsent (a replay's republish), so that the bound on them does not stop the queueing here.
      const bus = new NatsBus(
        { ...options, pingIntervalMs: 1000, connectTimeoutMs: 500, republishBytes: 64 * MiB, servers: [frozen.url, other.url] },
        createLogger('silent', 't'),
      );
      cleanupFor(t).after(() => bus.close());
      await until(() => bus.connected, 5000, 'connected');
      assert.equal(bus.connection?.info?.server_name, 'frozen', 'connected to the server to be frozen');
      const heard: number[] = [];
      bus.subscribe('after', (m) => heard.push(m.data.length));
      const changes: boolean[] = [];
      bus.onConnectionChange((connected) => changes.push(connected));
      await frozen.freeze();
      const started = Date.now();
      for (let i = 0; i < 96; i++) bus.publish('before', message);
      assert.ok(bus.unsentBytes >= 8 * MiB, `${bus.unsentBytes} bytes wait in this process, past what the kernel holds`);
      assert.equal(bus.droppedTotal, 0);
      // Two pings unanswered: stale after two to three intervals.
      await until(() => changes.includes(false), 4500, 'the frozen server noticed');
      t.diagnostic(`judged stale ${Date.now() - started} ms after 24 MiB were queued`);
      await until(() => bus.connected, 5000, 'connected to the other server');
      assert.equal(bus.connection?.info?.server_name, 'other');
      bus.publish('after', Buffer.from('hello'));
      await until(() => heard.length === 1, 5000, 'a message through the other server');
    });

    it('drops what is published past a few max_payloads unsent, and says it is not ready, until the server takes them', async (t) => {
      // Before: every publish was taken while nats.js had not judged the connection stale yet (two missed pings, 10 s
      // and more here): 1.3 GB in 20 s of 512 KiB messages waited in the edge's memory, and it stayed ready.
      const server = await startNatsServer(t);
      const { log, lines } = captureLogger('info');
      const bus = new NatsBus({ ...options, servers: [server.url] }, log);
      cleanupFor(t).after(() => bus.close());
      await until(() => bus.connected, 5000, 'connected');
      const heard: number[] = [];
      bus.subscribe('after', (m) => heard.push(m.data.length));
      await bus.flush();
      const changes: boolean[] = [];
      bus.onConnectionChange((connected) => changes.push(connected));
      const limit = bus.unsentLimit;
      assert.equal(limit, 4 * bus.maxPayload);
      await server.freeze();
      let peak = 0;
      let published = 0;
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 20; i++) {
          bus.publish('before', message);
          published++;
          peak = Math.max(peak, bus.unsentBytes);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      t.diagnostic(`${published} published (${(published * message.length) / MiB} MiB), ${bus.droppedTotal} dropped, at most ${(peak / MiB).toFixed(1)} MiB unsent`);
      assert.ok(peak <= limit + message.length + 1024, `at most ${peak} bytes unsent, bound ${limit}`);
      assert.ok(bus.droppedTotal >= published - (limit + 16 * MiB) / message.length, `${bus.droppedTotal} of ${published} dropped`);
      assert.equal(bus.connected, true, 'not judged stale yet: pings every 5 s');
      assert.equal(bus.backlogged, true);
      await assert.rejects(bus.request('x', Buffer.from('?'), 5000), (e: BusError) => e.code === 'Unavailable');
      const ready = await readyAnswer(t, bus);
      assert.deepEqual([ready.status, ready.reasons], [503, ['the nats bus takes nothing this edge sends']]);
      assert.deepEqual(lines().filter((l) => l.event === 'bus.backlogged').map((l) => l.limit), [limit]);

      server.thaw();
      await until(() => !bus.backlogged, 5000, 'the backlog taken by the server that woke');
      assert.equal((await readyAnswer(t, bus)).status, 200);
      const cleared = lines().filter((l) => l.event === 'bus.backlog_cleared');
      assert.deepEqual(cleared.map((l) => l.messages), [bus.droppedTotal]);
      bus.publish('after', Buffer.from('hello'));
      await until(() => heard.length === 1, 5000, 'a message once the server reads again');
      assert.deepEqual(changes, [], 'the connection itself was never lost');
    });

    it('sends again the pub/sub events it dropped once the server takes what it is sent, with nothing else sent after (before: lost for good)', async (t) => {
      const server = await startNatsServer(t);
      const sender = new NatsBus({ ...options, servers: [server.url], republishBytes: 16 * MiB }, createLogger('silent', 't'));
      const receiver = new NatsBus({ ...options, servers: [server.url] }, createLogger('silent', 't'));
      cleanupFor(t).after(() => Promise.all([sender.close(), receiver.close()]));
      await until(() => sender.connected && receiver.connected, 5000, 'connected');
      const feed = new ReplayingFeed(sender, { nodeId: 'a', subject: 'replay', windowMs: 60_000, maxBytes: 64 * MiB, requestTimeoutMs: 1000, gatherStallMs: 100 }, createLogger('silent', 't'));
      const heard = new Set<number>();
      receiver.subscribe('ev', (m) => heard.add(Buffer.from(m.data.buffer, m.data.byteOffset, 4).readUInt32BE(0)));
      await receiver.flush();
      // Paused a second (a server stalled, shorter than two pings): 40 MiB published meanwhile, past the 20 MiB bound.
      await server.freeze();
      for (let i = 1; i <= 40; i++) {
        const event = Buffer.alloc(MiB - 256, 1);
        event.writeUInt32BE(i, 0);
        feed.publish('ev', feed.nextMid(), event);
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.ok(sender.droppedTotal > 0, 'nothing dropped: the bound was not reached');
      server.thaw();
      await until(() => heard.size === 40, 20000, 'every event at the other end').catch((err: Error) => {
        throw new Error(`${err.message}; missing ${Array.from({ length: 40 }, (_, i) => i + 1).filter((n) => !heard.has(n)).join(',')}`);
      });
      assert.equal(sender.connected, true);
    });
  });
});

/** /$relay/ready's answer for `bus` alone. */
async function readyAnswer(t: { after(fn: () => unknown): void }, bus: NatsBus): Promise<{ status: number; reasons: string[] }> {
  const server = createHttpServer((req, res) => {
    handleOps('ready', req, res, { shuttingDown: () => false, bus: () => bus });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(() => new Promise((resolve) => server.close(resolve)));
  const res = await httpRequest(`http://127.0.0.1:${(server.address() as AddressInfo).port}/ready`);
  return { status: res.status, reasons: (JSON.parse(String(res.body)) as { reasons: string[] }).reasons };
}
