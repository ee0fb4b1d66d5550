// One listener's control channel (sb-hc-action=listen): the relay pushes
// `accept` and `request` notices down it; the listener sends `renewToken` and
// `response` messages up it, a `response` with a body being followed by that
// body as one binary message. Every text message is checked against
// schemas/hc-listener-message.schema.json; anything else closes the channel
// with 1008, an oversized one with 1009 (control-socket.ts), except a
// `response` that names its request: only that request fails (502
// BadListenerResponse), as one bad answer over a rendezvous socket does. Notices
// sent during one turn of the event loop leave in one write: the channel's
// socket is corked from the first until the turn ends. The relay frames them
// itself, each written whole to the socket as it is sent; control-socket.ts
// reads the channel and writes its pings, pongs and close to the same socket,
// so nothing may be held back: a frame held past one of those would be split
// by it or follow a close frame.
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { HttpResponseHead } from '../bus/messages.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { describeErrors, validateListenerMessage } from '../validation/schemas.ts';
import type { HybridEntity } from './entity-catalog.ts';
import { LogAllowance } from '../telemetry/log-allowance.ts';
import { HYBRID_ERRORS, type HybridErrorCode } from './errors.ts';
import { OP_BINARY, encodeFrameHeader, encodeTextFrame } from '../websocket/frames.ts';
import { TurnCork } from '../websocket/turn-cork.ts';
import { TransientMap } from '../collections/transient-map.ts';
import { ControlSocket, type ControlMessageLimits } from './control-socket.ts';

/** A listener's answer to an HTTP request: the same shape crosses the bus (bus/messages.ts). */
export type ListenerResponse = HttpResponseHead;

/**
 * A `response` that passed its schema, its statusCode a number: Azure's
 * protocol document writes it as a string in its example ("200"), which the
 * schema takes as three digits. Before, such an answer failed 502.
 */
export function listenerResponseOf(validated: { response: unknown }): ListenerResponse {
  const response = validated.response as Omit<ListenerResponse, 'statusCode'> & { statusCode: number | string };
  if (typeof response.statusCode === 'string') response.statusCode = Number(response.statusCode);
  return response as ListenerResponse;
}

export interface ControlChannelHooks {
  /** Checks a renewed token; returns its expiry (unix s) or an error code. */
  renewToken(channel: ControlChannel, token: string): number | HybridErrorCode;
  /** A response arrived; returns where its body goes when one follows. */
  response(channel: ControlChannel, response: ListenerResponse): ((body: Buffer) => void) | undefined;
  /** A response naming request `requestId` failed its schema: that request fails, the channel stays. */
  badResponse(channel: ControlChannel, requestId: string, why: string): void;
  /**
   * The relay began closing the channel (its closing handshake may take timeouts.closeHandshakeMs): nothing new is
   * routed to it. `why` is the relay's reason, when it gave one of its own (closeWith).
   */
  closing(channel: ControlChannel, why: HybridErrorCode | undefined): void;
  closed(channel: ControlChannel, code: number): void;
  /** The channel is being dropped: the listener does not read what is queued for it. */
  notReading(channel: ControlChannel): void;
}

/** What a channel's outstanding HTTP requests must be able to do when it closes. */
export interface ChannelExchange {
  /** The listener answered on the control channel; returns where the body goes when one follows. */
  onControlResponse(response: ListenerResponse): ((body: Buffer) => void) | undefined;
  /** The listener answered with a response the relay cannot use (502 BadListenerResponse). */
  badResponse(): void;
  listenerLost(): void;
}

export class ControlChannel {
  readonly id = randomUUID();
  lastSeen = Date.now();
  /** Requests sent to this listener and not yet answered, by request id (a TransientMap, not a Map: transient-map.ts says why). */
  readonly exchanges = new TransientMap<ChannelExchange>();
  /** Lines the listener's mistakes may write (log-allowance.ts): not one per message of a loop. */
  readonly complaints = new LogAllowance();
  /** Lines its token renewals may write, apart: a listener's mistakes do not hide them, nor they its mistakes. */
  private readonly renewals = new LogAllowance();
  /** The channel was refused for a message over limits.controlMessageBytes, or in more parts than it allows. */
  overLimit = false;
  private bodyConsumer: ((body: Buffer) => void) | undefined;
  private closed = false;
  /** Reads the channel's frames and writes its pings, pongs and close. */
  private readonly wire: ControlSocket;
  /** Corks the channel's socket while notices of one turn gather. */
  private readonly socketCork: TurnCork;

  constructor(
    /** The channel's socket, its upgrade answered (TLS: its client certificate is checked again when the CAs change). */
    readonly socket: Duplex,
    /** What was read past the upgrade request. */
    head: Buffer,
    /** Its messages' limits, from limits.controlMessageBytes when it opened. */
    messageLimits: ControlMessageLimits,
    closeHandshakeMs: number,
    readonly entity: HybridEntity,
    /** The token the channel holds (checked again when the rules change on reload). */
    public token: string,
    /** Its expiry, unix seconds. */
    public tokenExpiresAt: number,
    /** The Host header it connected with: with the live config, which host names its tokens may name. */
    readonly requestHost: string | undefined,
    readonly log: Logger,
    private readonly hooks: ControlChannelHooks,
    /** Bytes queued to the listener that it has not read, past which it is dropped (limits.listenerBufferBytes). */
    private readonly bufferLimitBytes: number,
  ) {
    this.socketCork = new TurnCork(socket);
    // A frame or message refused (over limits.controlMessageBytes, past the parts allowed, not UTF-8, a broken frame):
    // the listener is sent its code, and the channel counts as closed with that code, not the 1006 of a socket closed
    // without the listener's answer (with `ws`, which reported 1006, the refusal was taken from its 'error' event).
    let refusedWith: number | undefined;
    this.wire = new ControlSocket(socket, head, messageLimits, closeHandshakeMs, {
      message: (data, isBinary) => this.onMessage(data, isBinary),
      heard: () => (this.lastSeen = Date.now()),
      refused: (code, reason, overLimit) => {
        refusedWith ??= code;
        if (overLimit) this.overLimit = true;
        this.log.debug({ event: 'listener.error', err: reason });
      },
      closed: (code) => {
        this.closed = true;
        this.hooks.closed(this, refusedWith ?? code);
      },
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.wire.isOpen;
  }

  /** Bytes written to the listener that the kernel has not taken (what limits.listenerBufferBytes bounds). */
  get queuedBytes(): number {
    return this.wire.bufferedBytes;
  }

  /**
   * Sends one notice; `body`, when given, follows as one binary message.
   * False when the channel is closed, or is dropped now because the listener
   * has limits.listenerBufferBytes queued that it has not read (it reconnects;
   * its other requests fail with ListenerGone when the channel closes).
   */
  send(message: object, body?: Buffer): boolean {
    if (!this.isOpen) return false;
    const queued = this.wire.bufferedBytes;
    if (queued >= this.bufferLimitBytes) {
      this.log.warn({ event: 'limit.reached', limit: 'listenerBufferBytes', listener: this.id, queued });
      this.hooks.notReading(this);
      this.wire.terminate();
      return false;
    }
    this.socketCork.hold();
    this.socket.write(encodeTextFrame(JSON.stringify(message)));
    if (body) {
      this.socket.write(encodeFrameHeader(true, OP_BINARY, body.length));
      this.socket.write(body);
    }
    return true;
  }

  ping(): void {
    if (this.isOpen) this.wire.ping();
  }

  closeWith(code: HybridErrorCode, reason?: string): void {
    const spec = HYBRID_ERRORS[code] as { closeCode?: number; message: string };
    this.close(spec.closeCode ?? 1011, reason ?? spec.message, code);
  }

  close(code: number, reason: string, why?: HybridErrorCode): void {
    if (!this.isOpen) return;
    this.log.info({ event: 'listener.closing', code, reason });
    this.wire.close(code, reason.slice(0, 120));
    this.hooks.closing(this, why);
  }

  terminate(): void {
    this.wire.terminate();
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastSeen = Date.now();
    const consumer = this.bodyConsumer;
    this.bodyConsumer = undefined;
    if (isBinary) {
      // hyco-https ends every response with a binary frame, an empty one after a response without a body (a 204).
      if (!consumer && data.length === 0) return;
      if (!consumer) return this.closeWith('ControlMessageInvalid', 'binary message without a response');
      consumer(data);
      return;
    }
    // A response promised a body and a text message came instead: the body is empty.
    if (consumer) consumer(Buffer.alloc(0));
    let message: unknown;
    try {
      message = parseJson(data.toString('utf8'));
    } catch {
      return this.closeWith('ControlMessageInvalid', 'not JSON');
    }
    if (!validateListenerMessage(message)) {
      const answered = requestAnswered(message);
      if (!answered) return this.closeWith('ControlMessageInvalid');
      this.hooks.badResponse(this, answered.requestId, describeErrors(validateListenerMessage.errors));
      if (answered.body) this.bodyConsumer = discardBody;
      return;
    }
    const msg = message as { renewToken?: { token: string }; response?: ListenerResponse };
    if (msg.renewToken) {
      const result = this.hooks.renewToken(this, msg.renewToken.token);
      if (typeof result === 'number') {
        this.token = msg.renewToken.token;
        this.tokenExpiresAt = result;
        this.renewals.write((extra) => this.log.info({ event: 'listener.token_renewed', expiresAt: result, ...extra }));
      } else {
        this.log.warn({ event: 'listener.token_rejected', code: result });
        this.closeWith('RenewTokenInvalid');
      }
      return;
    }
    const response = listenerResponseOf(msg as { response: unknown });
    const bodyTarget = this.hooks.response(this, response);
    if (response.body) this.bodyConsumer = bodyTarget ?? discardBody;
  }
}

function discardBody(): void {}

/**
 * The request an invalid listener message answers, when it is a `response`
 * with a usable `requestId` (and whether it said a body follows), else
 * undefined: nothing in it can be trusted beyond that.
 */
function requestAnswered(message: unknown): { requestId: string; body: boolean } | undefined {
  if (typeof message !== 'object' || message === null || Object.keys(message).length !== 1) return undefined;
  const response = (message as { response?: unknown }).response;
  if (typeof response !== 'object' || response === null) return undefined;
  const { requestId, body } = response as { requestId?: unknown; body?: unknown };
  if (typeof requestId !== 'string' || requestId.length === 0 || requestId.length > 128) return undefined;
  return { requestId, body: body === true };
}
