// RFC 6455 frame constants and encoders for frames the relay writes as a
// server (never masked).

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_PROTOCOL_ERROR = 1002;
export const CLOSE_NO_STATUS = 1005;
export const CLOSE_INVALID_DATA = 1007;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;
export const CLOSE_INTERNAL = 1011;

/** Bytes in the header of an unmasked frame carrying `length` payload bytes. */
export function frameHeaderLength(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Writes the header of an unmasked frame into `out` at `at`; returns the bytes written (frameHeaderLength). */
export function writeFrameHeader(out: Buffer, at: number, fin: boolean, opcode: number, length: number): number {
  out[at] = (fin ? 0x80 : 0) | opcode;
  if (length < 126) {
    out[at + 1] = length;
    return 2;
  }
  if (length < 65536) {
    out[at + 1] = 126;
    // Two byte stores, not writeUInt16BE: its checks cost ~75 instructions per reliable delivery (callgrind).
    out[at + 2] = length >>> 8;
    out[at + 3] = length & 0xff;
    return 4;
  }
  out[at + 1] = 127;
  out.writeUInt32BE(Math.floor(length / 0x100000000), at + 2);
  out.writeUInt32BE(length >>> 0, at + 6);
  return 10;
}

/** Header of an unmasked frame carrying `length` payload bytes. */
export function encodeFrameHeader(fin: boolean, opcode: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(frameHeaderLength(length));
  writeFrameHeader(h, 0, fin, opcode, length);
  return h;
}

/** A whole unmasked text frame carrying `text`, in one buffer (the text encoded straight into it). */
export function encodeTextFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const at = frameHeaderLength(length);
  const out = Buffer.allocUnsafe(at + length);
  writeFrameHeader(out, 0, true, OP_TEXT, length);
  out.write(text, at, 'utf8');
  return out;
}

/** A whole unmasked frame. */
export function encodeFrame(fin: boolean, opcode: number, payload: Buffer): Buffer {
  return Buffer.concat([encodeFrameHeader(fin, opcode, payload.length), payload]);
}

/** Close frame payload: code and reason (reason cut to fit 123 bytes). */
export function encodeClosePayload(code: number, reason = ''): Buffer {
  if (code === CLOSE_NO_STATUS) return Buffer.alloc(0);
  let text = Buffer.from(reason, 'utf8');
  if (text.length > 123) text = text.subarray(0, 123);
  const out = Buffer.allocUnsafe(2 + text.length);
  out.writeUInt16BE(code, 0);
  text.copy(out, 2);
  return out;
}

export function decodeClosePayload(payload: Buffer): { code: number; reason: string } {
  if (payload.length < 2) return { code: CLOSE_NO_STATUS, reason: '' };
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') };
}

/** Close codes an endpoint may send on the wire (RFC 6455 7.4). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}
