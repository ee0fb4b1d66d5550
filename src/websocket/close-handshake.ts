// The closing handshake of one server-side WebSocket leg (RFC 6455 5.5.1,
// 7.1.2): the relay sends its close frame once, then waits at most
// `closeHandshakeMs` for the peer's (reading the socket again if its owner had
// paused it) before dropping the socket; a close frame from the peer is
// answered (unless the relay's went first) and the relay's side of the TCP
// stream is ended. Every endpoint the relay terminates uses
// this: pub/sub sockets (message-socket.ts), spliced legs (frame-splice.ts)
// and HTTP-mode rendezvous legs (hybrid/http-exchange.ts). A peer dropped
// for not answering in time is reset where that loses nothing it could still
// read (dropUnanswered). What a peer's close
// frame may carry (RFC 6455 5.5.1, 7.4) is checked here too, by the frame
// parser all of them share: a broken one is a protocol error, never passed on.
import { isUtf8 } from 'node:buffer';
import type { Duplex } from 'node:stream';
import { CLOSE_NO_STATUS, CLOSE_PROTOCOL_ERROR, OP_CLOSE, decodeClosePayload, encodeClosePayload, encodeFrame, isSendableCloseCode } from './frames.ts';

const CLOSE_INVALID_PAYLOAD = 1007;

/**
 * Why a peer's close frame payload breaks RFC 6455, as the close code to fail
 * with: a 1-byte payload or a code no endpoint may send (1005, 1006, 1015,
 * unassigned ones) is 1002; a reason that is not UTF-8 is 1007.
 */
export function closePayloadProblem(payload: Buffer): { code: number; reason: string } | undefined {
  if (payload.length === 0) return undefined;
  if (payload.length === 1) return { code: CLOSE_PROTOCOL_ERROR, reason: 'close frame with a 1-byte payload' };
  if (!isSendableCloseCode(payload.readUInt16BE(0))) return { code: CLOSE_PROTOCOL_ERROR, reason: 'invalid close code' };
  if (!isUtf8(payload.subarray(2))) return { code: CLOSE_INVALID_PAYLOAD, reason: 'close reason is not UTF-8' };
  return undefined;
}

/** With `afterQueue`, how many closeHandshakeMs a peer has to read what was queued before the close frame. */
export const QUEUE_WAIT_FACTOR = 10;

export class CloseHandshake {
  /** The relay's close frame went out (or the socket was dropped instead). */
  sent = false;
  /** The peer's close frame arrived. */
  received = false;
  private timer: NodeJS.Timeout | undefined;
  /** The relay's close frame (and all queued before it) has reached the kernel. */
  private closeWritten = false;
  /** The bound waits for closeWritten (afterQueue): armTimer was asked for before it. */
  private timerWanted = false;
  /** While the bound waits for closeWritten: drops a peer that has not read the queue in QUEUE_WAIT_FACTOR bounds. */
  private queueTimer: NodeJS.Timeout | undefined;

  /**
   * `afterQueue`: the bound starts once the close frame, and everything queued before it, is written (a relayed
   * WebSocket: what the other side sent last reaches a slow reader whole; its queue is bounded by backpressure),
   * which may take up to QUEUE_WAIT_FACTOR bounds. Otherwise at once (a pub/sub socket closed for not reading must
   * not hold its queue long).
   */
  constructor(
    private readonly socket: Duplex,
    private readonly closeHandshakeMs: number,
    private readonly afterQueue = false,
  ) {
    socket.once('close', () => this.dispose());
  }

  /** Writes the relay's close frame; notes when it is out of the socket's queue. */
  private writeClose(frame: Buffer): void {
    this.socket.write(frame, () => {
      this.closeWritten = true;
      clearTimeout(this.queueTimer);
      this.queueTimer = undefined;
      if (this.timerWanted) this.armTimer();
    });
  }

  /**
   * Sends the relay's close frame (once) and bounds the wait for the peer's
   * answer, unless `bounded` is false (a relayed WebSocket's half-close: the
   * peer may go on sending as long as it likes). A code that may not appear on
   * the wire goes out as 1002.
   */
  send(code: number, reason = '', bounded = true): void {
    if (this.sent || this.socket.destroyed) return;
    this.sent = true;
    const sendable = code === CLOSE_NO_STATUS || isSendableCloseCode(code) ? code : CLOSE_PROTOCOL_ERROR;
    this.writeClose(encodeFrame(true, OP_CLOSE, encodeClosePayload(sendable, reason)));
    if (bounded) this.armTimer();
  }

  /** Bounds the wait for the peer's answer to a close sent unbounded (send(..., false)): closeHandshakeMs from now. */
  bound(): void {
    this.armTimer();
  }

  /** Gives up on the handshake: the socket is dropped without a close frame (half a frame is on the wire). */
  abort(): void {
    this.sent = true;
    this.socket.destroy();
  }

  /**
   * The peer's close frame: answered (with `answer`, the other leg's code and
   * reason; by default the peer's own code, or none for a code that may not be
   * echoed) unless the relay's close went first, then the relay ends its side.
   * Returns what the peer said.
   */
  receive(payload: Buffer, answer?: { code: number; reason: string }): { code: number; reason: string } {
    const said = decodeClosePayload(payload);
    this.received = true;
    if (!this.sent) {
      this.sent = true;
      const close = answer ? encodeClosePayload(answer.code, answer.reason) : encodeClosePayload(isSendableCloseCode(said.code) ? said.code : CLOSE_NO_STATUS);
      this.writeClose(encodeFrame(true, OP_CLOSE, close));
    }
    this.socket.end();
    this.armTimer();
    return said;
  }

  /** Ends the relay's side once its close frame is out (the peer broke the protocol: nothing more it sends is read). */
  end(): void {
    this.socket.end();
    this.armTimer();
  }

  private armTimer(): void {
    if (this.timer || this.socket.destroyed) return;
    // The peer's answer (its close frame, then the end of its stream) is seen only if read:
    // whatever had paused reading (backpressure, a held client) is over now.
    this.socket.resume();
    // (No close frame of the relay's yet, in end() after a protocol error: nothing to wait for.)
    if (this.afterQueue && this.sent && !this.closeWritten) {
      this.timerWanted = true;
      // A peer with a closed TCP window would hold the leg for good: the queue has a bound of its own, a long one.
      // (Node writes a queue in large writevs, so how far a reader got cannot be watched more finely.)
      this.queueTimer ??= setTimeout(() => dropUnanswered(this.socket), this.closeHandshakeMs * QUEUE_WAIT_FACTOR);
      this.queueTimer.unref();
      return;
    }
    // A relayed leg's peer may still be reading what its kernel holds of the queue (the other side's last words): a
    // FIN lets it arrive. Elsewhere the peer that did not answer in time is reset.
    this.timer = setTimeout(() => (this.afterQueue ? this.socket.destroy() : dropUnanswered(this.socket)), this.closeHandshakeMs);
    this.timer.unref();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.queueTimer);
    this.queueTimer = undefined;
  }
}

/**
 * Drops a peer that did not answer in time, or read nothing of a relayed leg's queue: with a reset where the socket
 * is plain TCP, so that the kernel lets go at once of what it still held for the peer. Destroyed with a FIN, the
 * socket lived on in the kernel, behind that data, for as long as TCP tries (minutes) when the peer read nothing: a
 * client recovering a session in a loop without reading left megabytes so per recovery (found by review). A TLS
 * socket, whose handle cannot be reset, is destroyed.
 */
export function dropUnanswered(socket: Duplex): void {
  const reset = (socket as Duplex & { resetAndDestroy?: () => unknown }).resetAndDestroy;
  if (reset) {
    try {
      reset.call(socket);
      return;
    } catch {
      // Not a TCP handle (ERR_INVALID_HANDLE_TYPE, thrown before anything was done).
    }
  }
  socket.destroy();
}
