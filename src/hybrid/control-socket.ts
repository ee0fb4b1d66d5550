// The relay's end of a listener's control channel as a WebSocket, on the
// channel's raw socket: frames read by the parser the relay's other legs share
// (frame-parser.ts), messages put together and held to the channel's limits,
// pings answered, and the closing handshake of close-handshake.ts. It replaces
// `ws`, which read every frame through a Writable stream of its own and made
// four Buffer views per message (~14,000 instructions of a relayed request's
// ~148,800, bench/http-instructions.ts); MessageSocket (message-socket.ts) is
// not used because it charges a message's parts against its bytes and closes
// 1009, where a control channel takes a body written a byte at a time and
// refuses 1008, and because it stops reading a closing peer.
//
// What a listener sees is what it saw of `ws`: a refused frame or message is
// answered with a close frame carrying the code alone, then the end of the
// relay's side, and nothing it sends after is read; messages that arrive while
// the relay's close waits for an answer are still delivered (a shutting-down
// edge lets its listeners answer what they were given); its close frame is
// echoed with its code and reason; the code the channel closed with is the one
// in the listener's close frame, 1006 when none came (a refusal is reported
// apart, as `ws` did by its 'error' event).
//
// Unlike `ws`, the channel is reported closed as soon as the relay is done with
// it, not when its TCP connection has gone too: at the listener's close frame
// (RFC 6455 5.5.1: an endpoint that has sent and received a close frame
// considers the connection closed; nothing more may come on it) or at a
// refusal (nothing after it is read). The socket's end goes on under
// close-handshake.ts's bound. Before, a listener that kept its side of the TCP
// connection open after its close stayed on its entity, and the requests and
// connects it held waited, until timeouts.closeHandshakeMs had passed.
import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ownedPiece } from '../websocket/buffer-views.ts';
import { CloseHandshake } from '../websocket/close-handshake.ts';
import { FrameParser, type FrameHandler } from '../websocket/frame-parser.ts';
import { CLOSE_INVALID_DATA, CLOSE_POLICY, CLOSE_TOO_BIG, OP_BINARY, OP_PING, OP_PONG, decodeClosePayload, encodeFrame } from '../websocket/frames.ts';

const CLOSE_ABNORMAL = 1006;
const EMPTY = Buffer.alloc(0);
const PING_FRAME = encodeFrame(true, OP_PING, EMPTY);
/** Pongs written and not yet taken by the kernel past which a listener that pings and does not read is dropped (ws's default). */
const MAX_PENDING_PONGS = 60;

/** How much one message of a control channel may be, each past it refused (limits.controlMessageBytes; hybrid-service.ts). */
export interface ControlMessageLimits {
  /** Bytes of one message (1009 past it). */
  bytes: number;
  /** Frames of one message (1008 past it). */
  frames: number;
  /** Socket reads one frame may come in (1008 past it): each is kept until its message is whole. */
  frameReads: number;
}

export interface ControlSocketEvents {
  message(data: Buffer, isBinary: boolean): void;
  /** A ping or a pong arrived. */
  heard(): void;
  /** The relay refused what the listener sent and told it `code`; `overLimit` when for a message over its limits. */
  refused(code: number, reason: string, overLimit: boolean): void;
  /**
   * The channel is over, once: at the listener's close frame (`code` its code, 1005 for one without), at a refusal or
   * when the socket is gone without a close frame (1006). The socket may still be ending (close-handshake.ts bounds it).
   */
  closed(code: number): void;
}

export class ControlSocket implements FrameHandler {
  private readonly parser = new FrameParser(this, { masked: true, maxFrameBytes: 0 });
  private readonly closing: CloseHandshake;
  /** Until the relay or the listener begins closing, the listener's side ends or the socket is dropped. */
  private open = true;
  /** Until a refusal or the listener's close frame: nothing after either is read. */
  private reading = true;
  /** closed() was reported. */
  private finished = false;
  /** The first piece of the message being read, and the others when there are more (most messages are one piece). */
  private firstPiece: Buffer | undefined;
  private laterPieces: Buffer[] | undefined;
  /** Pieces of the message being read that came in reads before the current one (already owned: see receive()). */
  private piecesOfEarlierReads = 0;
  private messageBytes = 0;
  private messageFrames = 0;
  private messageIsBinary = false;
  /** Reads the current data frame came in so far. */
  private frameReads = 0;
  private pendingPongs = 0;
  private readonly pongWritten = (): void => {
    this.pendingPongs--;
  };

  /** `head`: what was read past the upgrade request. `limits` hold for the channel's life, as they did with `ws`. */
  constructor(
    readonly socket: Duplex,
    head: Buffer,
    private readonly limits: ControlMessageLimits,
    closeHandshakeMs: number,
    private readonly events: ControlSocketEvents,
  ) {
    this.closing = new CloseHandshake(socket, closeHandshakeMs);
    // Not a net.Socket in every test (a Duplex): what node:http set stays then.
    (socket as Partial<Socket>).setTimeout?.(0);
    (socket as Partial<Socket>).setNoDelay?.(true);
    if (head.length > 0) socket.unshift(head);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    // The listener's side ended (with or without its close frame): nothing more will come; the relay ends its own.
    socket.on('end', () => {
      this.open = false;
      socket.end();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.finish(CLOSE_ABNORMAL));
  }

  get isOpen(): boolean {
    return this.open && !this.socket.destroyed;
  }

  /** Bytes written to the socket that the kernel has not taken. */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  ping(): void {
    if (this.isOpen) this.socket.write(PING_FRAME);
  }

  /** Starts the closing handshake: the socket ends when the listener answers, or after closeHandshakeMs. */
  close(code: number, reason: string): void {
    if (!this.isOpen) return;
    this.open = false;
    this.closing.send(code, reason);
  }

  /** Drops the socket without a close frame. */
  terminate(): void {
    this.open = false;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    if (!this.reading) return;
    this.piecesOfEarlierReads = this.pieceCount();
    this.parser.push(chunk);
    // The pieces of a message still unfinished, kept past this read: a few bytes of a large read are copied out, not
    // kept as views holding all of it (message-socket.ts, ownPiecesOfThisRead).
    const pieces = this.pieceCount();
    if (pieces === this.piecesOfEarlierReads) return;
    if (this.piecesOfEarlierReads === 0) this.firstPiece = ownedPiece(this.firstPiece!);
    const later = this.laterPieces;
    if (later) for (let i = Math.max(0, this.piecesOfEarlierReads - 1); i < later.length; i++) later[i] = ownedPiece(later[i]);
  }

  private pieceCount(): number {
    return this.firstPiece === undefined ? 0 : 1 + (this.laterPieces?.length ?? 0);
  }

  private dropPieces(): void {
    this.firstPiece = undefined;
    this.laterPieces = undefined;
    this.piecesOfEarlierReads = 0;
  }

  // FrameHandler

  onDataFrame(_fin: boolean, opcode: number, length: number): void {
    if (!this.reading) return;
    if (opcode !== 0) {
      this.messageIsBinary = opcode === OP_BINARY;
      this.dropPieces();
      this.messageBytes = 0;
      this.messageFrames = 0;
    }
    this.frameReads = 0;
    this.messageBytes += length;
    if (this.messageBytes > this.limits.bytes) return this.refuse(CLOSE_TOO_BIG, 'message over limits.controlMessageBytes', true);
    if (++this.messageFrames > this.limits.frames) this.refuse(CLOSE_POLICY, 'message in too many frames', true);
  }

  onDataPayload(chunk: Buffer): void {
    if (!this.reading) return;
    if (++this.frameReads > this.limits.frameReads) return this.refuse(CLOSE_POLICY, 'frame in too many reads', true);
    if (this.firstPiece === undefined) this.firstPiece = chunk;
    else if (this.laterPieces) this.laterPieces.push(chunk);
    else this.laterPieces = [chunk];
  }

  onDataFrameEnd(fin: boolean): void {
    if (!fin || !this.reading) return;
    const first = this.firstPiece;
    const data = this.laterPieces ? Buffer.concat([first!, ...this.laterPieces], this.messageBytes) : (first ?? EMPTY);
    this.dropPieces();
    if (!this.messageIsBinary && !isUtf8(data)) return this.refuse(CLOSE_INVALID_DATA, 'text is not UTF-8', false);
    this.events.message(data, this.messageIsBinary);
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    if (!this.reading) return;
    if (opcode === OP_PING) {
      if (this.isOpen) {
        if (this.pendingPongs >= MAX_PENDING_PONGS) this.terminate();
        else {
          this.pendingPongs++;
          this.socket.write(encodeFrame(true, OP_PONG, payload), this.pongWritten);
        }
      }
      return this.events.heard();
    }
    if (opcode === OP_PONG) return this.events.heard();
    // Its close frame (the parser passes only valid ones): answered with its own code and reason unless the relay's
    // went first, then the relay's side ends.
    this.reading = false;
    this.open = false;
    const said = decodeClosePayload(payload);
    this.closing.receive(payload, said);
    this.finish(said.code);
  }

  onFrameError(code: number, reason: string): void {
    if (this.reading) this.refuse(code, reason, false);
  }

  /** The listener broke the protocol or a limit: told `code` (the relay's close frame, unless it went already), then the relay's side ends. */
  private refuse(code: number, reason: string, overLimit: boolean): void {
    this.reading = false;
    this.open = false;
    this.dropPieces();
    this.closing.send(code);
    this.closing.end();
    this.events.refused(code, reason, overLimit);
    this.finish(CLOSE_ABNORMAL);
  }

  /** Reports the channel closed with `code`, the first time only. */
  private finish(code: number): void {
    this.open = false;
    this.dropPieces();
    if (this.finished) return;
    this.finished = true;
    this.events.closed(code);
  }
}
