// HTTP mode (docs/protocols/hybrid-connections.md, "HTTP mode"): one sender request
// relayed to one listener. A request whose body is known and small goes on the
// control channel as `request` + one binary message; a large or chunked one
// goes as `{request:{address,id}}` and, once the listener dials that address,
// as the full `request` followed by the body streamed as fragments of one
// binary message. The answer may come either way: `response` (+ body) on the
// control channel, or on the rendezvous socket, where a fragmented body is
// streamed to the sender as it arrives. Both directions respect backpressure.
import { isUtf8 } from 'node:buffer';
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { remoteEndpointOf } from '../http/client-address.ts';
import { closeAfterAnswer } from '../http/connection-close.ts';
import { sendContinue } from '../http/expect-continue.ts';
import { dropUnanswered } from '../websocket/close-handshake.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { validateHttpResponseMessage } from '../validation/schemas.ts';
import { queuedPast } from '../websocket/backpressure.ts';
import { FrameParser, type FrameHandler } from '../websocket/frame-parser.ts';
import { CloseHandshake } from '../websocket/close-handshake.ts';
import { CLOSE_INVALID_DATA, CLOSE_NORMAL, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, encodeFrame, encodeFrameHeader } from '../websocket/frames.ts';
import { parseUpgradeRequest, writeSwitchingProtocols } from '../websocket/handshake.ts';
import { countHttpStatus, partsAllowed, pathOf, pendingLimitReached, rendezvousAddress, type HybridContext } from './context.ts';
import { listenerResponseOf, type ChannelExchange, type ListenerResponse } from './control-channel.ts';
import type { HybridEntity } from './entity-catalog.ts';
import { failRequest, failUpgrade, type HybridErrorCode } from './errors.ts';
import { NONE_TOOK_OVER, type ListenerNotice, type ListenerRoute, type ListenerRoutes } from './listener-route.ts';
import type { PendingRendezvous } from './rendezvous-table.ts';
import { forwardedRequestHeaders, relayedReason, responseHeadersForSender } from './relayed-headers.ts';
import type { CredentialHeaders } from './sender-credential.ts';
import { ResponseBody } from './response-body.ts';
import { confinedToEntity } from './shared-origin.ts';

/**
 * The exchanges in progress per sender connection (one at a time: a request
 * pipelined behind another is taken up once the answer before it is out,
 * connection-close.ts); the socket's 'close' tells them all, one listener per
 * socket however many requests it carries in turn. An array, not a
 * Set: a Set that one request after another joins and leaves is rebuilt every
 * few of them, and V8 links each old table to the next (transient-map.ts).
 */
const exchangesOn = new WeakMap<EventEmitter, HttpExchange[]>();

function watchSenderSocket(socket: EventEmitter, exchange: HttpExchange): void {
  let exchanges = exchangesOn.get(socket);
  if (!exchanges) {
    const watched: HttpExchange[] = [];
    exchangesOn.set(socket, watched);
    socket.once('close', () => {
      for (const e of [...watched]) e.senderGone();
    });
    exchanges = watched;
  }
  exchanges.push(exchange);
}

function unwatchSenderSocket(socket: EventEmitter, exchange: HttpExchange): void {
  const exchanges = exchangesOn.get(socket);
  const at = exchanges ? exchanges.indexOf(exchange) : -1;
  if (at >= 0) exchanges!.splice(at, 1);
}

/**
 * A listener's leg for a request that ended before it answered (its sender
 * left, or was answered 504): opened and closed at once (1000), what the
 * listener sends dropped. Refused (404) as an unknown address, it killed an
 * unmodified hyco-https listener: that package dials to send an answer over
 * 64 KiB and has no handler for the refusal (an unhandled 'error').
 */
export function closeLateLeg(upgradeReq: IncomingMessage, socket: Duplex, closeHandshakeMs: number): void {
  const upgrade = parseUpgradeRequest(upgradeReq);
  if (!upgrade) return failUpgrade(socket, 'BadRequest', 'Invalid WebSocket handshake');
  writeSwitchingProtocols(socket, upgrade.key, undefined);
  socket.on('error', () => socket.destroy());
  socket.on('data', () => {});
  const close = new CloseHandshake(socket, closeHandshakeMs);
  close.send(1000, 'the request ended before this answer');
  close.end();
}

/** TCP keep-alive on a listener's HTTP rendezvous leg, as on spliced WebSocket legs. */
const RENDEZVOUS_TCP_KEEPALIVE_MS = 30_000;

/** How long a request that ended before its listener answered is remembered for a late answer's leg (the last 10,000 at most). */
const LATE_ANSWER_MS = 10 * 60_000;
/** How many times a request goes on to another listener after the one it was routed to left before acting on it. */
const MAX_REROUTES = 3;

type ReadState = 'head' | 'body' | 'done';

export class HttpExchange implements ChannelExchange, FrameHandler, PendingRendezvous {
  readonly action = 'request' as const;
  /** The rendezvous id, in the address a listener dials for the request: a new one when it goes on to another (renewAddress). */
  id: string;
  private headSent = false;
  private finished = false;
  private requestDelivered = false;
  private rendezvous: Duplex | undefined;
  private rendezvousClose: CloseHandshake | undefined;
  private parser: FrameParser | undefined;
  private readState: ReadState = 'head';
  private headChunks: Buffer[] = [];
  private headBytes = 0;
  /** The listener's response head, checked, from when it arrives. */
  private head: { status: number; reason: string; headers: Record<string, string | string[]> } | undefined;
  /** The response body as written to the sender, once the head is out. */
  private body: ResponseBody | undefined;
  /**
   * Why the rendezvous is not read: the sender has spliceBufferBytes of body
   * queued, or the listener has that many bytes of pongs queued that it does
   * not read (a listener flooding pings grew the relay by 150 MB, issue 18).
   */
  private readonly readBlocks = new Set<'sender' | 'listener'>();
  /** How the rendezvous is closed when the exchange ends: 1000, or the listener's protocol error. */
  private rendezvousCloseCode = CLOSE_NORMAL;
  /**
   * Until the head: timeouts.httpResponseMs with nothing from the sender while its body is read (each piece
   * starts it again), then for the answer once the body is all sent (waitedTooLong). Then: as long again for
   * each piece of the response body (bodyIdle).
   */
  private timer: NodeJS.Timeout;
  /** The sender's body is being read (not yet all of it). */
  private readingBody = false;
  /** A request body message begun on the rendezvous and not ended: the leg is cut, not closed, if the exchange ends now. */
  private bodyMessageOpen = false;
  private readonly startedAt = performance.now();
  /** Request body bytes sent on to the listener. */
  private requestBytes = 0;
  /** Why the exchange failed, when it did. */
  private failure: HybridErrorCode | 'SenderGone' | 'SenderStalled' | undefined;
  /** Runs while the sender takes none of the response (its queue is full): timeouts.senderStallMs. */
  private senderStall: NodeJS.Timeout | undefined;
  /** The length of a body read whole before it goes with its notice (the control channel path), while it is read. */
  private smallBodyLength: number | undefined;
  /** The listener was asked to dial this exchange's address for the request (the rendezvous path). */
  private dialAsked = false;
  /** A notice of this request reached a listener (its route said so), or one is on its way: it may answer late. */
  private listenerTold = false;
  private deliveriesPending = 0;
  /** Listeners this request went on to after the one it was routed to left (MAX_REROUTES). */
  private reroutes = 0;
  /** The listener the request goes to (another, if that one leaves before acting on it). */
  private route: ListenerRoute;

  constructor(
    private readonly ctx: HybridContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    readonly entity: HybridEntity,
    /** Where routes to the entity's listeners come from: the first, and another if that listener leaves early. */
    private readonly routes: ListenerRoutes,
    private readonly requestTarget: string,
    /** The sender's headers that were its credential (sender-credential.ts). */
    private readonly credential: CredentialHeaders,
    private readonly log: Logger,
    /**
     * How long the answer may take once the request is sent: timeouts.httpResponseMs, or the relay's own request's
     * bound (an hc:// event handler's timeoutMs; before, such a handler slower than httpResponseMs failed 504 within
     * a timeoutMs that allowed it).
     */
    answerWithinMs = ctx.config.timeouts.httpResponseMs,
  ) {
    this.id = ctx.newRendezvousId();
    this.route = routes.routeTo(entity);
    this.timer = setTimeout(() => this.waitedTooLong(), answerWithinMs);
    res.on('close', () => {
      // Its connection closed: nothing is left to watch (before, the stall timer held this exchange, its sockets and
      // route, for the rest of senderStallMs after a sender that had read slowly hung up).
      clearTimeout(this.senderStall);
      this.senderStall = undefined;
      this.senderGone();
    });
    watchSenderSocket(req.socket, this);
    res.on('drain', () => this.unblockRendezvous('sender'));
  }

  /**
   * A sender that reads none of the response for timeouts.senderStallMs (it
   * may never read at all) has its connection cut, so it holds neither the
   * connection nor, while the body streams, the listener's rendezvous.
   */
  private watchSender(on: boolean): void {
    clearTimeout(this.senderStall);
    this.senderStall = undefined;
    if (!on || this.res.destroyed || this.res.writableFinished) return;
    const ms = this.ctx.config.timeouts.senderStallMs;
    // Checked when it fires rather than cleared at the response's end (no listeners per request); cleared when the
    // response closes, on the listener the exchange has anyway.
    this.senderStall = setTimeout(() => {
      if (this.res.destroyed || this.res.writableFinished) return;
      // (No answer waits its turn behind an earlier one here: a pipelined request is taken up only once the answer
      // before it is out, whenItsTurn in connection-close.ts.)
      this.log.info({ event: 'http.sender_stalled', ms });
      if (!this.finished) this.failure = 'SenderStalled';
      // With a reset: closed with a FIN, the kernel kept the socket, and what it queued for the sender, for as long
      // as TCP tries (as every answer's cut, unread-answers.ts).
      dropUnanswered(this.req.socket);
    }, ms);
    this.senderStall.unref();
  }

  senderGone(): void {
    if (this.finished) return;
    this.log.info({ event: 'http.sender_gone' });
    this.failure ??= 'SenderGone';
    this.finish();
  }

  start(): void {
    this.ctx.open.httpRequests++;
    if (pendingLimitReached(this.ctx, this.entity)) return this.fail('TooManyPending');
    // Refused before its body is asked for (before: 100 Continue, then 404 NoListener on a relay alone).
    if (this.route.absent) return this.fail(this.route.absent);
    sendContinue(this.res);
    this.ctx.rendezvous.add(this);
    this.route.track(this.id, this);
    const lengthHeader = this.req.headers['content-length'];
    const length = lengthHeader === undefined ? undefined : Number(lengthHeader);
    const chunked = this.req.headers['transfer-encoding'] !== undefined;
    if (!chunked && (length === undefined || length === 0)) {
      this.dispatchOnControlChannel(undefined);
    } else if (!chunked && length !== undefined && length <= this.ctx.config.limits.controlMessageBytes && this.fitsOneNotice(length)) {
      this.readSmallBody(length);
    } else {
      // Large, of unknown length, or too large for the bus with its notice: the listener fetches it over a rendezvous.
      this.askToDial();
    }
  }

  /**
   * Whether a body of `length` bytes goes in one message with its notice on this route: always on a control channel
   * here; over the bus, within its max_payload (before, a body past it failed 400 BadRequest on another edge only).
   * The notice's size is bounded from above: its headers and target twice over (JSON escapes, UTF-8) and 2 KiB.
   */
  private fitsOneNotice(length: number): boolean {
    const limit = this.route.maxMessageBytes;
    if (limit === Infinity) return true;
    let head = 2048 + 2 * this.requestTarget.length;
    for (const field of this.req.rawHeaders) head += 2 * field.length + 8;
    return length + head <= limit;
  }

  private address(): string {
    return rendezvousAddress(this.ctx, 'request', this.entity, this.id);
  }

  private requestMessage(body: boolean): ListenerNotice {
    return {
      request: {
        address: this.address(),
        id: this.id,
        requestTarget: this.requestTarget,
        method: this.req.method,
        requestHeaders: forwardedRequestHeaders(this.req, this.credential, this.ctx.viaName),
        remoteEndpoint: remoteEndpointOf(this.req),
        body,
      },
    };
  }

  private readSmallBody(length: number): void {
    const chunks: Buffer[] = [];
    let size = 0;
    this.readingBody = true;
    this.smallBodyLength = length;
    this.req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= length) chunks.push(chunk);
      if (!this.finished) this.timer.refresh();
    });
    this.req.on('end', () => {
      this.readingBody = false;
      this.requestBytes = Math.min(size, length);
      if (this.finished) return;
      // The listener has as long to answer as if the body had come at once.
      this.timer.refresh();
      const body = Buffer.concat(chunks, Math.min(size, length));
      // The pieces are let go: the data handler above keeps this array for the exchange's life (up to 64 KiB twice).
      chunks.length = 0;
      this.dispatchOnControlChannel(body);
    });
  }

  /**
   * timeouts.httpResponseMs passed before the response head: with nothing from a sender whose body is read
   * (408; not while the relay holds it back for a listener that reads slowly), else with no answer (504).
   * Before, the wait was counted from the request's start: an upload longer than it failed 504 while its
   * bytes still flowed.
   */
  private waitedTooLong(): void {
    if (this.finished) return;
    if (this.readingBody && !this.req.isPaused()) {
      this.log.info({ event: 'http.request_stalled', ms: this.ctx.config.timeouts.httpResponseMs });
      return this.fail('RequestTimeout');
    }
    this.fail('ResponseTimeout');
  }

  /**
   * Sends a notice to the listener. If it cannot arrive because that listener is going (its channel closing),
   * another listener takes it when there is one; else the sender gets the reason.
   */
  private deliver(notice: ListenerNotice, body?: Buffer): void {
    const route = this.route;
    this.deliveriesPending++;
    void route.deliver(notice, body).then((code) => {
      this.deliveriesPending--;
      if (!code) this.listenerTold = true;
      // A late or lost routing reply says nothing once the listener is answering (as for connects), nor once
      // the request went on to another listener.
      if (!code || this.head || this.rendezvous || route !== this.route) return;
      if (code === 'ListenerGone' && this.goOnToAnotherListener({ notice, body })) return;
      // After the listener it was routed to left, "no listener (reachable)" means that one left and none took over.
      this.fail(this.reroutes > 0 && NONE_TOOK_OVER.has(code) ? 'ListenerGone' : code);
    });
  }

  /** Asks the listener to dial this exchange's address, where it reads the request (large, or of unknown length). */
  private askToDial(): void {
    this.dialAsked = true;
    this.deliver({ request: { address: this.address(), id: this.id } });
    this.log.debug({ event: 'http.rendezvous_requested', via: this.route.via });
  }

  /**
   * The listener this request was routed to left before it could act on it: its body was still being read
   * (nothing was sent), or the listener had only been asked to dial for it and had not. Another listener of the
   * entity takes it, when there is one (before: 502 ListenerGone while others were online, so a rolling restart
   * of listeners failed uploads in flight). False when it cannot go on.
   */
  private goOnToAnotherListener(undelivered?: { notice: ListenerNotice; body: Buffer | undefined }): boolean {
    if (this.finished || this.head || this.rendezvous || this.reroutes >= MAX_REROUTES) return false;
    const beforeSending = !this.requestDelivered && this.smallBodyLength !== undefined;
    if (!undelivered && !beforeSending && !this.dialAsked) return false;
    const next = this.routes.routeTo(this.entity);
    if (!next.isOpen) return false;
    const previous = this.route;
    this.route = next;
    // A body read for one notice must fit the new route's (over the bus: its max_payload).
    const bodyLength = undelivered ? undelivered.body?.length : beforeSending ? this.smallBodyLength : undefined;
    if (bodyLength !== undefined && !this.fitsOneNotice(bodyLength)) {
      this.route = previous;
      return false;
    }
    previous.untrack(this.id);
    if (this.dialAsked) this.renewAddress();
    next.track(this.id, this);
    this.reroutes++;
    this.log.info({ event: 'http.rerouted', via: next.via, reason: 'listener_gone' });
    // The next listener has as long to answer as the first had (MAX_REROUTES bounds the whole).
    if (!this.readingBody) this.timer.refresh();
    // (A dial notice that did not arrive is asked again with the new address, not sent as it was.)
    if (this.dialAsked) this.askToDial();
    else if (undelivered) this.deliver(undelivered.notice, undelivered.body);
    return true;
  }

  /**
   * The request goes on to another listener after one was given its address: it gets a new one. The id in the
   * address is a leg's only credential; with the same address, the listener that left (its channel closed, its
   * access revoked or expired) could still dial it and take the request, body and all, and the next listener was
   * refused (found by review). A leg dialed at the old address later is closed as a late answer's is (closeLateLeg).
   */
  private renewAddress(): void {
    this.ctx.rendezvous.delete(this);
    this.ctx.rendezvous.abandon(this, Math.max(LATE_ANSWER_MS, this.ctx.config.timeouts.httpResponseMs));
    this.id = this.ctx.newRendezvousId();
    this.ctx.rendezvous.add(this);
  }

  private dispatchOnControlChannel(body: Buffer | undefined): void {
    const hasBody = body !== undefined && body.length > 0;
    this.deliver(this.requestMessage(hasBody), hasBody ? body : undefined);
    this.requestDelivered = true;
    if (!hasBody) this.req.resume();
    this.log.debug({ event: 'http.request_sent', bytes: body?.length ?? 0 });
  }

  // --- the answer on the control channel -----------------------------------

  onControlResponse(response: ListenerResponse): ((body: Buffer) => void) | undefined {
    if (this.finished || this.head) return undefined;
    if (!this.acceptHead(response)) return undefined;
    if (!response.body) {
      if (!this.declaredLengthIs(0)) this.fail('BadListenerResponse');
      else if (this.writeHead()) this.endBody();
      return undefined;
    }
    return (body) => {
      if (this.finished) return;
      if (!this.declaredLengthIs(body.length)) return this.fail('BadListenerResponse');
      if (!this.writeHead()) return;
      this.endBody(body);
    };
  }

  /**
   * For a body that comes whole with its head (on the control channel): whether the head's Content-Length, if it
   * has one that counts on the wire, says `length`. Checked before the head goes out, so that a listener's wrong
   * length is answered 502 BadListenerResponse, as a doubled one is (before: the head went out, then the sender's
   * connection was cut without a byte of explanation).
   */
  private declaredLengthIs(length: number): boolean {
    const { status, headers } = this.head!;
    const declared = headers['content-length'];
    return declared === undefined || !this.bodyOnTheWire(status) || Number(declared) === length;
  }

  /** Whether an answer of `status` to this request carries its body on the wire (not HEAD, 204, 205 or 304). */
  private bodyOnTheWire(status: number): boolean {
    return this.req.method !== 'HEAD' && status !== 204 && status !== 205 && status !== 304;
  }

  badResponse(): void {
    if (!this.head) this.fail('BadListenerResponse');
  }

  listenerLost(): void {
    if (this.rendezvous || this.goOnToAnotherListener()) return;
    this.fail('ListenerGone');
  }

  /** A reload removed the entity: the request ends (404 EntityRemoved, or its answer cut once begun), as its WebSockets do. */
  entityRemoved(): void {
    this.fail('EntityRemoved');
  }

  // --- the rendezvous socket ---------------------------------------------------

  /** The listener dialled this exchange's address. */
  arrive(upgradeReq: IncomingMessage, socket: Duplex, head: Buffer): void {
    const upgrade = parseUpgradeRequest(upgradeReq);
    if (this.rendezvous || this.finished) return failUpgrade(socket, 'RendezvousNotFound');
    if (!upgrade) return failUpgrade(socket, 'BadRequest', 'Invalid WebSocket handshake');
    this.rendezvous = socket;
    // Nothing pings this leg: TCP keep-alive finds a listener host that vanished without a FIN.
    if (socket instanceof Socket) socket.setKeepAlive(true, RENDEZVOUS_TCP_KEEPALIVE_MS);
    this.rendezvousClose = new CloseHandshake(socket, this.ctx.config.timeouts.closeHandshakeMs);
    writeSwitchingProtocols(socket, upgrade.key, undefined);
    this.parser = new FrameParser(this, { masked: true, maxFrameBytes: 0 });
    socket.on('data', (chunk: Buffer) => this.parser!.push(chunk));
    socket.on('drain', () => {
      // While the body comes, the wait for the sender's next piece starts when the relay reads again (it held the body
      // back for this listener); once it has all come, the wait for the answer starts when the listener has read it.
      if (!this.headSent && !this.finished) this.timer.refresh();
      this.req.resume();
      this.unblockRendezvous('listener');
    });
    socket.on('error', () => socket.destroy());
    // The listener ended its side without a close frame: it will send nothing more.
    socket.on('end', () => {
      if (!this.rendezvousClose!.received) socket.destroy();
    });
    socket.on('close', () => {
      if (!this.finished) {
        this.log.info({ event: 'http.rendezvous_lost' });
        this.fail('ListenerGone');
      }
    });
    if (head.length > 0) this.parser.push(head);
    if (!this.requestDelivered) this.streamRequest(socket);
  }

  /** Sends the full request and streams its body as one fragmented binary message. */
  private streamRequest(socket: Duplex): void {
    this.requestDelivered = true;
    socket.write(encodeFrame(true, OP_TEXT, Buffer.from(JSON.stringify(this.requestMessage(true)))));
    let first = true;
    const hwm = this.ctx.config.limits.spliceBufferBytes;
    this.readingBody = !this.req.complete;
    this.bodyMessageOpen = true;
    if (!this.headSent) this.timer.refresh();
    this.req.on('data', (chunk: Buffer) => {
      if (this.finished) return;
      // Until the head, each piece starts the wait again (after it, the timer is the response body's).
      if (!this.headSent) this.timer.refresh();
      this.requestBytes += chunk.length;
      socket.write(encodeFrameHeader(false, first ? OP_BINARY : OP_CONTINUATION, chunk.length));
      socket.write(chunk);
      first = false;
      if (queuedPast(socket, hwm)) this.req.pause();
    });
    this.req.on('end', () => {
      this.readingBody = false;
      if (this.finished) return;
      socket.write(encodeFrameHeader(true, first ? OP_BINARY : OP_CONTINUATION, 0));
      this.bodyMessageOpen = false;
      if (!this.headSent) this.timer.refresh();
    });
    this.req.resume();
  }

  onDataFrame(_fin: boolean, opcode: number): void {
    if (this.readState === 'head' && opcode === OP_BINARY) return this.fail('BadListenerResponse');
    if (this.readState === 'body' && opcode === OP_TEXT) return this.fail('BadListenerResponse');
    // The body begins: its head goes out now.
    if (this.readState === 'body' && !this.headSent && !this.finished) this.writeHead();
  }

  onDataPayload(chunk: Buffer): void {
    if (this.readState === 'head') {
      this.headBytes += chunk.length;
      // Parts count too: a head in 1-byte frames held ~6 MiB for httpResponseMs.
      const limit = this.ctx.config.limits.controlMessageBytes;
      if (this.headBytes > limit || this.headChunks.length >= partsAllowed(limit)) return this.fail('BadListenerResponse');
      this.headChunks.push(Buffer.from(chunk));
    } else if (this.readState === 'body' && !this.finished) {
      this.timer.refresh();
      if (!this.body!.fits(chunk)) return this.fail('BadListenerResponse');
      if (!this.body!.write(chunk)) this.blockRendezvous('sender');
    }
  }

  onDataFrameEnd(fin: boolean): void {
    if (!fin || this.finished) return;
    if (this.readState === 'head') {
      const head = Buffer.concat(this.headChunks);
      this.headChunks = [];
      // A text frame that is not UTF-8 fails the WebSocket (RFC 6455 8.1: 1007); decoded with replacement, its
      // bytes became U+FFFD in a reason phrase the sender got with a 200.
      if (!isUtf8(head)) return this.onFrameError(CLOSE_INVALID_DATA);
      const text = head.toString('utf8');
      let message: unknown;
      try {
        message = parseJson(text);
      } catch {
        return this.fail('BadListenerResponse');
      }
      if (!validateHttpResponseMessage(message)) return this.fail('BadListenerResponse');
      const response = listenerResponseOf(message as { response: unknown });
      if (response.requestId !== this.id || this.head) return this.fail('BadListenerResponse');
      if (!this.acceptHead(response)) return;
      if (response.body) {
        this.readState = 'body';
        return;
      }
      // No body follows: a Content-Length other than 0 is known wrong before the head goes out, as on the control
      // channel (before: the head went out and the connection was cut, the sender told nothing).
      if (!this.declaredLengthIs(0)) return this.fail('BadListenerResponse');
      if (!this.writeHead()) return;
    }
    this.readState = 'done';
    this.endBody();
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    const socket = this.rendezvous!;
    if (opcode === OP_PING) {
      // Nothing may follow our close frame (RFC 6455 5.5.1).
      if (this.rendezvousClose!.sent) return;
      socket.write(encodeFrame(true, OP_PONG, payload));
      if (queuedPast(socket, this.ctx.config.limits.spliceBufferBytes)) this.blockRendezvous('listener');
    } else if (opcode === OP_CLOSE) {
      // Answered first (its own code echoed): finish() below sees a leg the listener closed, not one to cut.
      this.rendezvousClose!.receive(payload);
      if (!this.finished) this.fail('ListenerGone');
    }
  }

  onFrameError(closeCode: number): void {
    this.rendezvousCloseCode = closeCode;
    this.fail('BadListenerResponse');
  }

  private blockRendezvous(reason: 'sender' | 'listener'): void {
    this.readBlocks.add(reason);
    this.rendezvous?.pause();
    if (reason === 'sender') this.watchSender(true);
  }

  private unblockRendezvous(reason: 'sender' | 'listener'): void {
    if (reason === 'sender' && !this.finished) this.watchSender(false);
    if (this.readBlocks.delete(reason) && this.readBlocks.size === 0) this.rendezvous?.resume();
  }

  // --- ending -----------------------------------------------------------------

  /** Checks the listener's response head and keeps it for writeHead. */
  private acceptHead(response: ListenerResponse): boolean {
    const status = response.statusCode;
    const headers = responseHeadersForSender(response.responseHeaders, this.ctx.viaName);
    if (status < 200 || status > 599 || !headers) {
      this.fail('BadListenerResponse');
      return false;
    }
    // No Content-Length on a 204 (RFC 9110 8.6): one there has a client wait for, or misread, a body none sends.
    if (status === 204) delete headers['content-length'];
    // A 205 has no content either (RFC 9110 15.3.6), but node:http would frame one: it says so with a zero length.
    if (status === 205) headers['content-length'] = '0';
    this.head = { status, reason: relayedReason(response.statusDescription ?? undefined, status), headers: confinedToEntity(headers, this.req) };
    return true;
  }

  /**
   * Writes the accepted head, when the body begins (or at once when none
   * follows): until then timeouts.httpResponseMs still runs, so a listener
   * that promises a body and never sends it gets the sender a 504, not a
   * response that never ends.
   */
  private writeHead(): boolean {
    const { status, reason, headers } = this.head!;
    // Part of the body went to the listener and the rest may never: the answer says the connection closes.
    if (this.bodyLeftUnread()) this.closeSenderConnection();
    // A 204 goes without Content-Length (acceptHead): node:http would then close an HTTP/1.0 keep-alive connection
    // after it, as for a body it cannot frame. A 204 has none: the connection is kept, as with a length.
    if (status === 204) this.res.useChunkedEncodingByDefault = true;
    try {
      this.res.writeHead(status, reason, headers);
    } catch {
      this.fail('BadListenerResponse');
      return false;
    }
    this.headSent = true;
    const declared = headers['content-length'];
    this.body = new ResponseBody(this.res, declared === undefined ? undefined : Number(declared), this.bodyOnTheWire(status));
    // A body may take as long as it likes, but not stall: timeouts.httpResponseMs with nothing from the listener
    // (while the relay reads) cuts it. Before, a listener that stopped mid-body held the sender for good.
    // (A body on the control channel comes whole, with its head.)
    clearTimeout(this.timer);
    if (this.rendezvous) this.timer = setTimeout(() => this.bodyIdle(), this.ctx.config.timeouts.httpResponseMs);
    this.log.info({ event: 'http.response', status, via: this.rendezvous ? 'rendezvous' : 'control' });
    countHttpStatus(this.ctx, status, this.entity);
    return true;
  }

  /** timeouts.httpResponseMs passed with no piece of the body: cut, unless the relay itself stopped reading for a slow sender. */
  private bodyIdle(): void {
    if (this.finished) return;
    if (this.readBlocks.has('sender')) return void this.timer.refresh();
    this.log.info({ event: 'http.body_stalled', ms: this.ctx.config.timeouts.httpResponseMs });
    this.fail('ResponseTimeout');
  }

  /** The listener's body ended (with `last`, its final piece): the response ends, or, short of its declared length, is cut. */
  private endBody(last?: Buffer): void {
    if (!this.body!.end(last)) return this.fail('BadListenerResponse');
    this.finish();
  }

  /** Part of the sender's body went to the listener, and the rest has not come (it may never be read). */
  private bodyLeftUnread(): boolean {
    return this.requestDelivered && this.bodyStillComing();
  }

  /** The sender's body has not all come, and its request is not destroyed. */
  private bodyStillComing(): boolean {
    return !this.req.complete && !this.req.destroyed;
  }

  /** The sender's connection closes after this answer, lingering timeouts.closeHandshakeMs (connection-close.ts). */
  protected closeSenderConnection(): void {
    closeAfterAnswer(this.res, this.ctx.config.timeouts.closeHandshakeMs);
  }

  fail(code: HybridErrorCode): void {
    if (this.finished) return;
    this.log.info({ event: 'http.failed', code });
    this.failure = code;
    // A body nobody will read is drained, so the sender's connection stays usable; not one that stopped coming,
    // nor one the listener had part of: the answer says the connection closes (before: keep-alive, then closed).
    if (code === 'RequestTimeout' || this.bodyLeftUnread()) this.closeSenderConnection();
    else if (!this.requestDelivered) this.req.resume();
    if (!this.headSent && !this.res.headersSent) {
      countHttpStatus(this.ctx, code, this.entity);
      failRequest(this.res, code);
    } else {
      this.res.destroy();
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.ctx.open.httpRequests--;
    this.ctx.traffic.requested(this.entity, this.requestBytes + (this.body?.bytes ?? 0));
    const trace = this.ctx.metrics.trace;
    if (trace.on) {
      const { method } = this.req;
      trace.emit('http.request', { entity: this.entity.name, method, path: pathOf(this.requestTarget), status: this.res.headersSent ? this.res.statusCode : undefined, ms: performance.now() - this.startedAt, bytes: this.requestBytes + (this.body?.bytes ?? 0), code: this.failure });
    }
    this.readState = 'done';
    clearTimeout(this.timer);
    // What is left of the response (still queued in this process) has to reach the sender: watched until it has.
    if (this.senderStall === undefined && !this.res.destroyed && this.req.socket.writableLength > 0) this.watchSender(true);
    if ((this.requestDelivered || this.failure === 'RequestTimeout') && this.bodyStillComing()) {
      // Part of the body went to the listener and the rest never will (it may be paused, for a listener that read
      // slowly): the connection cannot carry another request, so it is closed once the answer is out rather than
      // left unread (connection-close.ts: announced when the head is still to go, lingering).
      this.closeSenderConnection();
    }
    unwatchSenderSocket(this.req.socket, this);
    this.ctx.rendezvous.delete(this);
    // Ended before the listener answered: it may still dial this address to answer, however late (see closeLateLeg).
    // Only one a listener was told of: every 404 NoListener was remembered too, 10,000 of them at most, ~6 MB (found by review).
    if (this.head === undefined && !this.rendezvous && (this.listenerTold || this.deliveriesPending > 0)) {
      this.ctx.rendezvous.abandon(this, Math.max(LATE_ANSWER_MS, this.ctx.config.timeouts.httpResponseMs));
    }
    this.route.untrack(this.id);
    if (this.rendezvousClose && !this.rendezvous!.destroyed) {
      // The listener closed the leg itself, or broke the WebSocket protocol on it: the handshake, with its code (1002,
      // 1007, 1009). A listener that broke the HTTP one (a bad head, a body off its declared length) or went quiet is
      // cut like the rest while the body is open: its read fails, rather than taking a part of the body for the whole.
      const listenerEnded = this.rendezvousClose.received || this.rendezvousCloseCode !== CLOSE_NORMAL;
      if (this.bodyMessageOpen && this.failure !== undefined && !listenerEnded) {
        // The request body was cut (its sender gone or stalled, the listener too slow): a close frame, whatever its
        // code, ends the body message for Microsoft.Azure.Relay's listener stream, which would take the part sent for
        // the whole. Cut without one, the listener's read fails instead. (A listener that answered in full before
        // reading the whole body gets its close frame: what it did not read no longer matters to it.)
        this.rendezvous!.destroy();
      } else {
        this.rendezvousClose.send(this.rendezvousCloseCode);
        this.rendezvousClose.end();
      }
    }
  }
}
