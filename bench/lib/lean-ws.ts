// A lean WebSocket client for the load generator: a raw TCP socket read
// through one buffer shared by every socket (`onread`: no allocation and no
// stream machinery per read), the opening handshake written by hand, and a
// frame parser that hands over each frame's payload as a view of that buffer
// (valid only during the call; partial frames are copied aside). Outgoing frames are masked as RFC 6455 requires; bulk
// senders pre-mask a buffer once and send it many times (`sendRaw`), so the
// generator spends no CPU on masking while the server still unmasks for real.
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

export interface LeanWsOptions {
  port: number;
  /** Path and query, e.g. /client/hubs/bench?access_token=... */
  path: string;
  protocols?: string[];
  /** Called for each whole frame; `payload` is only valid during the call. */
  onFrame?(opcode: number, payload: Buffer): void;
  /** Byte-counting mode for bulk receivers: payload bytes as they arrive, never assembled. */
  onPayloadBytes?(bytes: number): void;
  onClose?(): void;
  /** The payload of a close frame from the server (its code and reason), before the socket is ended. */
  onCloseFrame?(payload: Buffer): void;
  timeoutMs?: number;
  /**
   * Read through the socket's 'data' events (a fresh 64 KiB buffer per read,
   * as a plain `net.Server` connection reads) instead of the shared buffer:
   * for a receiver compared with TCP sinks that read that way.
   */
  streamReads?: boolean;
}

/** Header for a masked client frame of `length` bytes with mask `mask`. */
function maskedHeader(opcode: number, length: number, mask: Buffer): Buffer {
  let header: Buffer;
  if (length < 126) {
    header = Buffer.allocUnsafe(6);
    header[1] = 0x80 | length;
  } else if (length < 65536) {
    header = Buffer.allocUnsafe(8);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.allocUnsafe(14);
    header[1] = 0x80 | 127;
    header.writeUInt32BE(Math.floor(length / 0x100000000), 2);
    header.writeUInt32BE(length >>> 0, 6);
  }
  header[0] = 0x80 | opcode;
  mask.copy(header, header.length - 4);
  return header;
}

/** Mask keys are cut from a block of random bytes, refilled when used up (one syscall per 16k frames). */
let maskPool = randomBytes(65536);
let maskAt = 0;

function nextMask(): Buffer {
  if (maskAt + 4 > maskPool.length) {
    maskPool = randomBytes(65536);
    maskAt = 0;
  }
  maskAt += 4;
  return maskPool.subarray(maskAt - 4, maskAt);
}

/** One whole masked frame (header and masked payload). */
export function maskedFrame(opcode: number, payload: Buffer): Buffer {
  const mask = nextMask();
  const header = maskedHeader(opcode, payload.length, mask);
  const frame = Buffer.allocUnsafe(header.length + payload.length);
  header.copy(frame, 0);
  for (let i = 0; i < payload.length; i++) frame[header.length + i] = payload[i] ^ mask[i & 3];
  return frame;
}

/** Every socket reads into this; what is read is handled before the next read. */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

export class LeanWs {
  private pending: Buffer | undefined;
  /** Payload bytes still to come in the frame being read (byte-counting mode). */
  private skip = 0;
  closed = false;

  private constructor(
    readonly socket: Socket,
    private readonly options: LeanWsOptions,
  ) {}

  /** Opens the connection; resolves after the 101 answer, rejects on any other. */
  static open(options: LeanWsOptions): Promise<LeanWs> {
    return new Promise((resolve, reject) => {
      let onRead: (chunk: Buffer) => void = () => {};
      const socket = options.streamReads
        ? connect({ host: '127.0.0.1', port: options.port })
        : connect({
            host: '127.0.0.1',
            port: options.port,
            onread: {
              buffer: READ_BUFFER,
              callback: (n: number, buf: Uint8Array) => {
                onRead((buf as Buffer).subarray(0, n));
                return true;
              },
            },
          });
      if (options.streamReads) socket.on('data', (chunk: Buffer) => onRead(chunk));
      socket.setNoDelay(true);
      const ws = new LeanWs(socket, options);
      let head = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new Error(`websocket handshake timed out: ${options.path.slice(0, 60)}`)), options.timeoutMs ?? 10000);
      const fail = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      const onHandshake = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > 16384) fail(new Error('handshake answer too long'));
          return;
        }
        const status = head.subarray(0, head.indexOf('\r\n')).toString('latin1');
        if (!/^HTTP\/1\.1 101/.test(status)) return fail(new Error(`websocket refused: ${status}`));
        clearTimeout(timer);
        onRead = (c) => ws.receive(c);
        socket.off('error', fail);
        socket.on('error', () => socket.destroy());
        socket.on('close', () => {
          ws.closed = true;
          options.onClose?.();
        });
        resolve(ws);
        const rest = head.subarray(end + 4);
        if (rest.length > 0) ws.receive(rest);
      };
      onRead = onHandshake;
      socket.on('error', fail);
      socket.on('close', () => fail(new Error('closed during handshake')));
      const lines = [
        `GET ${options.path} HTTP/1.1`,
        `Host: 127.0.0.1:${options.port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
        'Sec-WebSocket-Version: 13',
      ];
      if (options.protocols?.length) lines.push(`Sec-WebSocket-Protocol: ${options.protocols.join(', ')}`);
      socket.write(lines.join('\r\n') + '\r\n\r\n');
    });
  }

  send(opcode: number, payload: Buffer | string): boolean {
    return this.socket.write(maskedFrame(opcode, typeof payload === 'string' ? Buffer.from(payload) : payload));
  }

  /** Writes bytes that already are whole masked frames. */
  sendRaw(frames: Buffer): boolean {
    return this.socket.write(frames);
  }

  close(): void {
    if (this.closed) return;
    this.send(OP_CLOSE, Buffer.from([0x03, 0xe8]));
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      this.options.onPayloadBytes?.(n);
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let at = 0;
    while (buf.length - at >= 2) {
      const opcode = buf[at] & 0x0f;
      let length = buf[at + 1] & 0x7f;
      let headerLength = 2;
      if (length === 126) {
        if (buf.length - at < 4) break;
        length = buf.readUInt16BE(at + 2);
        headerLength = 4;
      } else if (length === 127) {
        if (buf.length - at < 10) break;
        length = buf.readUInt32BE(at + 2) * 0x100000000 + buf.readUInt32BE(at + 6);
        headerLength = 10;
      }
      const counting = this.options.onPayloadBytes !== undefined && opcode < 0x8;
      if (counting) {
        // Bulk data: count what is here, skip the rest as it comes.
        const here = Math.min(length, buf.length - at - headerLength);
        this.options.onPayloadBytes!(here);
        this.skip = length - here;
        at += headerLength + here;
        continue;
      }
      if (buf.length - at < headerLength + length) break;
      const payload = buf.subarray(at + headerLength, at + headerLength + length);
      at += headerLength + length;
      if (opcode === OP_PING) this.send(OP_PONG, Buffer.from(payload));
      else if (opcode === OP_CLOSE) {
        this.options.onCloseFrame?.(payload);
        this.socket.end();
      }
      else this.options.onFrame?.(opcode, payload);
    }
    if (at < buf.length) this.pending = Buffer.from(buf.subarray(at));
  }
}
