// Client events as Azure Web PubSub delivers them to event handlers: one
// CloudEvents HTTP request in binary mode per event (docs/event-handlers.md).
// Headers: ce-specversion 1.0, ce-type azure.webpubsub.sys.{connect,
// connected, disconnected} or azure.webpubsub.user.{event}, ce-source
// /hubs/{hub}/client/{connectionId}, ce-id, ce-time, ce-awpsversion 1.0,
// ce-hub, ce-eventname, ce-connectionid, ce-userid, ce-subprotocol,
// ce-connectionstate, ce-signature (sha256={hex HMAC-SHA256 of the connection
// id} for each access key, comma-separated), webhook-request-origin.
//
// - connect is blocking: its answer decides the connection (connectOutcome);
//   a 4xx is passed to the client as that status, as Azure does.
// - connected and disconnected are fire-and-forget: queued per connection so
//   they arrive in order, each retried up to the handler's `retries` times.
// - a user event's 2xx answer acks it; a non-empty body is the reply.
// A handler that answers `ce-connectionState` to a blocking event (connect, a
// user event) sets the state later events of the connection carry; Azure:
// "Only blocking events can update the connection state".
// JSON travels as written: a json event's body is the client's data text, and
// an application/json reply is the handler's text, checked by a parse only
// (a re-encoded number loses digits: 12345678901234567890, 1.10, 1e400).
import { createHmac, randomUUID } from 'node:crypto';
import type { HubConfig, SystemEventName } from '../config/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { jsonTextOf } from '../validation/json-text.ts';
import { validateConnectResponse } from '../validation/schemas.ts';
import type { AbuseProtection } from './abuse-protection.ts';
import type { DataMessage, DataType } from './downstream.ts';
import {
  HandlerError,
  deliverToHandler,
  handlerForSystemEvent,
  handlerForUserEvent,
  handlersOf,
  type EventHandler,
  type HandlerResponse,
  type HandlerTransport,
} from './event-handlers.ts';
import { connectRefusalFor, type PubSubErrorCode } from './errors.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { CallLimit } from './call-limit.ts';

/** connected/disconnected deliveries (each with its retries) under way at once per edge, and waiting for a place. */
export const SYSTEM_EVENTS_IN_FLIGHT = 256;
export const SYSTEM_EVENTS_WAITING = 10000;
/** Of those, what one hub may take: the rest stay for the others (call-limit.ts). */
export const SYSTEM_EVENTS_IN_FLIGHT_PER_HUB = 192;
export const SYSTEM_EVENTS_WAITING_PER_HUB = 5000;

/** The connection an event is about. */
export interface EventSource {
  readonly id: string;
  readonly userId: string | null;
  /** The subprotocol the client uses, if any. */
  readonly subprotocol: string | undefined;
  /** ce-connectionState as a handler last set it. */
  states: string | undefined;
  /** connected/disconnected events still to deliver, in order. */
  systemEvents?: Promise<void>;
  /**
   * Aborts when the connection ends (not when a reliable session only lost its socket): its user events under way
   * at a handler are cut, as their answers have nowhere to go. Before, each stayed open for the handler's whole
   * timeoutMs (up to 300 s), one per client that sent an event and left (found by review).
   */
  readonly gone?: AbortSignal;
}

export type UserEventResult =
  | { ok: true; reply?: DataMessage }
  | { ok: false; code: 'NoUpstream' | 'UpstreamFailed'; detail: string };

/** What a connect event decided. */
export type ConnectOutcome =
  | { ok: true; userId?: string; groups: string[]; roles: string[]; subprotocol?: string }
  | { ok: false; code: PubSubErrorCode; detail: string; /** The status the client gets when not its code's (a connect handler's own 4xx). */ status?: number };

/** What the connect event tells the handler about the client (Azure's ConnectEventRequest body). */
export interface ConnectBody {
  claims: Record<string, string[]>;
  query: Record<string, string[]>;
  headers: Record<string, string[]>;
  subprotocols: string[];
  clientCertificates: { thumbprint: string; content: string }[];
}

const CONTENT_TYPES: Record<DataType, string> = {
  json: 'application/json',
  text: 'text/plain; charset=utf-8',
  binary: 'application/octet-stream',
  // As Azure sends an event whose data is protobuf ("the Content-Type for the CloudEvents HTTP request is application/x-protobuf").
  protobuf: 'application/x-protobuf',
};

/** Largest ce-connectionState kept for a connection. */
const MAX_STATE_BYTES = 4096;

/**
 * Header values must be visible ASCII: a value that is not, that has a `%` in
 * it, or that starts or ends with a space (HTTP clients trim those: user
 * ` bob ` arrived as `bob`), is percent-encoded whole, so that the encoding can
 * be undone and two values never look alike (user `é` and user `%C3%A9` did).
 * A lone surrogate (JSON can carry one) is encoded as U+FFFD.
 */
function headerSafe(value: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(value) && !value.startsWith(' ') && !value.endsWith(' ')
    ? value
    : encodeURIComponent(value.replace(LONE_SURROGATE, '\uFFFD'));
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function signature(accessKeys: string[], connectionId: string): string {
  return accessKeys.map((key) => `sha256=${createHmac('sha256', key).update(connectionId).digest('hex')}`).join(',');
}

/**
 * The body of a user event from its payload as the client sent it: the
 * data's JSON text (json, as written), UTF-8 text, or base64 decoded (binary, protobuf).
 */
export function userEventBody(dataType: DataType, payload: string): Buffer {
  if (dataType === 'binary' || dataType === 'protobuf') return Buffer.from(payload, 'base64');
  return Buffer.from(payload, 'utf8');
}

/** A handler's reply to a user event, as a message from the server, typed by its Content-Type. */
export function replyOf(contentType: string, body: Buffer): DataMessage {
  const type = contentType.split(';')[0].trim().toLowerCase();
  if (type === 'application/json') {
    const dataJson = jsonTextOf(body.toString('utf8'));
    if (dataJson !== undefined) return { from: 'server', dataType: 'json', dataJson };
    // Not JSON after all (or nested too deep for clients to parse): hand it on as text.
  }
  if (type === 'application/json' || type.startsWith('text/')) {
    return { from: 'server', dataType: 'text', dataJson: JSON.stringify(body.toString('utf8')) };
  }
  return { from: 'server', dataType: 'binary', dataJson: JSON.stringify(body.toString('base64')) };
}

/** A handler's text, short and on one line, for a refusal's message or a log. */
function snippet(body: Buffer): string {
  return body.subarray(0, 200).toString('utf8').replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
}

export interface EventDispatcherDeps {
  transport: HandlerTransport;
  protection: AbuseProtection;
  log: Logger;
  /** Largest handler answer (limits.pubsubMessageBytes). */
  maxAnswerBytes: number;
  /** A connection's state changed (a durable hub writes it into the session's checkpoint). */
  statesChanged(source: EventSource): void;
  /** The keys the hub's tokens may be signed with now (access key, secondary key, keys a rotation replaced): ce-signature carries one HMAC per key. */
  accessKeys(hub: HubConfig): string[];
  /** Counts an event delivered (or not) to a handler. */
  count(event: 'connect' | 'connected' | 'disconnected' | 'user', result: 'ok' | 'refused' | 'failed' | 'timeout'): void;
}

/** What a header value may hold (RFC 9110 5.5: visible characters, space and tab, obs-text). */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** How a delivery that threw counts. */
function failureOf(err: unknown): 'failed' | 'timeout' {
  return err instanceof HandlerError && err.kind === 'timeout' ? 'timeout' : 'failed';
}

export class EventDispatcher {
  /** Per hub config: a reloaded config brings its own. */
  private readonly handlers = new WeakMap<HubConfig, EventHandler[]>();

  constructor(private readonly deps: EventDispatcherDeps) {}

  /** The handlers of a hub, built once per hub config. */
  handlersFor(hub: HubConfig): EventHandler[] {
    let list = this.handlers.get(hub);
    if (!list) this.handlers.set(hub, (list = handlersOf(hub)));
    return list;
  }

  /** The hub's handler settings changed in place (a reload): built again at their next use. */
  forgetHandlers(hub: HubConfig): void {
    this.handlers.delete(hub);
  }

  hasSystemEvent(hub: HubConfig, event: SystemEventName): boolean {
    return handlerForSystemEvent(this.handlersFor(hub), event) !== undefined;
  }

  private headers(hub: HubConfig, source: EventSource, type: string, event: string, contentType: string, id: string = randomUUID()): Record<string, string> {
    const headers: Record<string, string> = {
      'content-type': contentType,
      'webhook-request-origin': this.deps.protection.origin,
      'ce-specversion': '1.0',
      'ce-type': type,
      'ce-source': `/hubs/${hub.name}/client/${source.id}`,
      'ce-id': id,
      'ce-time': new Date().toISOString(),
      'ce-awpsversion': '1.0',
      'ce-hub': hub.name,
      'ce-eventname': event,
      'ce-connectionid': source.id,
      'ce-signature': signature(this.deps.accessKeys(hub), source.id),
    };
    if (source.userId !== null) headers['ce-userid'] = headerSafe(source.userId);
    if (source.subprotocol) headers['ce-subprotocol'] = source.subprotocol;
    if (source.states) headers['ce-connectionstate'] = source.states;
    return headers;
  }

  /** Sends one event; its answer (within `timeoutMs`, the handler's own unless less is left). */
  private post(handler: EventHandler, hub: HubConfig, event: string, headers: Record<string, string>, body: Buffer, timeoutMs?: number, signal?: AbortSignal): Promise<HandlerResponse> {
    const url = handler.urlFor(hub.name, event);
    return deliverToHandler(
      this.deps.transport,
      this.deps.protection,
      handler,
      url,
      {
        headers,
        body,
        maxResponseBytes: this.deps.maxAnswerBytes,
      },
      timeoutMs,
      signal,
    );
  }

  /**
   * The connection's state from a blocking event's 2xx answer (connect, a
   * user event). Not from connected or disconnected: Azure ignores a state
   * their answers carry, as a handler cannot know when they arrive.
   */
  private takeState(hub: HubConfig, source: EventSource, answer: HandlerResponse): void {
    const state = answer.header('ce-connectionstate');
    if (state !== undefined && answer.status >= 200 && answer.status < 300) {
      // Sent back as a header with each later event: one a header cannot carry (an hc:// listener's answer, JSON,
      // may hold any character) would make each of them fail, so it is not taken.
      if (!HEADER_VALUE.test(state)) this.deps.log.warn({ event: 'pubsub.event_state_refused', hub: hub.name, connectionId: source.id, reason: 'not a header value' });
      else if (Buffer.byteLength(state) <= MAX_STATE_BYTES) {
        const next = state === '' ? undefined : state;
        if (next !== source.states) {
          source.states = next;
          this.deps.statesChanged(source);
        }
      } else this.deps.log.warn({ event: 'pubsub.event_state_too_large', hub: hub.name, connectionId: source.id });
    }
  }

  // --- user events ------------------------------------------------------------------

  async userEvent(hub: HubConfig, source: EventSource, event: string, contentType: string, body: Buffer): Promise<UserEventResult> {
    const handler = handlerForUserEvent(this.handlersFor(hub), event);
    if (!handler) return { ok: false, code: 'NoUpstream', detail: `no event handler of hub '${hub.name}' takes '${event}'` };
    let answer: HandlerResponse;
    try {
      const headers = this.headers(hub, source, `azure.webpubsub.user.${event}`, event, contentType);
      answer = await this.untilDrained((signal) => this.post(handler, hub, event, headers, body, undefined, signal), source.gone);
    } catch (err) {
      // Cut because the connection ended: no failure of the handler's, and nobody to tell.
      if (source.gone?.aborted) return { ok: false, code: 'UpstreamFailed', detail: 'the connection ended' };
      this.deps.count('user', failureOf(err));
      this.logFailure(hub, source, event, handler, (err as Error).message);
      return { ok: false, code: 'UpstreamFailed', detail: `event handler ${(err as Error).message}` };
    }
    this.takeState(hub, source, answer);
    this.deps.count('user', answer.status >= 200 && answer.status < 300 ? 'ok' : 'failed');
    if (answer.status < 200 || answer.status > 299) {
      const said = answer.body.length > 0 ? `: ${snippet(answer.body)}` : '';
      // A 4xx says why the event was refused (web-pubsub-express's fail(400, detail)): the client is told. Any
      // other answer's body is the handler's own trouble (an error page, a stack trace): logged, not told.
      if (answer.status >= 400 && answer.status <= 499) return { ok: false, code: 'UpstreamFailed', detail: `event handler answered ${answer.status}${said}` };
      this.logFailure(hub, source, event, handler, `answered ${answer.status}${said}`);
      return { ok: false, code: 'UpstreamFailed', detail: `event handler answered ${answer.status}` };
    }
    if (answer.body.length === 0) return { ok: true };
    return { ok: true, reply: replyOf(answer.header('content-type') ?? 'application/octet-stream', answer.body) };
  }

  /** A user event with the content type of a JSON client's dataType; `payload` as userEventBody takes it. */
  dataEvent(hub: HubConfig, source: EventSource, event: string, dataType: DataType, payload: string): Promise<UserEventResult> {
    return this.userEvent(hub, source, event, CONTENT_TYPES[dataType], userEventBody(dataType, payload));
  }

  // --- connect ------------------------------------------------------------------------

  /**
   * The blocking connect event: a 2xx answer (204 or a JSON object, empty
   * allowed) admits the connection with what it names; a 4xx refuses it with
   * that status (Azure: "the response from Upstream will be returned as the
   * response for the client request", whatever the 4xx);
   * anything else (another status, no answer in time, a body that is not
   * such an object, abuse protection refusing) refuses it with a 500-class
   * status and a log line.
   */
  async connect(hub: HubConfig, source: EventSource, body: ConnectBody): Promise<ConnectOutcome> {
    const handler = handlerForSystemEvent(this.handlersFor(hub), 'connect');
    if (!handler) return { ok: true, groups: [], roles: [] };
    const headers = this.headers(hub, source, 'azure.webpubsub.sys.connect', 'connect', 'application/json; charset=utf-8');
    let answer: HandlerResponse;
    try {
      answer = await this.untilDrained((signal) => this.post(handler, hub, 'connect', headers, Buffer.from(JSON.stringify(body)), undefined, signal));
    } catch (err) {
      this.deps.count('connect', failureOf(err));
      this.logFailure(hub, source, 'connect', handler, (err as Error).message);
      const timeout = err instanceof HandlerError && err.kind === 'timeout';
      return { ok: false, code: timeout ? 'EventHandlerTimeout' : 'EventHandlerFailed', detail: `connect: event handler ${(err as Error).message}` };
    }
    this.takeState(hub, source, answer);
    const refusal = connectRefusalFor(answer.status);
    if (refusal) {
      this.deps.count('connect', 'refused');
      this.deps.log.info({ event: 'pubsub.connect_refused', hub: hub.name, connectionId: source.id, status: answer.status });
      return { ok: false, code: refusal.code, status: refusal.status, detail: snippet(answer.body) || `the event handler refused the connection (${answer.status})` };
    }
    if (answer.status < 200 || answer.status > 299) {
      this.deps.count('connect', 'failed');
      this.logFailure(hub, source, 'connect', handler, `answered ${answer.status}`);
      return { ok: false, code: 'EventHandlerFailed', detail: `connect: event handler answered ${answer.status}` };
    }
    if (answer.status === 204 || answer.body.length === 0) {
      this.deps.count('connect', 'ok');
      return { ok: true, groups: [], roles: [] };
    }
    let decided: unknown;
    try {
      decided = parseJson(answer.body.toString('utf8'));
    } catch {
      decided = undefined;
    }
    if (!validateConnectResponse(decided)) {
      this.deps.count('connect', 'failed');
      this.logFailure(hub, source, 'connect', handler, 'answered a body that is not a connect response');
      return { ok: false, code: 'EventHandlerFailed', detail: 'connect: the event handler answered a body that is not a connect response' };
    }
    this.deps.count('connect', 'ok');
    const d = decided as { userId?: string | null; groups?: string[] | null; roles?: string[] | null; subprotocol?: string | null };
    // Null or empty is "not set" (Azure reads the user id "if it exists"; .NET's SDK writes null for every property
    // not set): the token's user stays. Before, null and "" made the connection anonymous and null lists were refused.
    return {
      ok: true,
      userId: d.userId === undefined || d.userId === null || d.userId === '' ? undefined : d.userId,
      groups: d.groups ?? [],
      roles: d.roles ?? [],
      subprotocol: d.subprotocol || undefined,
    };
  }

  // --- connected, disconnected -----------------------------------------------------------

  /**
   * When the relay drains (beginShutdown, a performance.now() time): connected and disconnected events are sent until then and not
   * after; what is left is logged as lost. Before, their retries outlived the drain (tens of seconds past
   * timeouts.shutdownMs with a silent handler, after relay.stopped) and what a kill then cut went unsaid.
   */
  private stopBy: number | undefined;
  /** Connections whose connected/disconnected queue is not done: the drain waits for them. */
  private readonly queued = new Set<EventSource>();

  /** Wakes the connected/disconnected retries waiting out retryDelayMs: the drain decides whether each still fits. */
  private readonly retryWaits = new Set<() => void>();

  beginShutdown(deadline: number): void {
    this.stopBy = deadline;
    for (const wake of [...this.retryWaits]) wake();
    // Calls already under way when the drain began end at its deadline too (their timeout was the handler's): before,
    // a connect or user event to a silent handler kept the process up to timeoutMs after relay.stopped.
    setTimeout(() => {
      for (const attempt of this.attempts) attempt.abort();
      this.systemCalls.refuseWaiting();
      this.deps.protection.close();
    }, Math.max(0, deadline - performance.now())).unref();
  }

  /** Bounds connected/disconnected deliveries: they outlive their connections, so nothing else does. */
  private readonly systemCalls = new CallLimit(SYSTEM_EVENTS_IN_FLIGHT, SYSTEM_EVENTS_WAITING, SYSTEM_EVENTS_IN_FLIGHT_PER_HUB, SYSTEM_EVENTS_WAITING_PER_HUB);

  /** The calls to handlers under way, each ended at the drain's deadline (one controller per call: nothing long-lived collects listeners). */
  private readonly attempts = new Set<AbortController>();

  /** Runs one call to a handler with a signal the drain's deadline aborts, and `also` (the connection gone), if given. */
  private async untilDrained<T>(call: (signal: AbortSignal) => Promise<T>, also?: AbortSignal): Promise<T> {
    const attempt = new AbortController();
    if (this.missesDrain(performance.now()) || also?.aborted) attempt.abort();
    const cut = () => attempt.abort();
    also?.addEventListener('abort', cut, { once: true });
    this.attempts.add(attempt);
    try {
      return await call(attempt.signal);
    } finally {
      also?.removeEventListener('abort', cut);
      this.attempts.delete(attempt);
    }
  }

  /** How many connections still have connected or disconnected events to send. */
  get systemEventsPending(): number {
    return this.queued.size;
  }

  /** Queues a connected or disconnected event behind the connection's earlier ones; never rejects. */
  systemEvent(hub: HubConfig, source: EventSource, event: 'connected' | 'disconnected', body: object): void {
    const handler = handlerForSystemEvent(this.handlersFor(hub), event);
    if (!handler) return;
    const previous = source.systemEvents ?? Promise.resolve();
    const next = previous.then(() => this.deliverWithRetries(handler, hub, source, event, body));
    source.systemEvents = next;
    this.queued.add(source);
    void next.finally(() => {
      if (source.systemEvents !== next) return;
      source.systemEvents = undefined;
      this.queued.delete(source);
    });
  }

  /**
   * Each try takes a place of systemCalls for itself, under its hub's key, and gives it back before the wait for the
   * next (before, one place was held through every retry and its delay: about 43 s by default for a silent handler).
   */
  private async deliverWithRetries(handler: EventHandler, hub: HubConfig, source: EventSource, event: 'connected' | 'disconnected', body: object): Promise<void> {
    const { retries, retryDelayMs } = handler.config;
    const payload = Buffer.from(JSON.stringify(body));
    const key = asciiLowerCase(hub.name);
    // One event, one ce-id, however many tries: a handler can tell a retry from a second event (CloudEvents: id and source).
    const id = randomUUID();
    for (let attempt = 0; ; attempt++) {
      const waitingBefore = this.systemCalls.waitingCount;
      const hubWaitingBefore = this.systemCalls.waitingFor(key);
      if (!(await this.systemCalls.acquire(key))) {
        this.deps.count(event, 'failed');
        const why = this.missesDrain(performance.now())
          ? 'the relay shut down'
          : hubWaitingBefore >= SYSTEM_EVENTS_WAITING_PER_HUB
            ? `this hub's share under way and ${hubWaitingBefore} of its events waiting`
            : `${SYSTEM_EVENTS_IN_FLIGHT} under way and ${waitingBefore} waiting`;
        return this.logFailure(hub, source, event, handler, `not sent: ${why}${attempt > 0 ? ` (after ${attempt} attempts)` : ''}`);
      }
      const left = this.stopBy === undefined ? Infinity : this.stopBy - performance.now();
      if (left <= 0) {
        this.systemCalls.release(key);
        this.deps.count(event, 'failed');
        return this.logFailure(hub, source, event, handler, `not sent: the relay shut down${attempt > 0 ? ` (after ${attempt} attempts)` : ''}`);
      }
      let problem: string;
      let result: 'failed' | 'timeout' = 'failed';
      try {
        const headers = this.headers(hub, source, `azure.webpubsub.sys.${event}`, event, 'application/json; charset=utf-8', id);
        // Its ce-connectionState, if any, is ignored (takeState): not a blocking event.
        const answer = await this.untilDrained((signal) => this.post(handler, hub, event, headers, payload, Math.min(handler.config.timeoutMs, left), signal));
        if (answer.status >= 200 && answer.status < 300) return this.deps.count(event, 'ok');
        problem = `answered ${answer.status}`;
      } catch (err) {
        problem = (err as Error).message;
        result = failureOf(err);
      } finally {
        this.systemCalls.release(key);
      }
      // A retry due at or past the drain's deadline is not made. A drain that begins while this waits for it wakes
      // the wait, and the event is logged as lost then (before, it slept on past relay.stopped, never said lost, and
      // the drain waited for it).
      const dueAt = performance.now() + retryDelayMs;
      if (attempt < retries && !this.missesDrain(dueAt)) await this.untilDueOrDrain(dueAt);
      const stopping = this.missesDrain(dueAt);
      if (attempt >= retries || stopping) {
        this.deps.count(event, result);
        return this.logFailure(hub, source, event, handler, `${problem} (after ${attempt + 1} attempts${stopping && attempt < retries ? '; not retried: the relay shut down' : ''})`);
      }
    }
  }

  /** Whether something due at `at` (a performance.now() time) comes at or after the drain's deadline. */
  private missesDrain(at: number): boolean {
    return this.stopBy !== undefined && at >= this.stopBy;
  }

  /** Waits until `dueAt`, or less: until the drain begins with `dueAt` at or past its deadline. */
  private async untilDueOrDrain(dueAt: number): Promise<void> {
    await this.retryWait(dueAt - performance.now());
    if (!this.missesDrain(dueAt) && performance.now() < dueAt) await new Promise((resolve) => setTimeout(resolve, dueAt - performance.now()));
  }

  /** Waits `ms`, or until the drain begins. */
  private retryWait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.retryWaits.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.retryWaits.add(wake);
    });
  }

  private logFailure(hub: HubConfig, source: EventSource, event: string, handler: EventHandler, reason: string): void {
    this.deps.log.warn({ event: 'pubsub.event_handler_failed', hub: hub.name, connectionId: source.id, eventName: event, handler: handler.label, reason });
  }
}
