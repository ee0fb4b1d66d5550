// A lean server-side WebSocket endpoint on a raw socket, for connections the
// relay terminates itself (pub/sub clients). Compared with `ws` it keeps flat
// state and lets callers write frames they encoded once for many sockets
// (fan-out), and it exposes the socket's queued bytes so callers can enforce
// an outbound cap. Frames written during one turn of the event loop are
// queued and handed to the kernel together in one write when the turn ends
// (a fan-out burst costs one syscall per socket, not one per event).
// Messages are reassembled up to `maxMessageBytes`; text is checked to be
// UTF-8 (RFC 6455 8.1). The close handshake is close-handshake.ts.
// What the peer sends is not read while `outboundHighWaterMark` bytes are
// queued to it: every answer the relay writes (pongs, acks, `pong` messages)
// is bounded like data, since a peer that does not read cannot make the
// relay queue answers for it (a flood of pings or acked requests grew the
// relay by 60 to 150 MB, issue 18).
import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import { ownedPiece } from './buffer-views.ts';
import { CloseHandshake } from './close-handshake.ts';
import { FrameParser, type FrameHandler } from './frame-parser.ts';
import { CLOSE_INVALID_DATA, CLOSE_TOO_BIG, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encodeFrame, encodeFrameHeader, frameHeaderLength, writeFrameHeader } from './frames.ts';

export const CLOSE_ABNORMAL = 1006;

export interface MessageSocketEvents<Owner> {
  /** A whole data message. `data` is owned by the receiver. */
  onMessage(socket: MessageSocket<Owner>, isBinary: boolean, data: Buffer): void;
  /** Fires once, when the underlying socket is gone. */
  onClosed(socket: MessageSocket<Owner>, code: number, reason: string): void;
  /** The socket's write queue drained. */
  onDrain(socket: MessageSocket<Owner>): void;
}

export interface MessageSocketOptions {
  maxMessageBytes: number;
  /** Bytes queued to the peer past which the peer is not read until the queue drains. */
  outboundHighWaterMark: number;
  /** How long to wait for the peer's close frame before dropping the socket. */
  closeHandshakeMs: number;
}

const PING_FRAME = encodeFrame(true, OP_PING, Buffer.alloc(0));

/** A whole text frame carrying `text`. */
export function encodeTextFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const header = encodeFrameHeader(true, OP_TEXT, length);
  const frame = Buffer.allocUnsafe(header.length + length);
  header.copy(frame, 0);
  frame.write(text, header.length, 'utf8');
  return frame;
}

/** Sockets with queued frames, written out together once the current I/O is handled. */
let dirty: MessageSocket<unknown>[] = [];

/**
 * A socket's queued frames: whole frames as buffers, and numbered text frames
 * as a number followed by two buffers (head, tail: the payload is head + the
 * number in decimal + tail), where only the number is the socket's own and
 * the buffers are shared, so nothing is allocated per recipient but one
 * joined buffer when the queue is written.
 */
type Outbox = (Buffer | number)[];

/**
 * Digits of a non-negative integer in decimal: compared with powers of ten rather than divided by ten digit by
 * digit, as it is worked out for every reliable delivery (queued, compared, joined).
 */
function decimalLength(n: number): number {
  if (n < 10000) return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : 4;
  if (n < 100000000) return n < 100000 ? 5 : n < 1000000 ? 6 : n < 10000000 ? 7 : 8;
  let digits = 9;
  // Powers of ten are exact doubles up to 1e22, past any safe integer.
  for (let power = 1e9; n >= power; power *= 10) digits++;
  return digits;
}

/** Writes `n` in decimal as `digits` bytes ending before `end`. */
function writeDecimal(out: Buffer, end: number, digits: number, n: number): void {
  let d = end - 1;
  if (n < 0x80000000) {
    for (let v = n | 0; d >= end - digits; d--, v = (v / 10) | 0) out[d] = 0x30 + (v % 10);
    return;
  }
  for (; d >= end - digits; d--, n = Math.floor(n / 10)) out[d] = 0x30 + (n % 10);
}

/** Payload length of a numbered text frame. */
function numberedLength(n: number, head: Buffer, tail: Buffer): number {
  return head.length + decimalLength(n) + tail.length;
}

const TYPED_ARRAY_SET = Uint8Array.prototype.set;

/**
 * Copies `source` into `out` at `at` (which has room for it); a short one byte by byte. A long one with
 * TypedArray#set: Buffer#copy checks its arguments and makes a view of the source first (~30 ns whatever the size;
 * ~360 instructions per reliable delivery against ~170, callgrind).
 */
function copyInto(source: Buffer, out: Buffer, at: number): number {
  const length = source.length;
  if (length > 8) {
    // Called through the function itself: `out.set` was looked up the slow way (V8's LoadIC) at every call.
    TYPED_ARRAY_SET.call(out, source, at);
    return length;
  }
  for (let i = 0; i < length; i++) out[at + i] = source[i];
  return length;
}

/**
 * The queued frames in one buffer of `size` bytes (what queuing them counted, MessageSocket.outboxBytes: not counted
 * again here): numbered frames get their header and number written in place, and where each number's digits end
 * goes into `digitEnds`, in order (for renumbered()).
 */
function joinOutbox(items: Outbox, size: number, digitEnds: number[]): Buffer {
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  let numbered = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'number') {
      at += copyInto(item, out, at);
      continue;
    }
    const head = items[i + 1] as Buffer;
    const tail = items[i + 2] as Buffer;
    i += 2;
    const digits = decimalLength(item);
    at += writeFrameHeader(out, at, true, OP_TEXT, head.length + digits + tail.length);
    at += copyInto(head, out, at);
    at += digits;
    writeDecimal(out, at, digits, item);
    digitEnds[numbered++] = at;
    at += copyInto(tail, out, at);
  }
  // Never what allocUnsafe left in the buffer past the frames, should the count ever be larger than they are.
  return at === size ? out : out.subarray(0, at);
}

/** How a socket's queue compares with another's (sameShape). */
const DIFFERENT = 0;
/** The same frames, by identity, none numbered: the other's joined buffer is this one's too. */
const SAME = 1;
/** The same but for their numbers, each of as many digits as the other's: joined, the bytes differ only in digits. */
const RENUMBERED = 2;

/** Compares queue `items` with queue `model`, frame by frame. */
function sameShape(model: Outbox, items: Outbox): typeof DIFFERENT | typeof SAME | typeof RENUMBERED {
  const count = items.length;
  if (model.length !== count) return DIFFERENT;
  let numbered = false;
  for (let i = 0; i < count; i++) {
    const item = items[i];
    const other = model[i];
    if (typeof item !== 'number') {
      if (item !== other) return DIFFERENT;
      continue;
    }
    // A numbered frame: its number, then its head and tail, compared here as the buffers they are.
    if (typeof other !== 'number' || items[i + 1] !== model[i + 1] || items[i + 2] !== model[i + 2]) return DIFFERENT;
    if (decimalLength(item) !== decimalLength(other)) return DIFFERENT;
    numbered = true;
    i += 2;
  }
  return numbered ? RENUMBERED : SAME;
}

/**
 * The queue `items` joined, given `joined`, a queue of its shape joined (RENUMBERED), and where that one's digits
 * end (joinOutbox's digitEnds): a copy of it with this queue's numbers written over its own, instead of every frame
 * copied again (each a call of TypedArray#set: ~210 instructions per reliable delivery, callgrind).
 */
function renumbered(joined: Buffer, digitEnds: readonly number[], items: Outbox): Buffer {
  const out = Buffer.allocUnsafe(joined.length);
  TYPED_ARRAY_SET.call(out, joined, 0);
  let numbered = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== 'number') continue;
    writeDecimal(out, digitEnds[numbered++], decimalLength(item), item);
    // Past its head and tail.
    i += 2;
  }
  return out;
}

/** Where the digits of flushDirty's last joined queue end (joinOutbox); kept between turns, it holds numbers only. */
const lastDigitEnds: number[] = [];

/**
 * Writes every dirty socket's queue. Members of a group get the same shared
 * frames in the same order, so a queue like the one joined last (sameShape)
 * reuses its joined buffer, as it is when the frames are the same, as a copy
 * with its own numbers written over it when only the numbers (reliable
 * sessions' sequence ids) differ.
 */
function flushDirty(): void {
  const sockets = dirty;
  dirty = [];
  let lastFrames: Outbox | undefined;
  let lastJoined: Buffer | undefined;
  for (const socket of sockets) {
    const size = socket.outboxSize;
    const frames = socket.takeOutbox();
    if (!frames) continue;
    if (frames.length === 1) {
      socket.writeQueued(frames[0] as Buffer);
      continue;
    }
    const likeness = lastFrames ? sameShape(lastFrames, frames) : DIFFERENT;
    if (likeness === DIFFERENT) {
      lastFrames = frames;
      lastJoined = joinOutbox(frames, size, lastDigitEnds);
    }
    socket.writeQueued(likeness === RENUMBERED ? renumbered(lastJoined!, lastDigitEnds, frames) : lastJoined!);
  }
}

/**
 * What each frame of a message, and each piece of one that arrived in its own
 * read, is charged beyond its bytes: each is kept as its own Buffer until the
 * message ends. A message of 1-byte fragments held ~100 bytes per byte
 * (106 MB for one under the 1 MiB cap).
 */
export const PIECE_COST = 64;
/** Charges allowed per message: its byte cap, and at least 1,024 pieces. */
const MIN_PIECE_BUDGET = 1024 * PIECE_COST;

export class MessageSocket<Owner = unknown> implements FrameHandler {
  /** Time (ms since epoch) the last frame of any kind arrived. */
  lastReceivedAt = Date.now();
  private readonly parser: FrameParser;
  private chunks: Buffer[] = [];
  /** How many of `chunks` came in reads before the current one (already owned: ownPiecesOfThisRead()). */
  private piecesOfEarlierReads = 0;
  private messageBytes = 0;
  /** PIECE_COST per frame and piece of the message being read. */
  private messageOverhead = 0;
  private messageIsBinary = false;
  private readonly closing: CloseHandshake;
  private closeCode = CLOSE_ABNORMAL;
  private closeReason = '';
  private reported = false;
  /** The peer broke the protocol: the close frame goes at the end of the turn (fail()). */
  private failing = false;

  /** Between a protocol error and the close frame: nothing more the peer sent is taken (its socket is paused). */
  private get discarding(): boolean {
    return this.failing && !this.closing.sent;
  }
  /** Frames written this turn, not yet handed to the socket. */
  private outbox: Outbox | undefined;
  private outboxBytes = 0;
  /** Not reading the peer: outboundHighWaterMark bytes are queued to it. */
  private readingPaused = false;
  /** Not reading the peer: the owner is still busy with what it sent (hold()). */
  private held = false;
  /** The owner held back at isFull() and waits for onDrain. */
  private drainOwed = false;

  /**
   * `owner` is whatever the caller keeps per connection (events get it back
   * through the socket); `head` is any bytes read past the upgrade request.
   */
  constructor(
    readonly socket: Socket,
    readonly owner: Owner,
    private readonly events: MessageSocketEvents<Owner>,
    private readonly options: MessageSocketOptions,
    private head?: Buffer,
  ) {
    // No frame cap of the parser's: a frame is held to the message cap as its header arrives (onDataFrame), read live,
    // so a reload that raised limits.pubsubMessageBytes holds on open sockets too (a cap copied here closed them 1009).
    this.parser = new FrameParser(this, { masked: true, maxFrameBytes: 0 });
    this.closing = new CloseHandshake(socket, options.closeHandshakeMs);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('drain', () => this.drained());
    socket.on('error', () => socket.destroy());
    // The peer ended its side without a close frame: nothing more will come, so the connection ends at once (abnormal closure).
    socket.on('end', () => {
      if (!this.closing.received) socket.destroy();
    });
    socket.on('close', () => this.reportClosed());
  }

  /** Handles bytes that came with the upgrade request; call once the owner is ready for messages. */
  start(): void {
    const head = this.head;
    this.head = undefined;
    if (head && head.length > 0) this.receive(head);
  }

  get isOpen(): boolean {
    return !this.closing.sent && !this.socket.destroyed;
  }

  /** Bytes written but not yet handed to the kernel. */
  get bufferedBytes(): number {
    return this.socket.writableLength + this.outboxBytes;
  }

  /**
   * True when `limit` or more bytes are queued (bufferedBytes); an owner that
   * then holds back hears onDrain once the queue is handed to the kernel.
   * That is not the same as the socket's 'drain': Node emits none for a
   * write the kernel takes at once, even one past the high-water mark, and a
   * reliable session waiting for it stalled for good, as did reading a peer
   * paused for its queued answers (found by a fan-out test of a subscriber
   * that stops reading, and test/websocket/answer-backpressure.test.ts).
   */
  isFull(limit: number): boolean {
    if (!this.queuedPast(limit)) return false;
    this.drainOwed = true;
    return true;
  }

  /**
   * `limit` or more bytes queued, and something will say when they are out:
   * this turn's queue is yet to be written (writeQueued), or the socket owes
   * a 'drain'. A socket queue below its own high-water mark owes none
   * (backpressure.ts), so up to that mark counts as not past any limit.
   */
  private queuedPast(limit: number): boolean {
    return this.bufferedBytes >= limit && (this.outboxBytes > 0 || this.socket.writableNeedDrain);
  }

  /** Writes a frame encoded by the caller (possibly shared with other sockets). */
  writeFrame(frame: Buffer): void {
    if (!this.isOpen) return;
    this.queue(frame);
  }

  /**
   * Writes a text frame whose payload is `head`, the non-negative integer `n`
   * in decimal, and `tail`: the buffers may be shared with other sockets, and
   * the frame is built when the queue is written.
   */
  writeNumberedText(head: Buffer, n: number, tail: Buffer): void {
    if (!this.isOpen) return;
    const payload = numberedLength(n, head, tail);
    (this.outbox ?? this.startOutbox()).push(n, head, tail);
    this.outboxBytes += frameHeaderLength(payload) + payload;
  }

  private queue(frame: Buffer): void {
    (this.outbox ?? this.startOutbox()).push(frame);
    this.outboxBytes += frame.length;
  }

  /**
   * The turn's first frame: a queue for it, and the socket on the list written when the turn ends. Apart from
   * queuing, which runs for every delivery: the JIT inlines a small writeNumberedText whole where it is called.
   */
  private startOutbox(): Outbox {
    const outbox: Outbox = [];
    this.outbox = outbox;
    if (dirty.length === 0) setImmediate(flushDirty);
    dirty.push(this);
    return outbox;
  }

  /** Bytes of the queued frames as they will be written (headers and numbers included). */
  get outboxSize(): number {
    return this.outboxBytes;
  }

  /** Takes the queued frames (for flushDirty, which writes them with writeQueued). */
  takeOutbox(): Outbox | undefined {
    const frames = this.outbox;
    this.outbox = undefined;
    this.outboxBytes = 0;
    return frames;
  }

  writeQueued(joined: Buffer): void {
    if (this.socket.destroyed) return;
    this.socket.write(joined);
    // No 'drain' will follow when Node needs none (the kernel took everything): act on it now.
    if ((this.drainOwed || this.readingPaused) && !this.socket.writableNeedDrain) {
      process.nextTick(() => {
        if (!this.socket.destroyed) this.drained();
      });
    }
  }

  /** The queue went to the kernel: read the peer again (unless held) and tell the owner. */
  private drained(): void {
    this.drainOwed = false;
    if (this.readingPaused) {
      this.readingPaused = false;
      if (!this.held) this.socket.resume();
    }
    this.events.onDrain(this);
  }

  /** Hands the queued frames to the socket now, in one write. */
  flushOutbox(): void {
    const size = this.outboxBytes;
    const frames = this.takeOutbox();
    if (frames) this.writeQueued(frames.length === 1 ? (frames[0] as Buffer) : joinOutbox(frames, size, []));
  }

  sendText(text: string): void {
    this.writeFrame(encodeTextFrame(text));
  }

  ping(): void {
    this.writeFrame(PING_FRAME);
  }

  /** Starts the close handshake; the socket ends when the peer answers or after closeHandshakeMs. */
  close(code: number, reason = ''): void {
    if (this.closing.sent || this.socket.destroyed) return;
    this.closeCode = code;
    this.closeReason = reason;
    this.flushOutbox();
    this.closing.send(code, reason);
  }

  /** Drops the socket without a close frame. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Stops reading the peer until release(): the owner is still busy with messages it had (frames already read still arrive). */
  hold(): void {
    if (this.held) return;
    this.held = true;
    // A closing socket is read for the peer's answer (close-handshake.ts).
    if (!this.closing.sent) this.socket.pause();
  }

  /** The owner holds it (hold()): its silence is the relay's doing, not the peer's. */
  get isHeld(): boolean {
    return this.held;
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    // Nothing was read while held, pongs included: the peer's silence starts now.
    this.lastReceivedAt = Date.now();
    if (!this.readingPaused && !this.socket.destroyed) this.socket.resume();
  }

  private receive(chunk: Buffer): void {
    this.lastReceivedAt = Date.now();
    this.piecesOfEarlierReads = this.chunks.length;
    this.parser.push(chunk);
    if (this.chunks.length > this.piecesOfEarlierReads) this.ownPiecesOfThisRead();
    // Read again once the queue is out: at 'drain', or when it is handed to
    // the kernel without one (writeQueued).
    if (!this.readingPaused && this.queuedPast(this.options.outboundHighWaterMark) && !this.socket.destroyed) {
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  // FrameHandler

  onDataFrame(_fin: boolean, opcode: number, length: number): void {
    if (this.discarding) return;
    if (opcode !== 0) {
      this.messageIsBinary = opcode === OP_BINARY;
      this.chunks = [];
      this.piecesOfEarlierReads = 0;
      this.messageBytes = 0;
      this.messageOverhead = 0;
    }
    this.messageBytes += length;
    if (this.messageBytes > this.options.maxMessageBytes) {
      this.fail(CLOSE_TOO_BIG, 'message too big');
    } else {
      this.chargePiece();
    }
  }

  /**
   * The pieces of a message still being read that came in this read, each a view of the read's buffer, copied
   * out when small beside it: kept as views, a read of ~64 KiB of empty pongs and one 1-byte piece held all of
   * it, charged 65 bytes (~512 MiB held for one socket within the 1 MiB cap). A piece of at least half its read
   * stays a view (it holds at most twice its bytes).
   */
  private ownPiecesOfThisRead(): void {
    for (let i = this.piecesOfEarlierReads; i < this.chunks.length; i++) this.chunks[i] = ownedPiece(this.chunks[i]);
  }

  onDataPayload(chunk: Buffer): void {
    if (this.closing.sent || this.discarding) return;
    this.chunks.push(chunk);
    this.chargePiece();
  }

  private chargePiece(): void {
    this.messageOverhead += PIECE_COST;
    if (this.messageOverhead > Math.max(this.options.maxMessageBytes, MIN_PIECE_BUDGET)) this.fail(CLOSE_TOO_BIG, 'message in too many pieces');
  }

  onDataFrameEnd(fin: boolean): void {
    if (!fin || this.closing.sent || this.discarding) return;
    const data = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.messageBytes);
    this.chunks = [];
    this.piecesOfEarlierReads = 0;
    this.messageBytes = 0;
    this.messageOverhead = 0;
    if (!this.messageIsBinary && !isUtf8(data)) return this.fail(CLOSE_INVALID_DATA, 'text is not UTF-8');
    this.events.onMessage(this, this.messageIsBinary, data);
  }

  onControlFrame(opcode: number, payload: Buffer): void {
    if (this.discarding) return;
    if (opcode === OP_PING) {
      if (this.isOpen) this.queue(encodeFrame(true, OP_PONG, payload));
      return;
    }
    if (opcode !== OP_CLOSE) return;
    const first = !this.closing.sent;
    if (first) this.flushOutbox();
    const { code, reason } = this.closing.receive(payload);
    if (first) {
      this.closeCode = code;
      this.closeReason = reason;
    }
  }

  onFrameError(closeCode: number, reason: string): void {
    this.fail(closeCode, reason);
  }

  /**
   * The peer broke the protocol: nothing more it sends can be read, so end after the close frame. The frame goes at
   * the end of this turn: what the owner answers to the messages this read delivered (a publish's ack, settled
   * within the turn) goes before it (before, a message followed in the same read by one too large was published,
   * and its ack lost behind the close frame).
   */
  private fail(code: number, reason: string): void {
    this.chunks = [];
    if (this.failing) return;
    this.failing = true;
    if (!this.socket.destroyed) this.socket.pause();
    setImmediate(() => {
      this.close(code, reason);
      this.closing.end();
    });
  }

  private reportClosed(): void {
    if (this.reported) return;
    this.reported = true;
    this.chunks = [];
    this.outbox = undefined;
    this.outboxBytes = 0;
    this.events.onClosed(this, this.closeCode, this.closeReason);
  }
}
