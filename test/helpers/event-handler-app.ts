// An event handler as users write one: an Express app with Microsoft's
// @azure/web-pubsub-express WebPubSubEventHandler (unmodified), recording
// every event it gets and whether its ce-signature verifies.
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { TestContext } from 'node:test';
import express from 'express';
import { WebPubSubEventHandler, type WebPubSubEventHandlerOptions } from '@azure/web-pubsub-express';
import { cleanupFor } from './cleanup.ts';
import { startHycoHttpsListener } from './hyco.ts';

export interface HandlerRecord {
  connect: any[];
  connected: any[];
  disconnected: any[];
  user: any[];
  /** One entry per event: did ce-signature carry HMAC-SHA256(key, connectionId)? */
  signatures: boolean[];
}

/** True when `signature` (sha256=hex,sha256=hex...) names the HMAC of the connection id with `key`. */
export function signatureValid(signature: string | undefined, key: string, connectionId: string): boolean {
  const expected = `sha256=${createHmac('sha256', key).update(connectionId).digest('hex')}`;
  return (signature ?? '').split(',').some((s) => s.trim() === expected);
}

/**
 * The Express app: handleConnect gives the user a userId (`handler-` + the
 * token's) and the group `lobby` (or does what `connect` says), and
 * handleUserEvent answers `echo: <data>` in the data's own type.
 */
export function eventHandlerApp(
  hub: string,
  key: string,
  options: Partial<WebPubSubEventHandlerOptions> & { connect?: WebPubSubEventHandlerOptions['handleConnect']; path?: string } = {},
): { app: express.Express; record: HandlerRecord; handler: WebPubSubEventHandler } {
  const record: HandlerRecord = { connect: [], connected: [], disconnected: [], user: [], signatures: [] };
  const check = (ctx: { signature?: string; connectionId: string }) => record.signatures.push(signatureValid(ctx.signature, key, ctx.connectionId));
  const handler = new WebPubSubEventHandler(hub, {
    path: options.path,
    allowedEndpoints: options.allowedEndpoints,
    handleConnect: (req, res) => {
      record.connect.push(req);
      check(req.context);
      if (options.connect) return options.connect(req, res);
      res.success({ userId: `handler-${req.context.userId ?? 'anonymous'}`, groups: ['lobby'], roles: ['webpubsub.joinLeaveGroup'] });
    },
    onConnected: (req) => {
      record.connected.push(req);
      check(req.context);
    },
    onDisconnected: (req) => {
      record.disconnected.push(req);
      check(req.context);
    },
    handleUserEvent: (req, res) => {
      record.user.push(req);
      check(req.context);
      if (req.dataType === 'binary') return res.success(req.data as ArrayBuffer, 'binary');
      if (req.dataType === 'json') return res.success(JSON.stringify({ echo: req.data }), 'json');
      res.success(`echo: ${String(req.data)}`, 'text');
    },
  });
  const app = express();
  app.use(handler.getMiddleware());
  return { app, record, handler };
}

/** Serves an app on 127.0.0.1, port 0; closed in clean-up. */
export async function serveApp(t: Pick<TestContext, 'after'>, app: express.Express): Promise<{ url: string; port: number; server: Server }> {
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  cleanupFor(t).after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, port, server };
}

/**
 * A bare event handler on 127.0.0.1, port 0, for tests that need answers
 * no SDK gives (odd statuses, headers, bodies): it passes abuse protection
 * (OPTIONS: any origin allowed) and hands every other request to `handle`.
 * Closed in clean-up. `urlTemplate` is `http://127.0.0.1:{port}/events/{event}`.
 */
export async function serveEventHandler(
  t: Pick<TestContext, 'after'>,
  handle: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ urlTemplate: string; port: number }> {
  const server = createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(200, { 'webhook-allowed-origin': '*' });
      return res.end();
    }
    handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanupFor(t).after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as { port: number };
  return { urlTemplate: `http://127.0.0.1:${port}/events/{event}`, port };
}

/**
 * A bare event handler (serveEventHandler) that answers each event `re <body>` as text/plain at once, but holds
 * an event whose body starts with `slow` until the test calls `held.get(body)()`. `bodies` are the events in the
 * order they came.
 */
export async function serveHoldingEventHandler(t: Pick<TestContext, 'after'>): Promise<{ urlTemplate: string; bodies: string[]; held: Map<string, () => void> }> {
  const bodies: string[] = [];
  const held = new Map<string, () => void>();
  const { urlTemplate } = await serveEventHandler(t, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      bodies.push(body);
      const answer = () => res.writeHead(200, { 'content-type': 'text/plain' }).end(`re ${body}`);
      if (body.startsWith('slow')) held.set(body, answer);
      else answer();
    });
  });
  return { urlTemplate, bodies, held };
}

/**
 * `handler`'s middleware as an on-prem hyco-https listener of `entity` on the relay at `relayUrl` (an hc://
 * event handler). It runs on hyco-https's own request and response objects: Express itself would swap their
 * prototypes for node:http's, so only the two fields the middleware reads of Express are set.
 */
export async function listenWithMiddleware(t: TestContext, relayUrl: string, handler: WebPubSubEventHandler, entity: string): Promise<void> {
  const middleware = handler.getMiddleware();
  await startHycoHttpsListener(
    t,
    relayUrl,
    (req, res) => {
      Object.assign(req, { baseUrl: '', path: new URL(req.url ?? '/', 'http://x').pathname });
      void middleware(req as never, res as never, () => res.writeHead(404).end());
    },
    entity,
  );
}
