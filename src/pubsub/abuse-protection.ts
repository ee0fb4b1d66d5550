// Abuse protection, the CloudEvents webhook validation handshake Azure Web
// PubSub performs (docs/event-handlers.md, "Abuse protection"): before the
// first delivery to a handler URL the relay sends
//   OPTIONS {url}
//   WebHook-Request-Origin: {publicUrl host}
// and delivers only when the answer carries WebHook-Allowed-Origin naming
// that origin, or `*` (several values, in one header or many, are read one by
// one; @azure/web-pubsub-express answers with its allowedEndpoints' hosts).
// The consent is the receiving service's, so it is kept per origin (scheme,
// host and port): URLs that differ by {event}, which a client chooses, cost
// neither another OPTIONS nor another entry. An origin that passed is
// remembered until revalidate() (a configuration reload); one that did not is
// asked again at its next event, and concurrent events wait for one check.
import { setMaxListeners } from 'node:events';
import { HandlerError, type HandlerTransport, type UrlValidation } from './event-handlers.ts';

/**
 * The origin a handler URL is validated for: scheme, host and port; for
 * `hc://{entity}/...` (which WHATWG URLs give the origin "null") the scheme
 * and the entity, whose name is case-insensitive; the URL itself when it has no host.
 */
function originOf(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.origin !== 'null') return parsed.origin;
    return parsed.host ? `${parsed.protocol}//${parsed.host.toLowerCase()}` : url;
  } catch {
    return url;
  }
}

/**
 * A controller whose signal takes one listener per check under way (one per
 * origin at a time, so as many as the configured handlers have origins):
 * Node's default of 10 would warn of a leak that is not one.
 */
function abortWithoutListenerLimit(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/**
 * Waits for `check` for at most `ms`, or until `signal` aborts (HandlerError 'timeout' either way). It hears `check`
 * first, on every path: a check that fails after this call gave up is no unhandled rejection (that ended the process).
 */
function withinOwnTime(check: Promise<void>, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const onAbort = () => finish(() => reject(new HandlerError('timeout', 'no answer before the relay shut down')));
    const timer = setTimeout(() => finish(() => reject(new HandlerError('timeout', `no answer within ${ms} ms (abuse protection)`))), ms);
    check.then(
      () => finish(resolve),
      (err: unknown) => finish(() => reject(err)),
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Largest answer read from a validation request. */
const MAX_ANSWER_BYTES = 4096;

/**
 * Origins remembered as allowed, at most: past it the one used longest ago is checked again before its next
 * event (least recently used; before, the one allowed longest ago, so an origin every event used was checked
 * again once 10,000 others had come after it). A URL template with `{event}` in its host
 * (`http://{event}.hooks.example/`) makes one origin per event name, which clients choose: kept for good, each
 * was a little memory for every name ever sent.
 */
export const MAX_ALLOWED_ORIGINS = 10_000;

export class AbuseProtection implements UrlValidation {
  private readonly allowed = new Set<string>();
  /** The check under way per origin, and when its time runs out. */
  private readonly checking = new Map<string, { done: Promise<void>; deadline: number }>();
  /** Ends the checks under way when the relay has drained (close()). */
  private readonly stopped = abortWithoutListenerLimit();

  constructor(
    /** What the relay says it is: the host (and port) of publicUrl. */
    readonly origin: string,
    private readonly transport: HandlerTransport,
    private readonly onResult: (url: string, allowed: boolean, detail: string) => void,
    private readonly maxAllowed = MAX_ALLOWED_ORIGINS,
  ) {}

  /**
   * Resolves once `url` may receive events; rejects with HandlerError('not allowed' or why the check failed), or
   * 'timeout' past this call's `timeoutMs` or when `signal` aborts. One check per origin is shared by the calls that
   * need it meanwhile; each waits for it within its own time (before, a connect with timeoutMs 500 was held 30 s by a
   * check a user event with 30 s had begun).
   */
  check(url: string, timeoutMs: number, authorization?: string, signal?: AbortSignal): Promise<void> {
    const origin = originOf(url);
    if (this.allowed.has(origin)) {
      this.used(origin);
      return Promise.resolve();
    }
    return withinOwnTime(this.shared(url, origin, Date.now() + timeoutMs, authorization), timeoutMs, signal);
  }

  /** The origin's check under way, or a new one bounded by `deadline`. */
  private shared(url: string, origin: string, deadline: number, authorization: string | undefined): Promise<void> {
    if (this.allowed.has(origin)) return Promise.resolve();
    const pending = this.checking.get(origin);
    if (!pending) {
      const done = this.validate(url, origin, deadline - Date.now(), authorization).finally(() => this.checking.delete(origin));
      this.checking.set(origin, { done, deadline });
      return done;
    }
    if (pending.deadline >= deadline) return pending.done;
    // Begun by a call with less time than this one: when its time runs out, this call asks again with what it has left
    // (before, a call with timeoutMs 30 s failed at a 500 ms connect's bound). Each round waits for a real timeout.
    return pending.done.catch((err: unknown) => {
      if (!(err instanceof HandlerError) || err.kind !== 'timeout' || deadline <= Date.now() || this.stopped.signal.aborted) throw err;
      return this.shared(url, origin, deadline, authorization);
    });
  }

  /**
   * Marks `origin` as the most recently used: last in the set's order, which eviction reads from the front. Only
   * once the set is over half its bound: the usual handful of origins is never reordered, so an event costs no
   * table churn (a Set's deleted slots are swept by rebuilding its table).
   */
  private used(origin: string): void {
    if (this.allowed.size <= this.maxAllowed / 2) return;
    this.allowed.delete(origin);
    this.allowed.add(origin);
  }

  /** Ends the checks under way (the relay has drained): their requests would keep the process up to their timeout. */
  close(): void {
    this.stopped.abort();
  }

  /** Forgets every result: each URL is validated again before its next event. */
  revalidate(): void {
    this.allowed.clear();
  }

  private async validate(url: string, origin: string, timeoutMs: number, authorization: string | undefined): Promise<void> {
    const headers: Record<string, string> = { 'webhook-request-origin': this.origin, 'ce-awpsversion': '1.0' };
    if (authorization) headers.authorization = authorization;
    let answer;
    try {
      answer = await this.transport.send(url, { method: 'OPTIONS', headers, timeoutMs, maxResponseBytes: MAX_ANSWER_BYTES, signal: this.stopped.signal });
    } catch (err) {
      this.onResult(url, false, (err as Error).message);
      throw err;
    }
    const values = (answer.header('webhook-allowed-origin') ?? '').split(',').map((v) => v.trim().toLowerCase());
    if (answer.status >= 200 && answer.status < 300 && values.some((v) => v === '*' || v === this.origin.toLowerCase())) {
      if (this.allowed.size >= this.maxAllowed) this.allowed.delete(this.allowed.values().next().value as string);
      this.allowed.add(origin);
      this.onResult(url, true, 'allowed');
      return;
    }
    const detail = `abuse protection: the handler answered ${answer.status} without WebHook-Allowed-Origin naming ${this.origin}`;
    this.onResult(url, false, detail);
    throw new HandlerError('not allowed', detail);
  }
}
