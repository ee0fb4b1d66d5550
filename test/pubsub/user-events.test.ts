// A JSON client's `event` messages go to the hub's event handler
// (docs/event-handlers.md): one of a connection at a time (blocking, as on Azure),
// the rest sent in the order read as answers come, every one acknowledged, each
// carrying the state the answer before it set.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { EVENTS_IN_FLIGHT } from '../../src/pubsub/client-protocol.ts';
import { cleanupFor } from '../helpers/cleanup.ts';
import { WAITING_FRAME_OVERHEAD, WAITING_TEXT_WEIGHT } from '../../src/pubsub/pubsub-connection.ts';
import { HUB, HUB_KEY, RELIABLE, RawPubSubClient, accessUrl, recoveryQuery } from '../helpers/pubsub.ts';
import { maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { serviceClient } from '../helpers/web-pubsub-sdk.ts';
import { serveEventHandler, serveHoldingEventHandler } from '../helpers/event-handler-app.ts';
import { answerAfter, startHycoEventHandler } from '../helpers/hyco.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const KEY = 'user-events-key-0123456789abcdef';

describe("a client's user events", () => {
  it(`reach the handler one at a time per connection, in order, each acknowledged and carrying the state the one before set`, async (t) => {
    let now = 0;
    let most = 0;
    const seen: string[] = [];
    const states: string[] = [];
    // A handler that takes 20 ms per event and counts them in the connection's state (setState).
    const server = createServer((req, res) => {
      if (req.method === 'OPTIONS') {
        res.writeHead(200, { 'webhook-allowed-origin': '*' });
        return res.end();
      }
      now++;
      most = Math.max(most, now);
      seen.push(String(req.headers['ce-eventname']));
      const state = String(req.headers['ce-connectionstate'] ?? '');
      states.push(state);
      req.resume();
      req.on('end', () =>
        setTimeout(() => {
          now--;
          res.writeHead(204, { 'ce-connectionState': String(Number(state || '0') + 1) }).end();
        }, 20),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise((r) => server.close(r)));
    const { port } = server.address() as { port: number };
    const relay = await startTestRelay(t, {
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: `http://127.0.0.1:${port}/events/{event}`, userEventPattern: '*', systemEvents: [] }] }] },
    });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    // 80 events in one go (most of them in one read of the relay's).
    for (let i = 1; i <= 80; i++) client.send({ type: 'event', event: `e${i}`, dataType: 'text', data: 'x', ackId: i });
    await until(() => client.messages.filter((m) => m.type === 'ack').length === 80, 15000, 'every ack');
    assert.ok(client.messages.filter((m) => m.type === 'ack').every((a) => a.success), JSON.stringify(client.messages.filter((m) => m.type === 'ack' && !m.success)));
    // Before: all 80 at the handler at once, then 16.
    assert.equal(EVENTS_IN_FLIGHT, 1);
    assert.equal(most, 1, `${most} at once`);
    assert.deepEqual(seen, Array.from({ length: 80 }, (_, i) => `e${i + 1}`));
    // The state the answer to each set reached the next (with 16 at once, most carried none).
    assert.deepEqual(states, Array.from({ length: 80 }, (_, i) => (i === 0 ? '' : String(i))));
  });

  it('a simple client is not dropped as idle while the relay holds it (its frames waiting for the handler)', async (t) => {
    const seen: string[] = [];
    // A handler that takes 600 ms per message: four messages hold the client for 2.4 s, past idleMs.
    const server = createServer((req, res) => {
      if (req.method === 'OPTIONS') {
        res.writeHead(200, { 'webhook-allowed-origin': '*' });
        return res.end();
      }
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        seen.push(Buffer.concat(chunks).toString());
        setTimeout(() => res.writeHead(204).end(), 600);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise((r) => {
      server.close(r);
      // The relay's keep-alive connections to it would hold close() for the server's keep-alive timeout.
      server.closeAllConnections();
    }));
    const { port } = server.address() as { port: number };
    const relay = await startTestRelay(t, {
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: `http://127.0.0.1:${port}/events/{event}`, userEventPattern: '*', systemEvents: [] }] }] },
      timeouts: { keepAliveIntervalMs: 200, idleMs: 1000 },
    });
    // No subprotocol: a simple client, whose every frame is a message event, one at a time.
    const ws = new WebSocket(accessUrl(relay.url, { hub: 'chat', key: KEY }));
    t.after(() => ws.terminate());
    await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 5000, 'the client to open');
    let closed = '';
    ws.on('close', (code) => (closed = `closed ${code}`));
    for (let i = 1; i <= 4; i++) ws.send(`m${i}`);
    // Before: the relay stopped reading it (pongs included) and dropped it as idle after 1 s, with two messages unsent.
    await until(() => seen.length === 4 || closed !== '', 10000, 'the four messages at the handler');
    assert.deepEqual(seen, ['m1', 'm2', 'm3', 'm4'], closed);
    assert.equal(ws.readyState, WebSocket.OPEN);
  });

  it('a client that reads none of its answers, with events waiting behind them, is dropped past idleMs like any silent client (before: held, never judged; found by review)', async (t) => {
    const big = 'y'.repeat(256 * 1024);
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(big));
    });
    const relay = await startTestRelay(t, {
      timeouts: { keepAliveIntervalMs: 200, idleMs: 1000 },
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
    });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    const { connectionId } = await client.waitFor((m) => m.event === 'connected');
    // It stops reading, and sends 300 invocations, each answered with 256 KiB: the answers fill its queue, the
    // invocations behind them wait (held: not read), and none may start until it reads.
    ((client.ws as unknown as { _socket: Socket })._socket).pause();
    const data = 'x'.repeat(3000);
    for (let i = 0; i < 300; i++) client.send({ type: 'invoke', invocationId: `i${i}`, target: 'event', event: 'e', dataType: 'text', data });
    const hub = relay.pubsub.hubs.get('chat')!;
    await until(() => hub.local.connections.get(connectionId)?.socket?.isHeld === true, 10000, 'the client to be held');
    await until(() => !hub.local.connections.has(connectionId), 8000, 'the silent client to be dropped past idleMs');
  });

  it('an event under way at a slow handler is cut when its client leaves (before: kept open for the handler\'s whole timeoutMs, one per client that sent one and left; found by review)', async (t) => {
    const open = new Set<import('node:http').ServerResponse>();
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      // A slow handler: it answers nothing.
      open.add(res);
      res.on('close', () => open.delete(res));
    });
    const relay = await startTestRelay(t, {
      limits: { connectBurstPerAddress: 10000, connectRatePerAddress: 0 },
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [], timeoutMs: 60000 }] }] },
    });
    for (let i = 0; i < 20; i++) {
      const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
      client.send({ type: 'event', event: 'e', dataType: 'text', data: 'x'.repeat(1000) });
      await until(() => open.size > 0, 5000, 'the event at the handler');
      client.ws.terminate();
      await client.closed;
      await until(() => open.size === 0, 5000, `the call of client ${i}, gone, to be cut (${open.size} open)`);
    }
    // A reliable client that only lost its socket keeps its event: its answer goes to the session.
    const reliable = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), RELIABLE, t);
    reliable.send({ type: 'event', event: 'e', dataType: 'text', data: 'kept' });
    await until(() => open.size === 1, 5000, 'the reliable client\'s event at the handler');
    reliable.ws.terminate();
    await reliable.closed;
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(open.size, 1, 'the event of a session kept for its client was cut');
  });

  it("an event under way at a slow hc:// handler is cut when its client leaves, and holds no place of limits.pendingPerEntity (before: its relayed request stayed for the handler's timeoutMs, so clients that sent one and left filled the entity and every other event failed)", async (t) => {
    const relay = await startTestRelay(t, {
      limits: { connectBurstPerAddress: 10000, connectRatePerAddress: 0, pendingPerEntity: 2 },
      hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }],
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: 'hc://handlers/{event}', userEventPattern: '*', systemEvents: [], timeoutMs: 60000 }] }] },
    });
    let held = 0;
    await startHycoEventHandler(t, relay.url, 'handlers', (req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        // A slow handler: it answers nothing to `slow`.
        if (body === 'slow') held++;
        else {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(`re ${body}`);
        }
      });
    });
    for (let i = 0; i < 3; i++) {
      const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
      client.send({ type: 'event', event: 'e', dataType: 'text', data: 'slow' });
      await until(() => held === i + 1, 5000, `the event of client ${i} at the handler`);
      client.ws.terminate();
      await client.closed;
    }
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    const ack = await client.request({ type: 'event', event: 'e', dataType: 'text', data: 'fast' });
    assert.equal(ack.success, true, JSON.stringify(ack));
    await client.waitFor((m) => m.type === 'message' && m.data === 're fast', 5000, 'the reply');
  });

  it("an hc:// handler has its own timeoutMs to answer, not timeouts.httpResponseMs, a sender's bound", async (t) => {
    const relay = await startTestRelay(t, {
      timeouts: { httpResponseMs: 300 },
      hybridConnections: [{ name: 'handlers', requiresClientAuthorization: true }],
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: 'hc://handlers/{event}', userEventPattern: '*', systemEvents: [], timeoutMs: 20000 }] }] },
    });
    // Slower than httpResponseMs, well within timeoutMs.
    await startHycoEventHandler(t, relay.url, 'handlers', answerAfter(1500));
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    const ack = await client.request({ type: 'event', event: 'e', dataType: 'text', data: 'x' }, 15000);
    assert.equal(ack.success, true, JSON.stringify(ack));
  });

  it('a simple client whose message the handler does not accept is closed (1011 MessageEventFailed), and its later frames are not sent', async (t) => {
    const seen: string[] = [];
    // Fails the message `bad`, takes the others.
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        seen.push(body);
        res.writeHead(body === 'bad' ? 500 : 204).end(body === 'bad' ? 'nope' : undefined);
      });
    });
    const relay = await startTestRelay(t, {
      pubsub: {
        hubs: [
          { name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] },
          // No handler takes `message` here: frames go nowhere, and the client stays.
          { name: 'quiet', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: 'other', systemEvents: [] }] },
        ],
      },
    });
    const open = async (hub: string) => {
      const ws = new WebSocket(accessUrl(relay.url, { hub, key: KEY }));
      t.after(() => ws.terminate());
      const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
      await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 5000, 'the client to open');
      return { ws, closed };
    };
    const client = await open('chat');
    for (const m of ['good', 'bad', 'after']) client.ws.send(m);
    // Before: still open, told nothing, and `after` sent to the handler too.
    assert.deepEqual(await withTimeout(client.closed, 5000, 'the client to be closed'), { code: 1011, reason: 'MessageEventFailed' });
    assert.deepEqual(seen, ['good', 'bad']);

    const quiet = await open('quiet');
    quiet.ws.send('to nobody');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(quiet.ws.readyState, WebSocket.OPEN);
  });

  it('a simple client whose frames no handler takes is logged once, not for every frame, and stays', async (t) => {
    const capture = captureLogger('info');
    // No event handler at all: every frame is a `message` event nobody takes (NoUpstream).
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: 'quiet', accessKey: KEY }] } }, { log: capture.log });
    const ws = new WebSocket(accessUrl(relay.url, { hub: 'quiet', key: KEY }));
    t.after(() => ws.terminate());
    await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), 5000, 'the client to open');
    for (let i = 0; i < 2000; i++) ws.send('x');
    // A ping answered after the frames: the relay has read them all.
    await withTimeout(new Promise((resolve) => ws.once('pong', resolve).ping()), 5000, 'the pong after the frames');
    await new Promise((r) => setTimeout(r, 100));
    const lines = capture.lines().filter((l) => l.event === 'pubsub.message_event_failed');
    // Before: 2,000 warning lines, one per frame, as fast as one client could send them.
    assert.equal(lines.length, 1, `${lines.length} lines`);
    assert.equal(ws.readyState, WebSocket.OPEN);
  });

  it('disconnected events of a drain are bounded by timeouts.shutdownMs and said lost, not retried past it', async (t) => {
    // A handler that takes connected and disconnected events and never answers a disconnected one.
    let disconnectedAttempts = 0;
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      if (req.headers['ce-eventname'] === 'disconnected') disconnectedAttempts++;
      else res.writeHead(204).end();
    });
    const logs = captureLogger('info');
    const handler = { urlTemplate, userEventPattern: '*', systemEvents: ['connected', 'disconnected'], timeoutMs: 3000, retries: 3, retryDelayMs: 500 };
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 1000 }, pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler] }] } }, { log: logs.log });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    const started = Date.now();
    await withTimeout(relay.close(), 10000, 'the drain');
    assert.ok(Date.now() - started < 3000, `the drain took ${Date.now() - started} ms`);
    const attempts = disconnectedAttempts;
    assert.ok(attempts >= 1, 'the disconnected event was tried');
    assert.ok(logs.lines().some((l) => l.event === 'pubsub.event_handler_failed' && /shut down/.test(String(l.reason))), JSON.stringify(logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed')));
    // Before: retried for 3 x (3 s + 0.5 s) after the relay said it had stopped.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(disconnectedAttempts, attempts, 'no attempt after the drain');
  });

  it('the drain is timed by the monotonic clock: the wall clock stepped an hour ahead meanwhile does not cut it short', async (t) => {
    let answered = 0;
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      if (req.headers['ce-eventname'] !== 'disconnected') return void res.writeHead(204).end();
      setTimeout(() => {
        answered++;
        res.writeHead(204).end();
      }, 500);
    });
    const logs = captureLogger('info');
    const handler = { urlTemplate, userEventPattern: '*', systemEvents: ['connected', 'disconnected'], timeoutMs: 3000, retries: 0 };
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 4000 }, pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler] }] } }, { log: logs.log });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    const closing = relay.close();
    await new Promise((r) => setTimeout(r, 100));
    const wallClock = Date.now.bind(Date);
    t.mock.method(Date, 'now', () => wallClock() + 3_600_000);
    await withTimeout(closing, 10000, 'the drain');
    t.mock.restoreAll();
    // Before: the drain's loop and the event's deadline read the wall clock, ended at once, and said the event lost.
    assert.equal(answered, 1, 'the disconnected event delivered within the drain');
    assert.deepEqual(logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed'), []);
  });

  it('a disconnected event waiting out its retry delay when the drain begins is said lost at once, not slept on past relay.stopped', async (t) => {
    let disconnectedAttempts = 0;
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      if (req.headers['ce-eventname'] === 'disconnected') {
        disconnectedAttempts++;
        res.writeHead(500).end();
      } else res.writeHead(204).end();
    });
    const logs = captureLogger('info');
    const handler = { urlTemplate, userEventPattern: '*', systemEvents: ['connected', 'disconnected'], timeoutMs: 3000, retries: 2, retryDelayMs: 30000 };
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 4000 }, pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler] }] } }, { log: logs.log });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    client.ws.close();
    await until(() => disconnectedAttempts === 1, 5000, 'the disconnected event refused once');
    const failed = () => logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed').map((l) => `${String(l.eventName)}: ${String(l.reason)}`);
    const started = Date.now();
    await withTimeout(relay.close(), 10000, 'the drain');
    // Before: the drain waited its 4 s for an event that could not be retried in time, and nothing said it was lost.
    assert.ok(Date.now() - started < 3000, `the drain took ${Date.now() - started} ms`);
    assert.ok(failed().some((f) => f === 'disconnected: answered 500 (after 1 attempts; not retried: the relay shut down)'), failed().join('; '));
    assert.equal(disconnectedAttempts, 1);
  });

  it('a connected event already at a silent handler when the drain begins ends at its deadline, not at the handler timeout', async (t) => {
    let connectedSeen = false;
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      // connected is never answered; disconnected is.
      if (req.headers['ce-eventname'] === 'connected') connectedSeen = true;
      else res.writeHead(204).end();
    });
    const logs = captureLogger('info');
    const handler = { urlTemplate, userEventPattern: '*', systemEvents: ['connected', 'disconnected'], timeoutMs: 8000, retries: 0 };
    const relay = await startTestRelay(t, { timeouts: { shutdownMs: 1000 }, pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler] }] } }, { log: logs.log });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    await until(() => connectedSeen, 5000, 'the connected event at the handler');
    await withTimeout(relay.close(), 10000, 'the drain');
    // Said (lost) by the end of the drain: before, only when its 8 s timeout ran out, long after relay.stopped.
    const failed = () => logs.lines().filter((l) => l.event === 'pubsub.event_handler_failed').map((l) => `${String(l.eventName)}: ${String(l.reason)}`);
    await until(() => failed().some((f) => f.startsWith('connected')), 1000, `the connected event said lost (${failed().join('; ')})`);
  });

  it('a connect, a user event and an abuse-protection check at silent handlers when the drain begins are ended at its deadline, not left to their timeouts', async (t) => {
    // Each request the relay leaves open at a handler, and when the relay ended it (its socket closed).
    const open = new Map<string, { closedAt?: number }>();
    const track = (what: string, req: import('node:http').IncomingMessage) => {
      const entry: { closedAt?: number } = {};
      open.set(what, entry);
      req.socket.once('close', () => (entry.closedAt = Date.now()));
    };
    // chat's handler: lets user 'a' in, holds user 'b''s connect and every user event.
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      const event = String(req.headers['ce-eventname']);
      if (event === 'connect' && req.headers['ce-userid'] === 'a') return void res.writeHead(204).end();
      track(event === 'connect' ? 'connect' : 'user event', req);
    });
    // slow's handler never answers abuse protection's OPTIONS.
    const silent = createServer((req) => track('abuse protection', req));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanupFor(t).after(() => new Promise<void>((resolve) => (silent.closeAllConnections(), silent.close(() => resolve()))));
    const slowUrl = `http://127.0.0.1:${(silent.address() as { port: number }).port}/{event}`;
    const handler = (url: string) => ({ urlTemplate: url, userEventPattern: '*', systemEvents: ['connect'], timeoutMs: 8000, retries: 0 });
    const relay = await startTestRelay(t, {
      timeouts: { shutdownMs: 1000 },
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [handler(urlTemplate)] }, { name: 'slow', accessKey: KEY, eventHandlers: [handler(slowUrl)] }] },
    });
    const a = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'a' }), undefined, t);
    await a.waitFor((m) => m.event === 'connected');
    a.ws.send(JSON.stringify({ type: 'event', event: 'hold', dataType: 'text', data: 'x', ackId: 1 }));
    for (const url of [accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'b' }), accessUrl(relay.url, { hub: 'slow', key: KEY })]) {
      const ws = new WebSocket(url, ['json.webpubsub.azure.v1']);
      ws.on('error', () => {});
      cleanupFor(t).after(() => ws.terminate());
    }
    await until(() => open.size === 3, 5000, 'a connect, a user event and an OPTIONS held at the handlers');
    const started = Date.now();
    await withTimeout(relay.close(), 10000, 'the drain');
    // Before: each stayed open until its 8 s timeout, and the process with it (after relay.stopped).
    await until(() => [...open.values()].every((e) => e.closedAt !== undefined), 4000, `the held requests ended (${JSON.stringify([...open])})`);
    for (const [what, e] of open) assert.ok(e.closedAt! - started < 3000, `${what} ended ${e.closedAt! - started} ms after the drain began`);
  });

  it("a reliable client reconnecting while its events wait for a hung handler queues no more of them than one connection may", async (t) => {
    // A handler that never answers a user event (its connections are closed at the clean-up).
    const { urlTemplate } = await serveEventHandler(t, (req) => req.resume());
    const relay = await startTestRelay(t, {
      // What may wait is bounded by weight: pubsubMessageBytes, each frame its text and WAITING_FRAME_OVERHEAD.
      limits: { pubsubMessageBytes: 65536 },
      pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [], timeoutMs: 30000 }] }] },
    });
    // Fewer than 300 of these frames weigh that much (the rest of a read under way when the bound is reached comes too).
    assert.ok(65536 / (WAITING_FRAME_OVERHEAD + WAITING_TEXT_WEIGHT * 80) < 300);
    const url = accessUrl(relay.url, { hub: 'chat', key: KEY, userId: 'u' });
    let client = await RawPubSubClient.connect(url, RELIABLE, t);
    const connected = await client.waitFor((m) => m.event === 'connected');
    const recover = recoveryQuery(connected.connectionId, connected.reconnectionToken);
    const waiting = () => ([...relay.pubsub.hub('chat')!.local.connections.values()][0] as unknown as { eventsWaiting?: unknown[] }).eventsWaiting?.length ?? 0;
    let ackId = 0;
    const counts: number[] = [];
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 300; i++) client.send({ type: 'event', event: 'e', dataType: 'text', data: 'x', ackId: ++ackId });
      await new Promise((r) => setTimeout(r, 300));
      counts.push(waiting());
      client.ws.terminate();
      await withTimeout(client.closed, 5000, 'the client closed');
      client = await RawPubSubClient.connect(url + recover, RELIABLE, t);
      await client.waitFor((m) => m.event === 'connected');
    }
    // Before: each reconnect read another chunk of events into the queue (300 more a round here).
    assert.ok(counts[0] > 0, `events waited behind the hung one: ${counts}`);
    assert.ok(counts[0] < 300, `the client was read while too much waited: ${counts}`);
    assert.ok(counts[3] <= counts[0], `the queue grew with each reconnect: ${counts}`);
  });

  it("a reliable client's acks and pings are read while its events wait behind a slow handler: its session does not fill", async (t) => {
    // The handler answers no user event until the test lets it (no clock: the whole exchange happens while they wait).
    let answering = false;
    const held: (() => void)[] = [];
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      const answer = () => res.writeHead(204).end();
      req.on('end', () => (answering ? answer() : held.push(answer)));
    });
    const relay = await startTestRelay(t, {
      limits: { sessionBufferMessages: 20 },
      pubsub: { hubs: [{ name: HUB, accessKey: HUB_KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [], timeoutMs: 15000 }] }] },
    });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'u' }), RELIABLE, t);
    await client.waitFor((m) => m.event === 'connected');
    const waiting = () => ([...relay.pubsub.hub(HUB)!.local.connections.values()][0] as unknown as { eventsWaiting?: unknown[] }).eventsWaiting?.length ?? 0;
    // The second waits behind the first (user events are blocking, one at a time).
    client.send({ type: 'event', event: 'slow', dataType: 'text', data: 'x', ackId: 1 });
    client.send({ type: 'event', event: 'slow', dataType: 'text', data: 'x', ackId: 2 });
    await until(() => waiting() === 1, 5000, 'the second event waiting');
    // Before: the relay stopped reading the client here, until both were answered.
    client.send({ type: 'ping' });
    await client.waitFor((m) => m.type === 'pong', 3000, 'the pong while events wait');
    // Three times the session's buffer, each message acknowledged as it comes (before: the acks went unread, and the
    // session closed 1008 SessionBufferFull at the 20th, for good).
    const service = serviceClient(relay);
    for (let i = 1; i <= 60; i++) {
      await service.sendToUser('u', `m${i}`, { contentType: 'text/plain' });
      const m = await client.waitFor((x) => x.type === 'message' && x.data === `m${i}`, 3000, `m${i}`);
      client.send({ type: 'sequenceAck', sequenceId: m.sequenceId });
    }
    assert.equal(waiting(), 1, 'the second event still waiting: all of it happened while the relay had events queued');
    answering = true;
    for (const answer of held.splice(0)) answer();
    await until(() => client.messages.filter((m) => m.type === 'ack').length === 2, 15000, 'both events acknowledged');
    assert.ok(client.messages.filter((m) => m.type === 'ack').every((m) => m.success));
    assert.equal(client.ws.readyState, WebSocket.OPEN);
  });

  it("a retry of an event still at the handler gets the event's own outcome, not Duplicate at once (the SDK takes Duplicate for success)", async (t) => {
    // Fails the first event of each name after 300 ms, takes the rest.
    const failed = new Set<string>();
    const { urlTemplate } = await serveEventHandler(t, (req, res) => {
      req.resume();
      const event = String(req.headers['ce-eventname']);
      const fail = event.startsWith('fail') && !failed.has(event);
      failed.add(event);
      req.on('end', () => setTimeout(() => res.writeHead(fail ? 500 : 204).end(), 300));
    });
    const relay = await startTestRelay(t, { pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', retries: 0 }] }] } });
    const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
    await client.waitFor((m) => m.event === 'connected');
    const acksOf = (ackId: number) => client.messages.filter((m) => m.type === 'ack' && m.ackId === ackId);
    // Sent twice while the first is at the handler. Before: Duplicate at once for the second, then the first's failure.
    client.ws.send(JSON.stringify({ type: 'event', event: 'fail-once', dataType: 'text', data: 'x', ackId: 7 }));
    client.ws.send(JSON.stringify({ type: 'event', event: 'fail-once', dataType: 'text', data: 'x', ackId: 7 }));
    await until(() => acksOf(7).length === 2, 5000, 'both acks of 7');
    assert.deepEqual(acksOf(7).map((m) => [m.success, m.error?.name]), [[false, 'UpstreamFailed'], [false, 'UpstreamFailed']]);
    // Forgotten once failed: the next retry is processed (and now taken).
    client.ws.send(JSON.stringify({ type: 'event', event: 'fail-once', dataType: 'text', data: 'x', ackId: 7 }));
    await until(() => acksOf(7).length === 3, 5000, 'the third ack of 7');
    assert.equal(acksOf(7)[2].success, true);
    // One that succeeds: the held retry is told it was processed (Duplicate).
    client.ws.send(JSON.stringify({ type: 'event', event: 'fine', dataType: 'text', data: 'x', ackId: 8 }));
    client.ws.send(JSON.stringify({ type: 'event', event: 'fine', dataType: 'text', data: 'x', ackId: 8 }));
    await until(() => acksOf(8).length === 2, 5000, 'both acks of 8');
    assert.deepEqual(acksOf(8).map((m) => [m.success, m.error?.name]), [[true, undefined], [false, 'Duplicate']]);
  });

  describe('invocations (invoke, the SDK\'s invokeEvent)', () => {
    /** A relay whose handler answers `re <body>` at once, or holds a `slow...` body until released (serveHoldingEventHandler). */
    async function relayWithHeldAnswers(t: import('node:test').TestContext) {
      const handler = await serveHoldingEventHandler(t);
      const { bodies, held } = handler;
      const relay = await startTestRelay(t, {
        pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate: handler.urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
      });
      const client = await RawPubSubClient.connect(accessUrl(relay.url, { hub: 'chat', key: KEY }), undefined, t);
      await client.waitFor((m) => m.event === 'connected');
      const invoke = (invocationId: string, data?: string) =>
        client.send({ type: 'invoke', invocationId, target: 'event', event: 'ask', ...(data === undefined ? {} : { dataType: 'text', data }) });
      const answers = (id: string) => client.messages.filter((m) => m.type === 'invokeResponse' && m.invocationId === id);
      return { bodies, held, client, invoke, answers };
    }

    it('are answered by id, in turn with events; one cancelled at the handler is not answered, one cancelled before it is not sent', async (t) => {
      const { bodies, held, client, invoke, answers } = await relayWithHeldAnswers(t);
      invoke('a', 'slow a');
      await until(() => held.has('slow a'), 5000, 'a at the handler');
      invoke('b', 'b');
      client.send({ type: 'event', event: 'ask', dataType: 'text', data: 'e', ackId: 1 });
      invoke('c', 'c');
      // a is at the handler, the rest wait their turn: b is cancelled before it is sent, a while it is there.
      client.send({ type: 'cancelInvocation', invocationId: 'b' });
      client.send({ type: 'cancelInvocation', invocationId: 'a' });
      client.send({ type: 'ping' });
      await client.waitFor((m) => m.type === 'pong');
      held.get('slow a')!();
      const c = await client.waitFor((m) => m.type === 'invokeResponse' && m.invocationId === 'c');
      assert.deepEqual(c, { type: 'invokeResponse', invocationId: 'c', success: true, dataType: 'text', data: 're c' });
      assert.equal((await client.waitFor((m) => m.type === 'ack' && m.ackId === 1)).success, true);
      assert.deepEqual(bodies, ['slow a', 'e', 'c'], 'b never reached the handler');
      assert.deepEqual([answers('a').length, answers('b').length], [0, 0]);
    });

    it('an id repeated while its invocation is not answered is that invocation, answered once; afterwards a new one', async (t) => {
      const { bodies, held, client, invoke, answers } = await relayWithHeldAnswers(t);
      invoke('x', 'slow x');
      await until(() => held.has('slow x'), 5000, 'x at the handler');
      invoke('x', 'slow again');
      // A malformed one under the id: not answered either (its BadRequest would have been taken for x's answer).
      client.send({ type: 'invoke', invocationId: 'x', target: 'group', event: 'ask' });
      held.get('slow x')!();
      await until(() => answers('x').length === 1, 5000, 'the answer');
      invoke('x');
      await until(() => answers('x').length === 2, 5000, 'the second answer');
      client.send({ type: 'ping' });
      await client.waitFor((m) => m.type === 'pong');
      assert.deepEqual(answers('x').map((m) => m.data), ['re slow x', 're ']);
      assert.deepEqual(bodies, ['slow x', ''], 'the repeat was not sent; one without data has an empty body');
    });

    it('wait while the client has limits.outboundBufferBytes of answers queued, and go on as it reads them', async (t) => {
      // Before: every invocation read went to the handler and its answer was queued whatever the client read
      // (200 invocations of 256 KiB answers to a client reading nothing: 46 MiB queued in the relay).
      // Large enough that the kernel's socket buffers (a few MiB on loopback) cannot take them all.
      const answer = 'a'.repeat(256 * 1024);
      let served = 0;
      const { urlTemplate } = await serveEventHandler(t, (req, res) => {
        req.resume();
        req.on('end', () => {
          served++;
          res.writeHead(200, { 'content-type': 'text/plain' }).end(answer);
        });
      });
      const relay = await startTestRelay(t, {
        limits: { outboundBufferBytes: 65536 },
        pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
      });
      const url = new URL(accessUrl(relay.url, { hub: 'chat', key: KEY }));
      // Left paused by rawUpgrade: the client reads nothing until told.
      const client = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
      assert.equal(client.status, 101);
      const count = 100;
      const invocations = Array.from({ length: count }, (_, i) => maskedFrame(0x1, JSON.stringify({ type: 'invoke', invocationId: `i${i}`, target: 'event', event: 'ask' })));
      client.socket.write(Buffer.concat(invocations));
      await until(() => served >= 1, 5000, 'the first invocation at the handler');
      const connection = [...relay.pubsub.hub('chat')!.local.connections.values()][0];
      // The relay holds the rest back: none at the handler, some waiting, the client's answers backlogged.
      await until(() => connection.eventsInFlight === 0 && (connection.eventsWaiting?.length ?? 0) > 0 && connection.answersBacklogged, 10000, 'the rest held back');
      assert.ok(served < count / 2, `${served} answers sent to a client that read nothing`);
      assert.ok(connection.socket!.bufferedBytes < 4 * 65536 + 2 * answer.length, `${connection.socket!.bufferedBytes} bytes queued`);
      // Read: every invocation is answered.
      const needle = '"type":"invokeResponse"';
      let answers = 0;
      let carry = '';
      client.socket.on('data', (chunk: Buffer) => {
        const text = carry + chunk.toString('latin1');
        answers += text.split(needle).length - 1;
        carry = text.slice(-(needle.length - 1));
      });
      client.socket.resume();
      await until(() => answers === count, 20000, 'every answer');
      assert.equal(served, count);
    });

    it('waiting behind answers the client never read, go on once its reliable session is recovered on a new socket (before: nothing started them, and every later event of the session waited for good; found by review)', async (t) => {
      const answer = 'a'.repeat(256 * 1024);
      const { urlTemplate } = await serveEventHandler(t, (req, res) => {
        req.resume();
        req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(req.url?.includes('/small') ? 'ok' : answer));
      });
      const relay = await startTestRelay(t, {
        limits: { outboundBufferBytes: 65536 },
        pubsub: { hubs: [{ name: 'chat', accessKey: KEY, eventHandlers: [{ urlTemplate, userEventPattern: '*', systemEvents: [] }] }] },
      });
      const url = accessUrl(relay.url, { hub: 'chat', key: KEY });
      const client = await RawPubSubClient.connect(url, RELIABLE, t);
      const { connectionId, reconnectionToken } = await client.waitFor((m) => m.event === 'connected');
      // It stops reading and invokes: the answers fill its queue, the invocations behind them wait.
      ((client.ws as unknown as { _socket: Socket })._socket).pause();
      for (let i = 0; i < 40; i++) client.send({ type: 'invoke', invocationId: `i${i}`, target: 'event', event: 'ask' });
      const connection = relay.pubsub.hub('chat')!.local.connections.get(connectionId)!;
      await until(() => connection.eventsInFlight === 0 && (connection.eventsWaiting?.length ?? 0) > 0 && connection.answersBacklogged, 10000, 'the rest held back');
      // Its network drops; it recovers its session on a new socket, which reads everything.
      client.ws.terminate();
      await until(() => connection.socket === undefined, 5000, 'the old socket gone');
      const again = await RawPubSubClient.connect(`${url}${recoveryQuery(connectionId, reconnectionToken)}`, RELIABLE, t);
      await again.waitFor((m) => m.event === 'connected');
      const ack = await again.request({ type: 'event', event: 'small', dataType: 'text', data: 'x' }, 10000);
      assert.equal(ack.success, true);
    });

    it('a malformed invocation is answered BadRequest by its id (the SDK has no timeout of its own), and the connection goes on', async (t) => {
      const { client } = await relayWithHeldAnswers(t);
      const bad: Record<string, unknown>[] = [
        { type: 'invoke', invocationId: 'no-target', event: 'ask' },
        { type: 'invoke', invocationId: 'other-target', target: 'group', event: 'ask' },
        { type: 'invoke', invocationId: 'no-event', target: 'event' },
        { type: 'invoke', invocationId: 'dot-dot', target: 'event', event: '..' },
        { type: 'invoke', invocationId: 'type-no-data', target: 'event', event: 'ask', dataType: 'text' },
        { type: 'invoke', invocationId: 'bad-base64', target: 'event', event: 'ask', dataType: 'binary', data: 'Q' },
      ];
      for (const m of bad) client.send(m);
      for (const m of bad) {
        const answer = await client.waitFor((r) => r.type === 'invokeResponse' && r.invocationId === m.invocationId, 5000, String(m.invocationId));
        assert.equal(answer.success, false, String(m.invocationId));
        assert.equal(answer.error.name, 'BadRequest', String(m.invocationId));
      }
      assert.equal((await client.request({ type: 'joinGroup', group: 'g' })).success, true);
    });
  });
});
