// A hub's event handlers as Azure Web PubSub has them (docs/event-handlers.md):
// `pubsub.hubs[].eventHandlers`, in order; a user event goes to the first
// handler whose userEventPattern names it, a system event to the first that
// lists it. The older `upstream` key is read as one handler taking every user
// event. A handler's urlTemplate is http(s)://... (a POST with fetch) or
// hc://{entity}/... (a relayed HTTP request to that hybrid connection's
// listener, on any edge: RelayedRequests, implemented by hybrid/ and wired in
// server/relay-server.ts). Before the first delivery to a URL, the abuse
// protection handshake (abuse-protection.ts) must have let it through.
import type { EventHandlerConfig, HubConfig, SystemEventName } from '../config/types.ts';

/** An HTTP request to a handler. Header names are lower-case. */
export interface HandlerRequest {
  method: 'POST' | 'OPTIONS';
  headers: Record<string, string>;
  body?: Buffer;
  timeoutMs: number;
  /** Larger answers fail (HandlerError 'failed'). */
  maxResponseBytes: number;
  /** Ends the request early (the relay's drain deadline), as its timeout would. */
  signal?: AbortSignal;
}

/** A handler's answer; `header` reads a header by lower-case name, several values joined with ', '. */
export interface HandlerResponse {
  status: number;
  header(name: string): string | undefined;
  body: Buffer;
}

/**
 * Relayed HTTP requests to the listener of a hybrid connection, as a sender
 * would make them (server/relay-server.ts wires hybrid/'s implementation).
 * Rejects with HandlerError when there is no answer.
 */
export interface RelayedRequests {
  request(entity: string, requestTarget: string, request: HandlerRequest): Promise<HandlerResponse>;
}

/** A delivery that got no usable answer: the handler was unreachable, timed out, or refused by abuse protection. */
export class HandlerError extends Error {
  constructor(
    readonly kind: 'unreachable' | 'timeout' | 'failed' | 'not allowed',
    message: string,
  ) {
    super(message);
  }
}

export class EventHandler {
  private readonly userEvents: Set<string> | 'all';

  constructor(
    readonly config: EventHandlerConfig,
    /** Where it came from, for logs: `eventHandlers[0]` or `upstream`. */
    readonly label: string,
    /** Abuse protection applies (not to the older `upstream`, which never had it and keeps working as it did). */
    readonly validated = true,
  ) {
    const pattern = config.userEventPattern.trim();
    this.userEvents = pattern === '*' ? 'all' : new Set(pattern.split(',').map((e) => e.trim()).filter((e) => e !== ''));
  }

  takesUserEvent(event: string): boolean {
    return this.userEvents === 'all' || this.userEvents.has(event);
  }

  takesSystemEvent(event: SystemEventName): boolean {
    return this.config.systemEvents.includes(event);
  }

  /** The URL for one event of one hub: {hub} and {event} replaced, percent-encoded. */
  urlFor(hub: string, event: string): string {
    return this.config.urlTemplate.replace(/\{hub\}/g, encodeURIComponent(hub)).replace(/\{event\}/g, encodeURIComponent(event));
  }
}

/** The handlers of a hub in order, from `eventHandlers` or, read as one handler, the older `upstream`. */
export function handlersOf(hub: HubConfig): EventHandler[] {
  if (hub.eventHandlers) return hub.eventHandlers.map((h, i) => new EventHandler(h, `eventHandlers[${i}]`));
  if (!hub.upstream) return [];
  const migrated: EventHandlerConfig = {
    urlTemplate: hub.upstream.url,
    userEventPattern: '*',
    systemEvents: [],
    timeoutMs: hub.upstream.timeoutMs,
    retries: 0,
    retryDelayMs: 1000,
  };
  return [new EventHandler(migrated, 'upstream', false)];
}

export function handlerForUserEvent(handlers: readonly EventHandler[], event: string): EventHandler | undefined {
  return handlers.find((h) => h.takesUserEvent(event));
}

export function handlerForSystemEvent(handlers: readonly EventHandler[], event: SystemEventName): EventHandler | undefined {
  return handlers.find((h) => h.takesSystemEvent(event));
}

/** Sends requests to handlers: over HTTP, or relayed to a hybrid connection's listener. */
export class HandlerTransport {
  /** Set once the composition root has wired hybrid connections in. */
  relayed: RelayedRequests | undefined;

  async send(url: string, request: HandlerRequest): Promise<HandlerResponse> {
    const parsed = new URL(url);
    if (parsed.protocol === 'hc:') {
      if (!this.relayed) throw new HandlerError('unreachable', 'hc:// handlers need hybrid connections on this edge');
      const entity = decodeURIComponent(parsed.host);
      const target = `/${encodeURIComponent(entity)}${parsed.pathname === '/' ? '' : parsed.pathname}${parsed.search}`;
      try {
        const answer = this.relayed.request(entity, target, request);
        if (!request.signal) return await answer;
        const signal = request.signal;
        let stop: (() => void) | undefined;
        try {
          return await Promise.race([
            answer,
            new Promise<never>((_, reject) => {
              stop = () => reject(new HandlerError('timeout', 'no answer before the relay shut down'));
              if (signal.aborted) stop();
              else signal.addEventListener('abort', stop, { once: true });
            }),
          ]);
        } finally {
          if (stop) signal.removeEventListener('abort', stop);
        }
      } catch (err) {
        if (err instanceof HandlerError) throw err;
        const kind = (err as { kind?: unknown }).kind;
        throw new HandlerError(kind === 'timeout' || kind === 'failed' ? kind : 'unreachable', (err as Error).message);
      }
    }
    return fetchHandler(url, request);
  }
}

async function fetchHandler(url: string, request: HandlerRequest): Promise<HandlerResponse> {
  const deadline = new RequestDeadline(request.timeoutMs, request.signal);
  let response: Response;
  let body: Buffer;
  try {
    response = await fetch(url, {
      method: request.method,
      headers: request.headers,
      body: request.body ? new Uint8Array(request.body) : undefined,
      signal: deadline.signal,
      redirect: 'manual',
    });
    if (Number(response.headers.get('content-length') ?? 0) > request.maxResponseBytes) {
      await response.body?.cancel();
      throw new HandlerError('failed', 'answer too large');
    }
    body = await readCapped(response, request.maxResponseBytes);
  } catch (err) {
    if (err instanceof HandlerError) throw err;
    const name = (err as Error).name;
    if (name === 'TimeoutError' || name === 'AbortError') throw new HandlerError('timeout', `no answer within ${request.timeoutMs} ms`);
    throw new HandlerError('unreachable', `unreachable: ${(err as Error).message}`);
  } finally {
    deadline.end();
  }
  const headers = response.headers;
  return { status: response.status, header: (name) => headers.get(name) ?? undefined, body };
}

/**
 * A request's signal: aborted after `ms` (a TimeoutError) or when `also`
 * aborts, whichever comes first; end() once the answer is read. Its own
 * timer holds it. Before, `AbortSignal.any([AbortSignal.timeout(ms), also])`:
 * on Node 20 the combined signal holds its sources only weakly, so a garbage
 * collection while the handler was silent took the timeout with it and the
 * request waited for as long as the handler did (a connect with no answer
 * hung until the drain).
 */
class RequestDeadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly onAbort = () => this.controller.abort(this.also?.reason);

  constructor(
    ms: number,
    private readonly also?: AbortSignal,
  ) {
    this.timer = setTimeout(() => this.controller.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')), ms);
    // Like AbortSignal.timeout: a request in flight does not hold the process up on its own.
    this.timer.unref();
    if (also?.aborted) this.onAbort();
    else also?.addEventListener('abort', this.onAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  end(): void {
    clearTimeout(this.timer);
    this.also?.removeEventListener('abort', this.onAbort);
  }
}

/** Reads a body, giving up past `max` bytes. */
async function readCapped(response: Response, max: number): Promise<Buffer> {
  if (!response.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > max) {
      await response.body.cancel().catch(() => undefined);
      throw new HandlerError('failed', 'answer too large');
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks, size);
}

/**
 * Abuse protection as delivery needs it (abuse-protection.ts): resolves once a URL may receive events, within
 * `timeoutMs` of this call or until `signal` aborts (rejecting with HandlerError 'timeout'), whoever began the check.
 */
export interface UrlValidation {
  check(url: string, timeoutMs: number, authorization?: string, signal?: AbortSignal): Promise<void>;
}

/** Delivers one request to a handler's URL, once abuse protection has let the URL through. */
export async function deliverToHandler(
  transport: HandlerTransport,
  protection: UrlValidation,
  handler: EventHandler,
  url: string,
  request: Omit<HandlerRequest, 'timeoutMs' | 'method'>,
  /** Less than the handler's timeoutMs when the answer is needed sooner (the relay drains). */
  timeoutMs = handler.config.timeoutMs,
  /** Aborts it at once (the drain's deadline came). */
  signal?: AbortSignal,
): Promise<HandlerResponse> {
  const headers = { ...request.headers };
  if (handler.config.auth?.type === 'bearer') headers.authorization = `Bearer ${handler.config.auth.token}`;
  // The check and the event share timeoutMs (before, each had all of it: a connect waited up to twice as long).
  const deadline = Date.now() + timeoutMs;
  if (handler.validated) await protection.check(url, timeoutMs, headers.authorization, signal);
  const left = deadline - Date.now();
  if (left <= 0) throw new HandlerError('timeout', `no answer within ${timeoutMs} ms (abuse protection took it all)`);
  return transport.send(url, { ...request, headers, method: 'POST', timeoutMs: left, ...(signal ? { signal } : {}) });
}
