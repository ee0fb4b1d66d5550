// Loads Microsoft's published hyco-ws and hyco-https (CommonJS, unmodified)
// and starts their listeners against a test relay, closing them in clean-up.
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import { tokenFor, wsUrl } from './relay.ts';
import { waitEvent } from './wait.ts';
import { cleanupFor } from './cleanup.ts';

const require = createRequire(import.meta.url);

export interface HycoWsServer extends EventEmitter {
  close(cb?: (err?: Error) => void): void;
  /** The control channel: a WebSocket of the ws 1.1 that hyco-ws bundles. */
  controlChannel: EventEmitter & { send(data: string): void };
}
export interface HycoWsModule {
  createRelayedServer(options: { server: string; token: string | (() => string) }, onConnection?: (ws: any) => void): HycoWsServer;
  createRelayToken(uri: string, keyName: string, key: string, ttl?: number): string;
}
export interface HycoHttpsServer extends EventEmitter {
  listen(): void;
  close(cb?: (err?: Error) => void): void;
}
export interface HycoHttpsModule {
  createRelayedServer(
    options: { server: string; token: string | (() => string) },
    onRequest: (req: IncomingMessage, res: ServerResponse) => void,
  ): HycoHttpsServer;
}

export const hycoWs = require('hyco-ws') as HycoWsModule;
export const hycoHttps = require('hyco-https') as HycoHttpsModule;

export function listenUrl(relayUrl: string, entity = 'echo'): string {
  return wsUrl(relayUrl, `/$hc/${entity}?sb-hc-action=listen`);
}

/** A hyco-ws listener with a token function; resolves once listening. */
export async function startHycoWsListener(
  t: Pick<TestContext, 'after'>,
  relayUrl: string,
  onConnection: (ws: any) => void,
  entity = 'echo',
  token?: () => string,
): Promise<HycoWsServer> {
  const url = listenUrl(relayUrl, entity);
  const server = hycoWs.createRelayedServer({ server: url, token: token ?? (() => tokenFor(url)) }, onConnection);
  server.on('error', () => {});
  cleanupFor(t).after(() => server.close());
  await waitEvent(server, 'listening', 5000);
  return server;
}

export async function startHycoHttpsListener(
  t: Pick<TestContext, 'after'>,
  relayUrl: string,
  onRequest: (req: IncomingMessage, res: ServerResponse) => void,
  entity = 'echo',
): Promise<HycoHttpsServer> {
  const url = listenUrl(relayUrl, entity);
  const server = hycoHttps.createRelayedServer({ server: url, token: () => tokenFor(url) }, onRequest);
  server.on('error', () => {});
  const listening = waitEvent(server, 'listening', 5000);
  server.listen();
  cleanupFor(t).after(() => server.close());
  await listening;
  return server;
}

/** An hc:// event handler: a hyco-https listener of `entity` that allows every origin (abuse protection's OPTIONS) and hands each event to `onEvent`. */
export function startHycoEventHandler(
  t: Pick<TestContext, 'after'>,
  relayUrl: string,
  entity: string,
  onEvent: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<HycoHttpsServer> {
  return startHycoHttpsListener(
    t,
    relayUrl,
    (req, res) => {
      if (req.method !== 'OPTIONS') return onEvent(req, res);
      res.writeHead(200, { 'webhook-allowed-origin': '*' });
      res.end();
    },
    entity,
  );
}

/** An event handler's answer to every event: 200 `late` (text), `ms` after the event came. */
export function answerAfter(ms: number): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    req.resume();
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('late');
    }, ms);
  };
}

/** hyco-ws and hyco-https renew a token function's token on this interval. */
const TOKEN_RENEWAL_MS = 60 * 60 * 1000;

/**
 * Runs `start`, which makes a hyco-ws or hyco-https listener connect (hyco-ws's createRelayedServer, hyco-https's
 * listen()): each sets its hourly token renewal with setInterval as it connects. Returns what `start` returned, and
 * `renew`, which runs that renewal now, as the hour passing would (once the channel is open: it sends renewToken).
 * The timer stays a real one, cleared by the listener as before. Not node:test's mock.timers: while enabled it stands
 * in for setInterval and clearInterval process-wide, and a real interval cleared meanwhile stays set. An earlier
 * test's listener reconnecting as the mock was enabled left its real hourly renewal timer so, and that test file's
 * process did not exit after its tests passed (past the suite's 120 s per file).
 */
export function withTokenRenewal<T>(start: () => T): { started: T; renew(): void } {
  const renewals: (() => void)[] = [];
  const realSetInterval = globalThis.setInterval;
  globalThis.setInterval = ((callback: () => void, ms?: number, ...args: unknown[]) => {
    if (ms === TOKEN_RENEWAL_MS) renewals.push(callback);
    return realSetInterval(callback, ms, ...args);
  }) as typeof setInterval;
  let started: T;
  try {
    started = start();
  } finally {
    globalThis.setInterval = realSetInterval;
  }
  return {
    started,
    renew() {
      if (renewals.length !== 1) throw new Error(`${renewals.length} hourly token renewals were set, not one`);
      renewals[0]();
    },
  };
}
