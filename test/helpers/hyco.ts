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
