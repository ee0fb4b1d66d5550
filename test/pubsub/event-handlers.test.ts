// Event handler settings (event-handlers.ts) and abuse protection
// (abuse-protection.ts) as plain values: which handler takes which event, how
// a URL template expands, how `upstream` is read, which WebHook-Allowed-Origin
// answers let a URL through.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import type { HubConfig } from '../../src/config/types.ts';
import { AbuseProtection } from '../../src/pubsub/abuse-protection.ts';
import { EventHandler, HandlerError, HandlerTransport, deliverToHandler, handlerForSystemEvent, handlerForUserEvent, handlersOf, type HandlerRequest } from '../../src/pubsub/event-handlers.ts';
import { captureLogger, startTestRelay } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const base = { timeoutMs: 1000, retries: 0, retryDelayMs: 10 };
const hub: HubConfig = {
  name: 'chat',
  accessKey: 'k'.repeat(20),
  durable: true,
  eventHandlers: [
    { urlTemplate: 'http://a/{hub}/{event}', userEventPattern: 'one, two', systemEvents: ['connected'], ...base },
    { urlTemplate: 'hc://onprem/api/{event}', userEventPattern: '*', systemEvents: ['connect', 'connected'], ...base },
    { urlTemplate: 'http://never/{event}', userEventPattern: '*', systemEvents: ['disconnected'], ...base },
  ],
};

describe('event handler settings', () => {
  it('gives a user event or a system event to the first handler that takes it', () => {
    const handlers = handlersOf(hub);
    assert.equal(handlerForUserEvent(handlers, 'two')?.label, 'eventHandlers[0]');
    assert.equal(handlerForUserEvent(handlers, 'three')?.label, 'eventHandlers[1]');
    assert.equal(handlerForSystemEvent(handlers, 'connect')?.label, 'eventHandlers[1]');
    assert.equal(handlerForSystemEvent(handlers, 'connected')?.label, 'eventHandlers[0]');
    assert.equal(handlerForSystemEvent(handlers, 'disconnected')?.label, 'eventHandlers[2]');
    assert.equal(handlerForUserEvent(handlersOf({ ...hub, eventHandlers: [{ urlTemplate: 'http://x', userEventPattern: '', systemEvents: [], ...base }] }), 'one'), undefined);
  });

  it('expands {hub} and {event}, percent-encoded', () => {
    const [first] = handlersOf({ ...hub, name: 'a b' });
    assert.equal(first.urlFor('a b', 'ev:1'), 'http://a/a%20b/ev%3A1');
  });

  it('reads the older upstream as one handler taking every user event, without abuse protection', () => {
    const [migrated, ...rest] = handlersOf({ name: 'h', accessKey: 'k'.repeat(20), durable: true, upstream: { url: 'http://u/events', timeoutMs: 500 } });
    assert.equal(rest.length, 0);
    assert.equal(migrated.label, 'upstream');
    assert.equal(migrated.takesUserEvent('anything'), true);
    assert.equal(migrated.takesSystemEvent('connect'), false);
    assert.equal(migrated.validated, false);
    assert.equal(migrated.urlFor('h', 'x'), 'http://u/events');
  });

  it("says the older upstream was migrated without its query, where an Azure Function's key travels (before: logged at warn on every start)", async (t) => {
    const captured = captureLogger('info');
    await startTestRelay(t, {
      pubsub: {
        hubs: [
          { name: 'h', accessKey: 'k'.repeat(20), upstream: { url: 'http://127.0.0.1:9/api/webpubsub?code=FUNCTIONKEYSECRET' } },
          // (A user:pass@ in it is refused at load: test/config/load.test.ts.)
          { name: 'h2', accessKey: 'k'.repeat(20), upstream: { url: 'http://127.0.0.1:9/events#PASSWORDSECRET' } },
        ],
      },
    }, { log: captured.log });
    assert.equal(captured.events().filter((e) => e === 'config.upstream_migrated').length, 2);
    assert.doesNotMatch(JSON.stringify(captured.lines()), /FUNCTIONKEYSECRET|PASSWORDSECRET/);
  });
});

/** A transport that answers OPTIONS with the given WebHook-Allowed-Origin and counts the checks. */
function answering(allowed: string | undefined, status = 200): { transport: HandlerTransport; asked: HandlerRequest[] } {
  const asked: HandlerRequest[] = [];
  const transport = new HandlerTransport();
  transport.send = async (_url, request) => {
    asked.push(request);
    return { status, header: (name) => (name === 'webhook-allowed-origin' ? allowed : undefined), body: Buffer.alloc(0) };
  };
  return { transport, asked };
}

/**
 * A handler origin on 127.0.0.1 answering with `answer`, and what a delivery to it needs: `handler(urlTemplate, timeoutMs)`,
 * the transport, an abuse protection (closed at the test's end) and a request.
 */
async function handlerOrigin(t: TestContext, answer: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createServer(answer);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const handler = (urlTemplate: string, timeoutMs: number) =>
    new EventHandler({ urlTemplate, userEventPattern: '*', systemEvents: ['connect'], timeoutMs, retries: 0, retryDelayMs: 1000 }, 'eventHandlers[0]');
  const transport = new HandlerTransport();
  const protection = new AbuseProtection('relay.example:9400', transport, () => {});
  t.after(() => protection.close());
  const request = { headers: {}, body: Buffer.from('{}'), maxResponseBytes: 4096 };
  return { origin, handler, transport, protection, request };
}

describe('abuse protection', () => {
  it('lets a URL through when the answer names the origin (any of several) or *, and asks once until revalidated', async () => {
    for (const allowed of ['*', 'relay.example:9400', 'other.example, RELAY.example:9400']) {
      const { transport, asked } = answering(allowed);
      const protection = new AbuseProtection('relay.example:9400', transport, () => {});
      await Promise.all([protection.check('http://h/x', 1000), protection.check('http://h/x', 1000)]);
      await protection.check('http://h/x', 1000);
      assert.equal(asked.length, 1, allowed);
      assert.equal(asked[0].method, 'OPTIONS');
      assert.equal(asked[0].headers['webhook-request-origin'], 'relay.example:9400');
      protection.revalidate();
      await protection.check('http://h/x', 1000);
      assert.equal(asked.length, 2);
    }
  });

  it('keeps the consent per origin: event names (which clients choose) cost no further check, another origin does', async () => {
    const { transport, asked } = answering('*');
    const protection = new AbuseProtection('relay.example:9400', transport, () => {});
    // Before: one OPTIONS, and one remembered entry, per distinct URL (393 for 393 event names).
    for (let i = 0; i < 50; i++) await protection.check(`http://h:8080/hooks/chat/e${i}`, 1000);
    assert.equal(asked.length, 1);
    await protection.check('http://other:8080/hooks/chat/e1', 1000);
    await protection.check('https://h:8080/hooks/chat/e1', 1000);
    assert.equal(asked.length, 3);
    // hc://{entity}: the entity is the origin (WHATWG URLs give non-http schemes the origin "null"; before: one check per event name).
    for (let i = 0; i < 20; i++) await protection.check(`hc://handlers/hubs/chat/e${i}`, 1000);
    await protection.check('hc://HANDLERS/hubs/chat/other', 1000);
    assert.equal(asked.length, 4);
    await protection.check('hc://elsewhere/hubs/chat/e1', 1000);
    assert.equal(asked.length, 5);
  });

  it('remembers at most its bound of allowed origins: the one allowed longest ago is checked again', async () => {
    const { transport, asked } = answering('*');
    const protection = new AbuseProtection('relay.example:9400', transport, () => {}, 3);
    // `{event}` in a template's host: one origin per event name (before: each remembered for good).
    for (let i = 0; i < 5; i++) await protection.check(`http://e${i}.hooks.example/chat`, 1000);
    assert.equal(asked.length, 5);
    for (const kept of [2, 3, 4]) await protection.check(`http://e${kept}.hooks.example/chat`, 1000);
    assert.equal(asked.length, 5);
    await protection.check('http://e0.hooks.example/chat', 1000);
    assert.equal(asked.length, 6);
  });

  it('evicts the origin used longest ago, not the one allowed longest ago: an origin in steady use stays allowed', async () => {
    const { transport, asked } = answering('*');
    const urls: string[] = [];
    const send = transport.send.bind(transport);
    transport.send = (url, request) => (urls.push(url), send(url, request));
    const protection = new AbuseProtection('relay.example:9400', transport, () => {}, 4);
    await protection.check('http://steady.hooks.example/chat', 1000);
    // Other origins come and go (`{event}` in a host) while every other event goes to the steady one.
    for (let i = 0; i < 10; i++) {
      await protection.check(`http://e${i}.hooks.example/chat`, 1000);
      await protection.check('http://steady.hooks.example/chat', 1000);
    }
    // Before: checked again each time four others had been allowed after it (asked 1 + 10 + 2).
    assert.equal(urls.filter((u) => u.startsWith('http://steady.')).length, 1);
    assert.equal(asked.length, 11);
  });

  it('checks a dozen origins at once over HTTP with no leak warning (each check listens on the one stop signal)', async (t) => {
    const ports = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const server = createServer((req, res) => {
          req.resume();
          res.writeHead(200, { 'webhook-allowed-origin': '*' }).end();
        });
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        t.after(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
        return (server.address() as AddressInfo).port;
      }),
    );
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));
    const protection = new AbuseProtection('relay.example:9400', new HandlerTransport(), () => {});
    t.after(() => protection.close());
    await Promise.all(ports.map((port) => protection.check(`http://127.0.0.1:${port}/hooks`, 5000)));
    // A warning is emitted on the next tick.
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')), []);
  });

  it("bounds a call waiting on another handler's check of the same origin by its own timeoutMs", async (t) => {
    // A handler origin that takes connections and never answers.
    const { origin, handler, transport, protection, request } = await handlerOrigin(t, () => {});
    const slow = handler(`${origin}/user/{event}`, 6000);
    const fast = handler(`${origin}/connect`, 300);
    // The slow handler's event begins the origin's check; the fast one's comes while it waits.
    const first = deliverToHandler(transport, protection, slow, slow.urlFor('chat', 'message'), request).catch((err: HandlerError) => err);
    await new Promise((r) => setTimeout(r, 50));
    const startedAt = Date.now();
    const second = await deliverToHandler(transport, protection, fast, fast.urlFor('chat', 'connect'), request).catch((err: HandlerError) => err);
    const took = Date.now() - startedAt;
    assert.ok(second instanceof HandlerError && second.kind === 'timeout', String(second));
    // Before: held for the slow handler's 6 s (its check's bound).
    assert.ok(took < 3000, `the fast handler's call settled after ${took} ms`);
    // A drain's abort ends a call waiting on the check at once, too.
    const drain = new AbortController();
    const third = deliverToHandler(transport, protection, slow, slow.urlFor('chat', 'other'), request, 6000, drain.signal).catch((err: HandlerError) => err);
    drain.abort();
    const ended = await withTimeout(third, 1000, 'the drained call');
    assert.ok(ended instanceof HandlerError && ended.kind === 'timeout', String(ended));
    protection.close();
    await withTimeout(first, 7000, 'the slow handler\'s call');
  });

  it("lets a call with more time than the one that began its origin's check ask again when that check runs out of time", async (t) => {
    // The origin's OPTIONS is answered after 1 s (allowed); events at once.
    const { origin, handler, transport, protection, request } = await handlerOrigin(t, (req, res) => {
      req.resume();
      if (req.method === 'OPTIONS') setTimeout(() => res.writeHead(200, { 'webhook-allowed-origin': '*' }).end(), 1000);
      else res.writeHead(200).end('ok');
    });
    const fast = handler(`${origin}/connect`, 300);
    const patient = handler(`${origin}/user/{event}`, 5000);
    // The fast handler's connect begins the check (bounded by its 300 ms); the patient one's event comes while it waits.
    const first = deliverToHandler(transport, protection, fast, fast.urlFor('chat', 'connect'), request).catch((err: HandlerError) => err);
    await new Promise((r) => setTimeout(r, 50));
    const second = await withTimeout(
      deliverToHandler(transport, protection, patient, patient.urlFor('chat', 'message'), request).then(
        (answer) => answer.status,
        (err: HandlerError) => err,
      ),
      8000,
      "the patient handler's event",
    );
    const firstOutcome = await first;
    assert.ok(firstOutcome instanceof HandlerError && firstOutcome.kind === 'timeout', String(firstOutcome));
    // Before: it failed with the fast call's check at 300 ms.
    assert.equal(second, 200);
  });

  it("leaves no unhandled rejection when a call's signal was aborted before it waited on a check that then fails", async (t) => {
    // An origin that refuses abuse protection (400): the check fails after the call has given up (the drain's deadline had passed).
    const { origin, handler: handlerFor, transport, protection, request } = await handlerOrigin(t, (req, res) => {
      req.resume();
      res.writeHead(400).end();
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    t.after(() => process.off('unhandledRejection', onUnhandled));
    const handler = handlerFor(`${origin}/{event}`, 2000);
    const drained = new AbortController();
    drained.abort();
    const outcome = await deliverToHandler(transport, protection, handler, handler.urlFor('chat', 'message'), request, 2000, drained.signal).catch((err: HandlerError) => err);
    assert.ok(outcome instanceof HandlerError && outcome.kind === 'timeout', String(outcome));
    // The check's own answer (400: not allowed) comes after; before, nothing heard it (the relay's process ended, exit 70).
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(unhandled.map(String), []);
  });

  it('refuses without a matching origin or with an error status, and asks again next time', async () => {
    for (const [allowed, status] of [[undefined, 200], ['relay.example', 200], ['*', 404]] as const) {
      const { transport, asked } = answering(allowed, status);
      const protection = new AbuseProtection('relay.example:9400', transport, () => {});
      await assert.rejects(protection.check('http://h/x', 1000), (e: HandlerError) => e.kind === 'not allowed');
      await assert.rejects(protection.check('http://h/x', 1000));
      assert.equal(asked.length, 2);
    }
  });
});
