// A listener speaking the control-channel protocol with ws 8 directly, for
// tests that need a listener to misbehave (reject, accept twice, read slowly,
// never answer) in ways the Microsoft clients cannot be told to.
import type { TestContext } from 'node:test';
import WebSocket from 'ws';
import { rawUpgrade, type RawUpgrade } from './raw-socket.ts';
import { tokenFor, wsUrl } from './relay.ts';
import { withTimeout } from './wait.ts';

export class RawListener {
  private readonly queue: unknown[] = [];
  private waiters: { resolve: (m: unknown) => void; reject: (error: Error) => void }[] = [];
  /** Set once the control channel has closed: no message can come after those queued. */
  private ended = false;
  closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      const message = isBinary ? data : JSON.parse(String(data));
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(message);
      else this.queue.push(message);
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.ended = true;
        // A wait for a message that cannot come ends now, not when its time runs out (its timer would keep the
        // test's process alive that long after the test).
        for (const waiter of this.waiters.splice(0)) waiter.reject(new Error(`control channel closed (${code}) before a control message came`));
        resolve({ code, reason: String(reason) });
      }),
    );
  }

  static async connect(url: string, token: string | undefined, options: WebSocket.ClientOptions = {}): Promise<RawListener> {
    const ws = new WebSocket(url, { ...options, headers: token ? { ServiceBusAuthorization: token } : {} });
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      }),
      5000,
      'control channel to open',
    );
    return new RawListener(ws);
  }

  /** The next control message, waited for up to `ms`; refused at once when the control channel has closed and none is queued. */
  next<T = any>(ms = 5000): Promise<T> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued as T);
    if (this.ended) return Promise.reject(new Error('control channel closed before a control message came'));
    return withTimeout(new Promise<T>((resolve, reject) => this.waiters.push({ resolve: resolve as (m: unknown) => void, reject })), ms, 'control message');
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Opens a client WebSocket and resolves when open; rejects with the HTTP status otherwise. */
/** A raw listener on `entity` through the relay at `relayUrl`, closed with the test. */
export async function listenOn(t: Pick<TestContext, 'after'>, relayUrl: string, entity: string): Promise<RawListener> {
  const url = wsUrl(relayUrl, `/$hc/${entity}?sb-hc-action=listen`);
  const listener = await RawListener.connect(url, tokenFor(url));
  t.after(() => listener.close());
  return listener;
}

/** A sender's connect through `url`, with a token for it: 101, or the status it was refused with. */
export function connectStatus(url: string): Promise<number> {
  return upgradeStatus(url, { headers: { ServiceBusAuthorization: tokenFor(url) } });
}

export function openWebSocket(url: string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, options.protocols ?? [], options);
  return withTimeout(
    new Promise<WebSocket>((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => {
        const err = new Error(`HTTP ${res.statusCode} ${res.statusMessage}`) as Error & { status?: number; statusMessage?: string };
        err.status = res.statusCode;
        err.statusMessage = res.statusMessage;
        res.resume();
        ws.terminate();
        reject(err);
      });
      ws.once('error', reject);
    }),
    10000,
    `WebSocket ${url.split('?')[0]}`,
  );
}

/** The HTTP status a WebSocket upgrade fails with. */
export async function upgradeStatus(url: string, options: WebSocket.ClientOptions = {}): Promise<number> {
  try {
    const ws = await openWebSocket(url, options);
    ws.terminate();
    return 101;
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (status === undefined) throw err;
    return status;
  }
}

/** The status and error code a WebSocket upgrade is refused with (101 and no code when it opens). */
export function upgradeRefusal(url: string, options: WebSocket.ClientOptions = {}): Promise<{ status: number; code?: string }> {
  const ws = new WebSocket(url, [], options);
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', () => {
        ws.terminate();
        resolve({ status: 101 });
      });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => {
          ws.terminate();
          let code: string | undefined;
          try {
            code = (JSON.parse(body) as { code?: string }).code;
          } catch {
            // no JSON body
          }
          resolve({ status: res.statusCode!, code });
        });
      });
      ws.once('error', reject);
    }),
    10000,
    'upgrade answer',
  );
}

/**
 * A relayed WebSocket on `relay`'s entity `entity` (one that needs no sender token) between raw sockets: the
 * sender and the listener's rendezvous leg, each as its upgrade left it (paused, the bytes after its 101 in `rest`),
 * and the raw listener that accepted it, closed with the test.
 */
export async function rawRelayedPair(
  t: Pick<TestContext, 'after'>,
  relay: { url: string; port: number },
  entity = 'open',
): Promise<{ sender: RawUpgrade; leg: RawUpgrade; listener: RawListener }> {
  const listenUrl = wsUrl(relay.url, `/$hc/${entity}?sb-hc-action=listen`);
  const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
  t.after(() => listener.close());
  const upgrading = rawUpgrade(t, relay.port, `/$hc/${entity}?sb-hc-action=connect`);
  const { accept } = await listener.next();
  const address = new URL(accept.address);
  const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
  return { sender: await upgrading, leg, listener };
}

/** Dials a rendezvous address that should serve nothing: what came on it, and how it ended. */
export async function staleLeg(address: string): Promise<{ messages: string[]; outcome: string }> {
  const leg = new WebSocket(address);
  const messages: string[] = [];
  leg.on('message', (d: Buffer, binary: boolean) => messages.push(binary ? `binary:${d.length}` : String(d).slice(0, 200)));
  try {
    const outcome = await withTimeout(
      new Promise<string>((resolve) => {
        leg.once('unexpected-response', (_req, res) => resolve(`refused ${res.statusCode}`));
        leg.once('close', (code) => resolve(`closed ${code}`));
        leg.once('error', (err) => resolve(`error ${err.message}`));
      }),
      10000,
      'the stale leg to end',
    );
    return { messages, outcome };
  } finally {
    leg.terminate();
  }
}
