// Pub/sub test helpers: a relay with hubs, client access URLs, a raw JSON
// subprotocol client (ws 8) for tests that must misbehave or need many
// subscribers cheaply, and a TCP proxy that can cut every connection through
// it and refuse new ones for a while (a network outage between a client and
// the relay, with real sockets).
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import WebSocket from 'ws';
import { clientAccessUrl, type ClientAccessOptions } from '../../src/pubsub/client-access-url.ts';
import type { ConnectionLimits } from '../../src/pubsub/pubsub-connection.ts';
import type { RunningRelay } from '../../src/server/relay-server.ts';
import { startTestRelay } from './relay.ts';
import { withTimeout } from './wait.ts';
import { cleanupFor } from './cleanup.ts';

/** The query a reconnect adds to a client access URL to recover the reliable session `connectionId` (its `connected` named both). */
export function recoveryQuery(connectionId: string, reconnectionToken: string): string {
  return `&awps_connection_id=${encodeURIComponent(connectionId)}&awps_reconnection_token=${encodeURIComponent(reconnectionToken)}`;
}

/** Limits of a pub/sub connection made in a unit test, a new object each call. */
export function testConnectionLimits(): ConnectionLimits {
  return {
    outboundBufferBytes: 1 << 20,
    sessionBufferMessages: 1000,
    sessionBufferBytes: 1 << 20,
    ackIdsPerConnection: 100,
    groupsPerConnection: 100,
    requestsInFlightPerConnection: 32,
    pubsubMessageBytes: 1 << 20,
  };
}

export const HUB = 'chat';
export const HUB_KEY = 'chat-access-key-0123456789';
export const OTHER_HUB = 'other';
export const OTHER_HUB_KEY = 'other-access-key-0123456789';
export const PLAIN = 'json.webpubsub.azure.v1';
export const RELIABLE = 'json.reliable.webpubsub.azure.v1';
export const ALL_ROLES = ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'];

export function pubsubOverrides(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    pubsub: {
      hubs: [
        { name: HUB, accessKey: HUB_KEY },
        { name: OTHER_HUB, accessKey: OTHER_HUB_KEY },
      ],
    },
    ...extra,
  };
}

export function startPubSubRelay(t: Pick<TestContext, 'after'>, extra: Record<string, unknown> = {}): Promise<RunningRelay> {
  return startTestRelay(t, pubsubOverrides(extra));
}

export function accessUrl(baseUrl: string, options: ClientAccessOptions & { hub?: string; key?: string } = {}): string {
  return clientAccessUrl(baseUrl, options.hub ?? HUB, options.key ?? (options.hub === OTHER_HUB ? OTHER_HUB_KEY : HUB_KEY), {
    roles: ALL_ROLES,
    ...options,
  });
}

/** A client speaking the JSON subprotocols with ws directly; every message is kept in order. */
export class RawPubSubClient {
  readonly messages: any[] = [];
  private waiters: (() => void)[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private nextAckId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      this.messages.push(isBinary ? { binary: data } : JSON.parse(String(data)));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        resolve({ code, reason: String(reason) });
        for (const w of this.waiters.splice(0)) w();
      }),
    );
  }

  static async connect(url: string, protocol = PLAIN, t?: Pick<TestContext, 'after'>, options: WebSocket.ClientOptions = {}): Promise<RawPubSubClient> {
    // Listeners go on before the socket opens: the connected message can come in the 101's packet.
    const client = new RawPubSubClient(new WebSocket(url, [protocol], options));
    t?.after(() => client.ws.terminate());
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        client.ws.once('open', () => resolve());
        client.ws.once('error', reject);
        client.ws.once('unexpected-response', (_req, res) => {
          res.resume();
          reject(new Error(`HTTP ${res.statusCode}`));
        });
      }),
      10000,
      'pub/sub client to open',
    );
    return client;
  }

  send(message: object | string): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** Sends a request with a fresh ackId and waits for its ack. */
  async request(message: Record<string, unknown>, ms = 5000): Promise<any> {
    const ackId = (message.ackId as number | undefined) ?? this.nextAckId++;
    this.send({ ...message, ackId });
    return this.waitFor((m) => m.type === 'ack' && m.ackId === ackId, ms, `ack ${ackId}`);
  }

  /** Resolves with the first kept message matching `match` (past or future). */
  async waitFor(match: (m: any) => boolean, ms = 5000, what = 'message'): Promise<any> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.messages.find(match);
      if (found) return found;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await withTimeout(new Promise<void>((r) => this.waiters.push(r)), left, what).catch(() => undefined);
    }
  }

  dataMessages(): any[] {
    return this.messages.filter((m) => m.type === 'message');
  }
}

/** A TCP proxy to `target` on 127.0.0.1 that can cut all its connections, refuse new ones, or hold what clients send. */
export class CuttableProxy {
  private readonly pairs = new Set<Socket>();
  private refusing = false;
  /** Milliseconds each chunk a client sends waits before it goes on to the target (see hold()). */
  private holdMs = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private targetPort: number,
  ) {}

  static async start(targetPort: number, t: Pick<TestContext, 'after'>): Promise<CuttableProxy> {
    let proxy: CuttableProxy | undefined;
    // Half-open: a client's end waits for what is held before it reaches the target.
    const server = createServer({ allowHalfOpen: true }, (inbound) => {
      if (!proxy || proxy.refusing) return inbound.destroy();
      const outbound = connect(proxy.targetPort, '127.0.0.1');
      for (const s of [inbound, outbound]) {
        proxy.pairs.add(s);
        s.on('close', () => proxy!.pairs.delete(s));
        s.on('error', () => {
          inbound.destroy();
          outbound.destroy();
        });
      }
      // Chunks towards the target go on in order; while held, each waits holdMs (a slow link one way).
      const held: { at: number; chunk: Buffer }[] = [];
      let timer: NodeJS.Timeout | undefined;
      let ended = false;
      const release = () => {
        timer = undefined;
        while (held.length > 0 && held[0].at <= Date.now()) outbound.write(held.shift()!.chunk);
        if (held.length > 0) timer = setTimeout(release, held[0].at - Date.now());
        else if (ended) outbound.end();
      };
      inbound.on('data', (chunk: Buffer) => {
        if (proxy!.holdMs === 0 && held.length === 0) {
          if (!outbound.write(chunk)) {
            inbound.pause();
            outbound.once('drain', () => inbound.resume());
          }
          return;
        }
        held.push({ at: Date.now() + proxy!.holdMs, chunk });
        timer ??= setTimeout(release, proxy!.holdMs);
      });
      inbound.on('end', () => {
        ended = true;
        if (held.length === 0) outbound.end();
      });
      outbound.pipe(inbound);
      inbound.on('close', () => {
        // Ended cleanly with chunks still held: release() writes them, then ends.
        if (ended && held.length > 0 && !inbound.errored) return;
        clearTimeout(timer);
        outbound.destroy();
      });
      outbound.on('close', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new CuttableProxy(server, (server.address() as { port: number }).port, targetPort);
    cleanupFor(t).after(() => proxy!.stop());
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Sends new connections to another port (a load balancer moving traffic to another node). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  /** Holds each chunk clients send for `ms` before it goes on to the target (0: at once again); order is kept. */
  hold(ms: number): void {
    this.holdMs = ms;
  }

  /** Destroys every proxied connection (both sides); with `refuseMs`, drops new ones for that long. */
  cut(refuseMs = 0): void {
    for (const s of this.pairs) s.destroy();
    if (refuseMs > 0) {
      this.refusing = true;
      setTimeout(() => (this.refusing = false), refuseMs).unref();
    }
  }

  /** Drops every new connection until open(): the target looks unreachable. */
  refuse(): void {
    this.refusing = true;
  }

  /** Takes new connections again after refuse(). */
  open(): void {
    this.refusing = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The recent-message part of a durable hub's SessionStream (src/pubsub/session-catch-up.ts), for a test's stream that keeps none. */
export const KEEPS_NOTHING_RECENT = { keepRecent: () => {}, keepingRecent: false, forgetRecent: () => {}, recentAfter: () => undefined };
