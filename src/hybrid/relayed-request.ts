// A relayed HTTP request the relay itself makes to a hybrid connection's
// listener, as any sender's would go (docs/event-handlers.md, hc:// handlers):
// the same HttpExchange, routed to a listener on this edge or over the bus to
// whichever edge holds one, small bodies on the control channel, large ones
// through a rendezvous. Only the two ends are in process: the request is a
// readable stream with a head, and the response is collected, capped, from
// what the exchange writes. The relay needs no token for itself; the answer
// the listener gives is returned as is, and what the relay would have
// answered a sender in its place (no listener, listener gone, timeouts) is a
// rejection naming why.
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Logger } from '../telemetry/logger.ts';
import type { HybridContext } from './context.ts';
import type { HybridEntity } from './entity-catalog.ts';
import type { HybridErrorCode } from './errors.ts';
import { HttpExchange } from './http-exchange.ts';
import type { ListenerRoutes } from './listener-route.ts';
import { SERVICE_BUS_HEADER_ONLY } from './sender-credential.ts';

export interface RelayedRequestInit {
  method: string;
  /** Lower-case names. */
  headers: Record<string, string>;
  body?: Buffer;
  timeoutMs: number;
  maxResponseBytes: number;
  /**
   * Ends the request when it aborts, as its timeout would (the pub/sub connection whose user event it is ended, the
   * drain's deadline came). Before, the caller stopped waiting but the exchange ran on to timeoutMs, a place of
   * limits.pendingPerEntity held meanwhile: clients that sent an event to a slow hc:// handler and left filled the
   * entity, and every other event of its hubs failed TooManyPending.
   */
  signal?: AbortSignal;
}

export interface RelayedAnswer {
  status: number;
  header(name: string): string | undefined;
  body: Buffer;
}

/** The request got no answer from a listener. `kind` says how, as pub/sub's event handlers classify it. */
export class RelayedRequestError extends Error {
  constructor(
    readonly kind: 'unreachable' | 'timeout' | 'failed',
    readonly code: HybridErrorCode | 'Timeout' | 'TooLarge',
  ) {
    super(kind === 'timeout' ? `relayed request: no answer in time (${code})` : code === 'TooLarge' ? 'answer too large' : `relayed request failed: ${code}`);
  }
}

const TIMEOUT_CODES = new Set<HybridErrorCode>(['AcceptTimeout', 'RouteTimeout', 'ResponseTimeout']);

/** What the exchange writes its answer to: a response kept in memory, capped. */
class CollectedResponse extends EventEmitter {
  headersSent = false;
  destroyed = false;
  status = 0;
  private readonly headers = new Map<string, string>();
  private readonly chunks: Buffer[] = [];
  private size = 0;
  /** Set when the relay, not the listener, answered (HttpExchange.fail). */
  relayCode: HybridErrorCode | undefined;
  /** Set when the answer outgrew `maxBytes`: cut for that, not for a bad answer. */
  private tooLarge = false;

  constructor(
    private readonly maxBytes: number,
    private readonly done: (outcome: RelayedAnswer | RelayedRequestError) => void,
  ) {
    super();
  }

  writeHead(status: number, reasonOrHeaders?: string | Record<string, string | string[]>, maybeHeaders?: Record<string, string | string[]>): this {
    const headers = typeof reasonOrHeaders === 'object' ? reasonOrHeaders : maybeHeaders;
    this.status = status;
    for (const [name, value] of Object.entries(headers ?? {})) this.headers.set(name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value));
    this.headersSent = true;
    return this;
  }

  write(chunk: Buffer | string): boolean {
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.size += data.length;
    if (this.size > this.maxBytes) {
      // Before: destroy() reported it first, as BadListenerResponse.
      this.tooLarge = true;
      this.destroy();
      return false;
    }
    this.chunks.push(data);
    return true;
  }

  end(chunk?: Buffer | string): this {
    if (this.destroyed) return this;
    if (chunk !== undefined && !this.write(chunk)) return this;
    this.destroyed = true;
    if (this.relayCode) this.done(new RelayedRequestError(TIMEOUT_CODES.has(this.relayCode) ? 'timeout' : 'unreachable', this.relayCode));
    else this.done({ status: this.status, header: (name) => this.headers.get(name), body: Buffer.concat(this.chunks, this.size) });
    this.closeSoon();
    return this;
  }

  /** Cut short (the listener's answer broke after its head, or the caller gave up): the caller hears it now, not at its timeout. */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    if (this.relayCode) this.done(new RelayedRequestError(TIMEOUT_CODES.has(this.relayCode) ? 'timeout' : 'unreachable', this.relayCode));
    else this.done(new RelayedRequestError('failed', this.tooLarge ? 'TooLarge' : 'BadListenerResponse'));
    this.closeSoon();
    return this;
  }

  /** As a ServerResponse does: 'close' after the call that ended it has returned (the exchange finishes first). */
  private closeSoon(): void {
    queueMicrotask(() => this.emit('close'));
  }
}

/** An exchange that notes when the relay, rather than the listener, answers. */
class RelayedExchange extends HttpExchange {
  constructor(
    ctx: HybridContext,
    req: IncomingMessage,
    private readonly collected: CollectedResponse,
    entity: HybridEntity,
    routes: ListenerRoutes,
    requestTarget: string,
    log: Logger,
    /** The request's own bound: the answer may take that long, whatever timeouts.httpResponseMs (a sender's) says. */
    timeoutMs: number,
  ) {
    super(ctx, req, collected as unknown as ServerResponse, entity, routes, requestTarget, SERVICE_BUS_HEADER_ONLY, log, timeoutMs);
  }

  override fail(code: HybridErrorCode): void {
    this.collected.relayCode ??= code;
    super.fail(code);
  }

  /** The relay's own request has no connection to close. */
  protected override closeSenderConnection(): void {}
}

/** Sends one request through the relay's own HTTP mode to a listener of `entity`; resolves to its answer. */
export function relayRequest(
  ctx: HybridContext,
  entity: HybridEntity,
  routes: ListenerRoutes,
  requestTarget: string,
  init: RelayedRequestInit,
  log: Logger,
): Promise<RelayedAnswer> {
  return new Promise((resolve, reject) => {
    let settled = false;
    // Its time is up, or its caller stopped waiting (init.signal): the same end.
    const onAbort = () => settle(new RelayedRequestError('timeout', 'Timeout'));
    const timer = setTimeout(onAbort, init.timeoutMs);
    const settle = (outcome: RelayedAnswer | RelayedRequestError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      init.signal?.removeEventListener('abort', onAbort);
      // The exchange finishes when its response closes (a timeout here ends it).
      collected.destroy();
      if (outcome instanceof RelayedRequestError) reject(outcome);
      else resolve(outcome);
    };
    const collected = new CollectedResponse(init.maxResponseBytes, settle);
    const body = init.body ?? Buffer.alloc(0);
    const req = Readable.from(body.length > 0 ? [body] : []) as Readable & Partial<IncomingMessage>;
    const headers = { ...init.headers, 'content-length': String(body.length) };
    Object.assign(req, {
      method: init.method,
      url: requestTarget,
      headers,
      // What the exchange reads as a sender's raw head (its size on a route over the bus): without it, every
      // request routed to a listener on another edge failed ("rawHeaders is not iterable").
      rawHeaders: Object.entries(headers).flat(),
      // The body is all here: nothing of it is left unread when the answer comes (which closes a sender's connection).
      complete: true,
      // Never closes: the request ends with its exchange.
      socket: Object.assign(new EventEmitter(), { remoteAddress: '127.0.0.1', remotePort: 0 }),
    });
    new RelayedExchange(ctx, req as IncomingMessage, collected, entity, routes, requestTarget, log, init.timeoutMs).start();
    if (init.signal?.aborted) onAbort();
    else if (!settled) init.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
