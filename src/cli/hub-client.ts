// A small Web PubSub client (json.webpubsub.azure.v1 over `ws`) for the `pub`
// and `sub` commands: connects with a client access token, sends requests
// with ackIds and resolves each when its ack arrives.
import WebSocket from 'ws';
import { clientAccessUrl } from '../pubsub/client-access-url.ts';
import { SweepClock } from '../websocket/sweep-clock.ts';
import type { HubAccess } from './hub-access.ts';
import type { ClientTls } from './tls-options.ts';

export interface HubMessage {
  type: string;
  from?: string;
  group?: string;
  dataType?: string;
  data?: unknown;
  ackId?: number;
  success?: boolean;
  error?: { name: string; message: string };
  event?: string;
}

/** Bounds on waiting for the relay (a frozen relay, or a path that went silent, held `pub` and `sub` for good). */
export interface HubClientTimeouts {
  /** From the TCP connect to the relay's `connected` message. */
  connectMs: number;
  /** From a request to its ack: past it, the request is reported unacknowledged (it may or may not have been sent). */
  ackMs: number;
  /** A ping this often; a connection with nothing from the relay for two of these is dropped (and `sub` reconnects). */
  keepAliveMs: number;
}

export const HUB_CLIENT_TIMEOUTS: HubClientTimeouts = { connectMs: 30_000, ackMs: 30_000, keepAliveMs: 20_000 };

/** A request waiting for its ack; `timer` runs once the request has left this process. */
interface AckWaiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

export class HubClient {
  private nextAckId = 1;
  private readonly waiting = new Map<number, AckWaiter>();
  /** Why this client dropped the connection itself (said so, not as the relay's close). */
  private dropReason: string | undefined;
  private heardSinceLastPing = true;
  private readonly keepAlive: NodeJS.Timeout;

  private constructor(
    private readonly ws: WebSocket,
    private readonly onMessage: (m: HubMessage) => void,
    private readonly timeouts: HubClientTimeouts,
  ) {
    const heard = () => {
      this.heardSinceLastPing = true;
    };
    ws.on('pong', heard);
    ws.on('ping', heard);
    // A check that runs late (the process was paused: a stalled VM, a laptop's sleep) fires before what
    // arrived meanwhile is read: it only pings, and the next one judges (before: `sub` dropped a live connection).
    const clock = new SweepClock(timeouts.keepAliveMs);
    this.keepAlive = setInterval(() => {
      if (clock.onTime() && !this.heardSinceLastPing) {
        // Nothing for a whole interval after a ping: the relay or the path is gone without a word.
        this.drop(`nothing from the relay for ${timeouts.keepAliveMs} ms after a ping`);
        return;
      }
      this.heardSinceLastPing = false;
      ws.ping();
    }, timeouts.keepAliveMs);
    this.keepAlive.unref();
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      heard();
      if (isBinary) return;
      let message: HubMessage;
      try {
        message = JSON.parse(data.toString('utf8')) as HubMessage;
      } catch {
        return;
      }
      if (message.type === 'ack' && typeof message.ackId === 'number') {
        const waiter = this.waiting.get(message.ackId);
        this.waiting.delete(message.ackId);
        if (!waiter) return;
        clearTimeout(waiter.timer);
        // Duplicate means the relay already has it: that is success too.
        if (message.success || message.error?.name === 'Duplicate') waiter.resolve();
        else waiter.reject(new Error(`${message.error?.name ?? 'Error'}: ${message.error?.message ?? 'request failed'}`));
        return;
      }
      this.onMessage(message);
    });
    ws.on('close', (code: number, reason: Buffer) => {
      clearInterval(this.keepAlive);
      // Said with the relay's close code and reason (before: "connection closed before the ack", whatever the cause).
      const closed = this.dropReason
        ? `${this.dropReason}, the connection dropped`
        : `the relay closed the connection (${code}${reason.length > 0 ? ` ${reason.toString('utf8')}` : ''})`;
      const why = `${closed} before its ack: it may or may not have been sent`;
      for (const waiter of this.waiting.values()) {
        clearTimeout(waiter.timer);
        waiter.reject(Object.assign(new Error(why), { unacknowledged: true }));
      }
      this.waiting.clear();
    });
  }

  /** Connects; resolves once the relay said `connected`. */
  static connect(
    baseUrl: string,
    access: HubAccess,
    options: { userId?: string; roles: string[]; tls?: ClientTls; timeouts?: HubClientTimeouts },
    onMessage: (m: HubMessage) => void = () => {},
  ): Promise<HubClient> {
    const timeouts = options.timeouts ?? HUB_CLIENT_TIMEOUTS;
    const url = clientAccessUrl(baseUrl, access.hub, access.key, { userId: options.userId, roles: options.roles, ttlSeconds: 24 * 3600 });
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, 'json.webpubsub.azure.v1', { ...options.tls });
    } catch (err) {
      // Its message has the whole URL, and the URL a token that joins or sends for a day: never printed.
      return Promise.reject(new Error(`cannot connect to ${baseUrl}: ${(err as Error).message.replace(/\?access_token=[^\s&]*/g, '')}`));
    }
    return new Promise<HubClient>((resolveWith, rejectWith) => {
      let client: HubClient | undefined;
      const connecting = setTimeout(() => {
        reject(new Error(`no answer from the relay within ${timeouts.connectMs} ms`));
        ws.terminate();
      }, timeouts.connectMs);
      const resolve = (c: HubClient) => {
        clearTimeout(connecting);
        resolveWith(c);
      };
      const reject = (err: Error) => {
        clearTimeout(connecting);
        rejectWith(err);
      };
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        reject(Object.assign(new Error(`the relay refused the connection: ${res.statusCode} ${res.statusMessage ?? ''}`.trim()), { status: res.statusCode }));
      });
      ws.once('error', reject);
      ws.once('open', () => {
        client = new HubClient(
          ws,
          (m) => {
            if (m.type === 'system' && m.event === 'connected') resolve(client!);
            else onMessage(m);
          },
          timeouts,
        );
      });
      ws.once('close', (code, reason) => reject(new Error(`closed before connected: ${code} ${reason.toString()}`.trim())));
    });
  }

  /** Sends a request and resolves when the relay acknowledges it. */
  request(body: Record<string, unknown>): Promise<void> {
    const ackId = this.nextAckId++;
    return new Promise((resolve, reject) => {
      const waiter: AckWaiter = { resolve, reject, timer: undefined };
      this.waiting.set(ackId, waiter);
      this.ws.send(JSON.stringify({ ...body, ackId }), (err) => {
        if (err) {
          this.waiting.delete(ackId);
          reject(err);
          return;
        }
        // The bound runs from when the request left this process (queued behind many others, it had not).
        if (!this.waiting.has(ackId)) return;
        waiter.timer = setTimeout(() => {
          this.waiting.delete(ackId);
          reject(Object.assign(new Error(`no ack within ${this.timeouts.ackMs} ms: it may or may not have been sent`), { unacknowledged: true }));
        }, this.timeouts.ackMs);
      });
    });
  }

  /** Open: not closing or closed. */
  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** `reason`: the relay's close reason, or why this client dropped a silent connection. */
  onClose(handler: (code: number, reason: string) => void): void {
    this.ws.on('close', (code, reason) => handler(code, this.dropReason ?? reason.toString()));
  }

  /** Ends the connection at once, without a closing handshake (the relay is not answering), saying why. */
  drop(why: string): void {
    this.dropReason ??= why;
    this.ws.terminate();
  }

  close(): void {
    this.ws.close(1000);
  }
}
