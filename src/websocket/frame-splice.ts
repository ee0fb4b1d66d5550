// Joins two WebSocket connections whose handshakes the relay answered itself
// (a sender and a listener's rendezvous leg) so that every data frame, text or
// binary, whole or fragmented, passes through in order, both ways, without
// reassembling messages. Each leg's ping/pong is answered by the relay; a close
// on one leg closes the other with the same code, and the other leg may go on
// sending until it closes too (a half-close, as .NET's
// HybridConnectionStream.ShutdownAsync does, and azbridge for a TCP client's
// shutdown: the closer reads the answer until its close arrives), for as long
// as an open WebSocket may last. Backpressure is TCP-like: a
// direction stops reading when its destination has `highWaterMark` bytes queued
// and resumes on 'drain', so memory per splice stays bounded. The relay's own
// answers are bounded the same way: a leg that pings and does not read its
// pongs is not read while `highWaterMark` bytes are queued back to it (a
// sender flooding pings without reading grew the relay by 155 MB, issue 18).
import type { Duplex } from 'node:stream';
import { queuedPast } from './backpressure.ts';
import { CloseHandshake } from './close-handshake.ts';
import { FrameParser, type FrameHandler } from './frame-parser.ts';
import { OP_CLOSE, OP_PING, OP_PONG, decodeClosePayload, encodeFrame, encodeFrameHeader } from './frames.ts';
import { TurnWriter } from './turn-writer.ts';

export interface SpliceOptions {
  highWaterMark: number;
  closeHandshakeMs: number;
  maxFrameBytes: number;
}

export interface SpliceResult {
  /** Close code that ended the splice (1006 when a leg dropped without one). */
  code: number;
  reason: string;
  /** Which leg ended it: 'a', 'b'. */
  closedBy: 'a' | 'b';
  bytesAtoB: number;
  bytesBtoA: number;
}

const CLOSE_ABNORMAL = 1006;

class Direction implements FrameHandler {
  readonly parser: FrameParser;
  /** Payload bytes forwarded. */
  bytes = 0;
  /** Every write to `to`: corked for the rest of the turn, small ones copied together. */
  readonly toWriter: TurnWriter;
  /** A frame header went out and part of its payload has not. */
  private midFrameRemaining = 0;
  /** A control frame waiting for the current frame to finish. */
  pendingControl: Buffer | undefined;
  /** Not reading `from`: `to` has highWaterMark bytes queued. */
  private waitingForDestination = false;
  /** Not reading `from`: it has highWaterMark bytes queued back to it (pongs it does not read). */
  private waitingForSource = false;
  /** `from` sent its close frame (or the relay closed both legs): nothing more of it is forwarded. */
  ended = false;

  constructor(
    readonly name: 'a' | 'b',
    readonly from: Duplex,
    readonly to: Duplex,
    private readonly splice: FrameSplice,
    maxFrameBytes: number,
  ) {
    this.parser = new FrameParser(this, { masked: true, maxFrameBytes });
    this.toWriter = new TurnWriter(to);
  }

  get midFrame(): boolean {
    return this.midFrameRemaining > 0;
  }

  onDataFrame(fin: boolean, opcode: number, length: number): void {
    if (this.ended) return;
    this.midFrameRemaining = length;
    this.write(encodeFrameHeader(fin, opcode, length));
  }

  onDataPayload(chunk: Buffer): void {
    if (this.ended) return;
    this.midFrameRemaining -= chunk.length;
    this.bytes += chunk.length;
    this.write(chunk);
  }

  onDataFrameEnd(): void {
    this.midFrameRemaining = 0;
    if (this.pendingControl) {
      const frame = this.pendingControl;
      this.pendingControl = undefined;
      this.toWriter.write(frame);
    }
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    if (opcode === OP_PING) {
      // A leg that sent its close sends no pings; one still sending during a half-close is answered (its
      // keep-alive may wait for pongs: the half-close can last as long as an open WebSocket).
      if (this.ended) return;
      this.splice.writeControl(this.from, encodeFrame(true, OP_PONG, payload));
      if (!this.waitingForSource && queuedPast(this.from, this.splice.highWaterMark)) {
        this.waitingForSource = true;
        this.updateReading();
      }
    } else if (opcode === OP_CLOSE) {
      this.splice.onCloseFrame(this, payload);
    }
    // OP_PONG: liveness only.
  }

  onFrameError(code: number, reason: string): void {
    this.splice.onProtocolError(this, code, reason);
  }

  private write(buf: Buffer): void {
    this.toWriter.write(buf);
    if (!this.waitingForDestination && queuedPast(this.to, this.splice.highWaterMark)) {
      this.waitingForDestination = true;
      this.updateReading();
    }
  }

  /** The destination drained: read again (unless the source's own queue is full). */
  onDrain(): void {
    if (!this.waitingForDestination) return;
    this.waitingForDestination = false;
    this.updateReading();
  }

  /** The source drained its queue of answers. */
  onSourceDrain(): void {
    if (!this.waitingForSource) return;
    this.waitingForSource = false;
    this.updateReading();
  }

  /** Closing: read both legs again so their close frames are seen. */
  resumeForClose(): void {
    this.waitingForDestination = false;
    this.waitingForSource = false;
    this.updateReading();
  }

  private updateReading(): void {
    if (this.waitingForDestination || this.waitingForSource) this.from.pause();
    else this.from.resume();
  }
}

export class FrameSplice {
  readonly highWaterMark: number;
  closing = false;
  private finished = false;
  private readonly aToB: Direction;
  private readonly bToA: Direction;
  /** The closing handshake of each leg, by socket. */
  private readonly handshakes: Map<Duplex, CloseHandshake>;
  private result: Omit<SpliceResult, 'bytesAtoB' | 'bytesBtoA'> | undefined;
  private openSockets = 2;
  /**
   * The close frame of the leg that closed first, not answered yet: the other leg, told, may still send
   * (half-close) until its own close frame arrives, whose code then answers it, or the relay closes the splice
   * (its code answers). If the other leg goes without a close, the first closer is cut instead.
   */
  private unanswered: { dir: Direction; payload: Buffer } | undefined;

  constructor(
    private readonly a: Duplex,
    private readonly b: Duplex,
    options: SpliceOptions,
    private readonly onEnd: (result: SpliceResult) => void,
  ) {
    this.highWaterMark = options.highWaterMark;
    this.aToB = new Direction('a', a, b, this, options.maxFrameBytes);
    this.bToA = new Direction('b', b, a, this, options.maxFrameBytes);
    this.handshakes = new Map([a, b].map((s) => [s, new CloseHandshake(s, options.closeHandshakeMs, true)]));
  }

  /** Payload bytes forwarded so far, both ways. */
  get bytes(): number {
    return this.aToB.bytes + this.bToA.bytes;
  }

  /** Starts relaying; `headA`/`headB` are bytes that arrived with each upgrade. */
  start(headA: Buffer, headB: Buffer): void {
    for (const [socket, dir, drainDir] of [
      [this.a, this.aToB, this.bToA],
      [this.b, this.bToA, this.aToB],
    ] as const) {
      socket.on('data', (chunk: Buffer) => {
        // Everything forwarded from the chunks read in this turn of the event loop leaves in one writev.
        dir.toWriter.hold();
        dir.parser.push(chunk);
      });
      socket.on('drain', () => {
        drainDir.onDrain();
        dir.onSourceDrain();
      });
      socket.on('end', () => this.onSocketGone(dir.name));
      socket.on('close', () => this.onSocketClosed(dir.name));
      socket.on('error', () => socket.destroy());
    }
    if (headA.length > 0) this.aToB.parser.push(headA);
    if (headB.length > 0) this.bToA.parser.push(headB);
  }

  /** Writes a control frame to `socket`, after the frame in flight to it, if any. */
  writeControl(socket: Duplex, frame: Buffer): void {
    const writer = this.directionTo(socket);
    if (writer.midFrame) writer.pendingControl = frame;
    else writer.toWriter.write(frame);
  }

  /** The direction that writes to `socket`. */
  private directionTo(socket: Duplex): Direction {
    return socket === this.a ? this.bToA : this.aToB;
  }

  /** The close handshake of `socket`, after everything staged for it went out (it writes or ends the socket itself). */
  private handshakeOf(socket: Duplex): CloseHandshake {
    this.directionTo(socket).toWriter.flush();
    return this.handshakes.get(socket)!;
  }


  /** True while a data frame is half-written to `socket`: a close frame cannot go out now. */
  private midFrameTo(socket: Duplex): boolean {
    return this.directionTo(socket).midFrame;
  }

  /** Sends a close frame to a leg (its answer waited for closeHandshakeMs unless not `bounded`), or drops the leg when a frame is half-written to it. */
  private sendClose(socket: Duplex, code: number, reason = '', bounded = true): void {
    const handshake = this.handshakeOf(socket);
    if (this.midFrameTo(socket)) handshake.abort();
    else handshake.send(code, reason, bounded);
  }

  onCloseFrame(dir: Direction, payload: Buffer): void {
    const handshake = this.handshakeOf(dir.from);
    // A leg's second close frame is ignored, as ws does (RFC 6455 5.5.1: nothing follows a close). Before, one from the
    // leg that closed first was taken for the other's answer: the relay wrote a close to it at once, inside a data
    // frame still being relayed to it, and the other leg's wait for its answer lost its bound (found by review).
    if (handshake.received || this.unanswered?.dir === dir) return;
    dir.ended = true;
    if (this.closing) {
      // The other leg's answer to the close we forwarded (or to the relay's own): done with it.
      handshake.receive(payload);
      // Its code and reason answer the leg that closed first, which waited for it, reading what this one still sent
      // (before, the reason was dropped: a peer answering 4000 "bye" reached the first closer as 4000 "").
      this.answerFirstCloser(decodeClosePayload(payload));
      return;
    }
    // The parser passes only valid close frames (close-handshake.ts, closePayloadProblem).
    const { code, reason } = decodeClosePayload(payload);
    this.beginClose(dir.name, code, reason);
    // Before: answered at once and nothing more forwarded either way, so the answer a .NET listener wrote
    // after a sender's ShutdownAsync never reached the sender (whose read then ended with 0 bytes). Not bounded
    // by closeHandshakeMs: an answer may take as long as it takes (an azbridge tunnel's server after its client's
    // shutdown), as on an open WebSocket; the other leg's close, or its end, finishes it.
    this.unanswered = { dir, payload };
    this.sendClose(dir.to, code, reason, false);
  }

  /** Answers the close frame of the leg that closed first with `answer` (the other leg's close, or the relay's). */
  private answerFirstCloser(answer: { code: number; reason: string }): void {
    const first = this.unanswered;
    if (!first) return;
    this.unanswered = undefined;
    if (first.dir.from.destroyed || !first.dir.from.writable) return;
    const handshake = this.handshakeOf(first.dir.from);
    if (this.midFrameTo(first.dir.from)) handshake.abort();
    else handshake.receive(first.payload, answer);
  }

  onProtocolError(dir: Direction, code: number, reason: string): void {
    if (this.closing) {
      dir.ended = true;
      dir.from.destroy();
      return;
    }
    this.aToB.ended = this.bToA.ended = true;
    this.beginClose(dir.name, code, reason);
    this.sendClose(dir.from, code, reason);
    this.handshakeOf(dir.from).end();
    this.sendClose(dir.to, code, 'peer protocol error');
  }

  /** Closes both legs from the relay's side (shutdown, entity removed). */
  close(code: number, reason: string): void {
    if (this.closing) {
      // During a half-close: the side still sending already had a close; nothing more of it is passed on, and the
      // first closer is answered with the relay's code now. Before, it went on to the end.
      this.aToB.ended = this.bToA.ended = true;
      if (this.unanswered) this.answerFirstCloser({ code, reason });
      // A close sent unbounded (the half-close's) is bounded now: every leg has closeHandshakeMs to finish.
      for (const handshake of this.handshakes.values()) if (handshake.sent) handshake.bound();
      return;
    }
    this.aToB.ended = this.bToA.ended = true;
    this.beginClose('a', code, reason);
    for (const s of [this.a, this.b]) this.sendClose(s, code, reason);
  }

  private beginClose(by: 'a' | 'b', code: number, reason: string): void {
    this.closing = true;
    this.result = { code, reason, closedBy: by };
    // Read both legs so their close frames are seen (the one still sending is paused again by backpressure).
    this.aToB.resumeForClose();
    this.bToA.resumeForClose();
  }

  /** A leg's TCP stream ended (FIN) or closed without a close frame. */
  private onSocketGone(name: 'a' | 'b'): void {
    if (!this.closing) {
      this.closing = true;
      this.result = { code: CLOSE_ABNORMAL, reason: 'connection lost', closedBy: name };
      // Mirror the abrupt loss: the other leg sees an abnormal closure too.
      (name === 'a' ? this.b : this.a).destroy();
    }
    const socket = name === 'a' ? this.a : this.b;
    const first = this.unanswered;
    if (first?.dir.to === socket) {
      // The leg still sending after the other's close is gone without its own: the first closer is cut too, as
      // an open WebSocket's other side is (before: answered with its own code, 1000, which read as a clean end
      // of what it was being sent).
      this.unanswered = undefined;
      first.dir.from.destroy();
    } else if (first?.dir.from === socket) {
      // The first closer itself is gone (it gave up waiting): nobody to answer, nothing more to pass on, and the other
      // leg, sent its close unbounded, has closeHandshakeMs to answer it (before: held for good, counted open).
      this.unanswered = undefined;
      this.aToB.ended = this.bToA.ended = true;
      this.handshakes.get(first.dir.to)!.bound();
    }
    this.directionTo(socket).toWriter.flush();
    // Ended with its handshake's bound: a peer that sent FIN and reads nothing of what is queued for it would
    // otherwise hold the leg, and that queue, for good (before: a bare end()).
    this.handshakes.get(socket)!.end();
  }

  private onSocketClosed(name: 'a' | 'b'): void {
    this.onSocketGone(name);
    this.openSockets--;
    if (this.openSockets === 0 && !this.finished) {
      this.finished = true;
      this.onEnd({ ...this.result!, bytesAtoB: this.aToB.bytes, bytesBtoA: this.bToA.bytes });
    }
  }
}
