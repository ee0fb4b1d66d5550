// A streaming RFC 6455 frame parser for the legs the relay splices itself.
// It never reassembles messages: data-frame payload is handed on in the chunks
// it arrived in, unmasked in place, so a frame of any size costs no buffering.
// Control frames (at most 125 bytes) are handed on whole; a close frame only
// when its payload is valid (close-handshake.ts, closePayloadProblem).
import { createRequire } from 'node:module';
import { closePayloadProblem } from './close-handshake.ts';
import {
  CLOSE_PROTOCOL_ERROR,
  CLOSE_TOO_BIG,
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_PONG,
  OP_TEXT,
} from './frames.ts';

export interface FrameHandler {
  /** A data frame (text, binary or continuation) begins. */
  onDataFrame(fin: boolean, opcode: number, length: number): void;
  /** Unmasked payload of the current data frame; called zero or more times. */
  onDataPayload(chunk: Buffer): void;
  /** The current data frame's payload is complete. */
  onDataFrameEnd(fin: boolean): void;
  /** A whole control frame (close, ping, pong). */
  onControlFrame(opcode: number, payload: Buffer): void;
  /** The peer broke the protocol; the parser stops. */
  onFrameError(closeCode: number, reason: string): void;
}

export interface FrameParserOptions {
  /** Frames must be masked (true for frames from a client). */
  masked: boolean;
  /** Largest data frame payload accepted; 0 = no limit. */
  maxFrameBytes: number;
}

const READ_HEADER = 0;
const READ_PAYLOAD = 1;
const FAILED = 2;

export class FrameParser {
  private state = READ_HEADER;
  private readonly header = Buffer.alloc(14);
  private headerLength = 0;
  private fin = false;
  private opcode = 0;
  private remaining = 0;
  private readonly mask = Buffer.alloc(4);
  private isMasked = false;
  private maskOffset = 0;
  private zeroMask = false;
  private inFragmentedMessage = false;
  private controlChunks: Buffer[] = [];

  constructor(
    private readonly handler: FrameHandler,
    private readonly options: FrameParserOptions,
  ) {}

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && this.state !== FAILED) {
      if (this.state === READ_HEADER) {
        offset = this.readHeader(chunk, offset);
      } else {
        const take = Math.min(this.remaining, chunk.length - offset);
        const piece = chunk.subarray(offset, offset + take);
        offset += take;
        this.payload(piece);
      }
    }
  }

  private readHeader(chunk: Buffer, offset: number): number {
    // Copy header bytes until the whole header (2 to 14 bytes) is here.
    while (offset < chunk.length) {
      const need = this.headerLength < 2 ? 2 : this.fullHeaderLength();
      if (this.headerLength >= need) break;
      this.header[this.headerLength++] = chunk[offset++];
    }
    if (this.headerLength < 2 || this.headerLength < this.fullHeaderLength()) return offset;
    this.startFrame();
    return offset;
  }

  private fullHeaderLength(): number {
    const len7 = this.header[1] & 0x7f;
    const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    return 2 + ext + (this.header[1] & 0x80 ? 4 : 0);
  }

  private startFrame(): void {
    const b0 = this.header[0];
    const b1 = this.header[1];
    this.fin = (b0 & 0x80) !== 0;
    this.opcode = b0 & 0x0f;
    this.isMasked = (b1 & 0x80) !== 0;
    this.headerLength = 0;
    if ((b0 & 0x70) !== 0) return this.fail(CLOSE_PROTOCOL_ERROR, 'reserved bits set');
    if (this.isMasked !== this.options.masked) {
      return this.fail(CLOSE_PROTOCOL_ERROR, this.options.masked ? 'unmasked frame' : 'masked frame');
    }
    let length = b1 & 0x7f;
    let pos = 2;
    const h = this.header;
    if (length === 126) {
      // Byte by byte, here and for the mask: Buffer#readUInt16BE's and Buffer#copy's argument checks cost more than
      // the bytes (the start of every frame, two a relayed HTTP request on its listener's control channel).
      length = (h[2] << 8) | h[3];
      pos = 4;
    } else if (length === 127) {
      const high = h.readUInt32BE(2);
      // RFC 6455 5.2: the most significant bit MUST be 0, and a control frame's length fits in 7 bits.
      if (high & 0x80000000) return this.fail(CLOSE_PROTOCOL_ERROR, 'length with its top bit set');
      if (high > 0x1fffff) return this.fail((b0 & 0x08) !== 0 ? CLOSE_PROTOCOL_ERROR : CLOSE_TOO_BIG, 'frame too large');
      length = high * 0x100000000 + h.readUInt32BE(6);
      pos = 10;
    }
    if (this.isMasked) {
      const mask = this.mask;
      mask[0] = h[pos];
      mask[1] = h[pos + 1];
      mask[2] = h[pos + 2];
      mask[3] = h[pos + 3];
      this.maskOffset = 0;
      // A zero key (our bridge, over TLS or loopback) leaves the payload as it is.
      this.zeroMask = (mask[0] | mask[1] | mask[2] | mask[3]) === 0;
    }
    this.remaining = length;
    const op = this.opcode;
    if (op === OP_CLOSE || op === OP_PING || op === OP_PONG) {
      if (!this.fin || length > 125) return this.fail(CLOSE_PROTOCOL_ERROR, 'bad control frame');
      this.controlChunks = [];
      this.state = READ_PAYLOAD;
      if (length === 0) this.endControl();
      return;
    }
    if (op === OP_CONTINUATION) {
      if (!this.inFragmentedMessage) return this.fail(CLOSE_PROTOCOL_ERROR, 'unexpected continuation');
    } else if (op === OP_TEXT || op === OP_BINARY) {
      if (this.inFragmentedMessage) return this.fail(CLOSE_PROTOCOL_ERROR, 'expected continuation');
    } else {
      return this.fail(CLOSE_PROTOCOL_ERROR, 'unknown opcode');
    }
    if (this.options.maxFrameBytes > 0 && length > this.options.maxFrameBytes) {
      return this.fail(CLOSE_TOO_BIG, 'frame too large');
    }
    this.inFragmentedMessage = !this.fin;
    this.state = READ_PAYLOAD;
    this.handler.onDataFrame(this.fin, op, length);
    if (length === 0) this.endData();
  }

  private payload(piece: Buffer): void {
    if (this.isMasked && !this.zeroMask) {
      unmaskInPlace(piece, this.mask, this.maskOffset);
      this.maskOffset = (this.maskOffset + piece.length) & 3;
    }
    this.remaining -= piece.length;
    if (this.opcode >= OP_CLOSE) {
      this.controlChunks.push(piece);
      if (this.remaining === 0) this.endControl();
      return;
    }
    this.handler.onDataPayload(piece);
    if (this.remaining === 0) this.endData();
  }

  private endControl(): void {
    this.state = READ_HEADER;
    const payload = this.controlChunks.length === 1 ? this.controlChunks[0] : Buffer.concat(this.controlChunks);
    this.controlChunks = [];
    const problem = this.opcode === OP_CLOSE ? closePayloadProblem(payload) : undefined;
    if (problem) return this.fail(problem.code, problem.reason);
    this.handler.onControlFrame(this.opcode, payload);
  }

  private endData(): void {
    this.state = READ_HEADER;
    this.handler.onDataFrameEnd(this.fin);
  }

  private fail(code: number, reason: string): void {
    this.state = FAILED;
    this.handler.onFrameError(code, reason);
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** bufferutil's native unmask (the optional dependency `ws` also uses), when it is installed. */
const nativeUnmask = ((): ((data: Buffer, mask: Buffer) => void) | undefined => {
  try {
    return (createRequire(import.meta.url)('bufferutil') as { unmask(data: Buffer, mask: Buffer): void }).unmask;
  } catch {
    return undefined;
  }
})();

/** Below this many bytes the call into native code costs more than it saves. */
const NATIVE_MIN_BYTES = 64;

/** XORs `data` with the 4-byte mask, starting `offset` bytes into the mask. */
export function unmaskInPlace(data: Buffer, mask: Buffer, offset: number): void {
  if (nativeUnmask && data.length >= NATIVE_MIN_BYTES) {
    nativeUnmask(data, offset === 0 ? mask : Buffer.from([mask[offset], mask[(offset + 1) & 3], mask[(offset + 2) & 3], mask[(offset + 3) & 3]]));
  } else {
    unmaskInJs(data, mask, offset);
  }
}

/** unmaskInPlace in plain JavaScript. */
export function unmaskInJs(data: Buffer, mask: Buffer, offset: number): void {
  const n = data.length;
  let i = 0;
  // Byte-wise until the memory is 4-byte aligned, then a 32-bit word a step.
  while (i < n && ((data.byteOffset + i) & 3) !== 0) {
    data[i] ^= mask[(offset + i) & 3];
    i++;
  }
  const words = LITTLE_ENDIAN ? (n - i) >>> 2 : 0;
  if (words > 0) {
    const p = (offset + i) & 3;
    // The mask as it lines up from here, read as a little-endian word.
    const word = (mask[p] | (mask[(p + 1) & 3] << 8) | (mask[(p + 2) & 3] << 16) | (mask[(p + 3) & 3] << 24)) >>> 0;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w] ^= word;
    i += words * 4;
  }
  for (; i < n; i++) data[i] ^= mask[(offset + i) & 3];
}
