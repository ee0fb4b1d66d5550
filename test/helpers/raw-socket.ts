// Raw TCP clients for hostile-input tests: a WebSocket upgrade written by
// hand, masked frames built byte by byte, a peer that writes without ever
// reading, and an HTTP/1.1 keep-alive connection whose responses are read
// off the wire as sent (so a forged or out-of-step response shows). Every
// wait is bounded; every socket is destroyed in the test's clean-up.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { cleanupFor } from './cleanup.ts';
import { withTimeout } from './wait.ts';

export const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** A masked client frame (RFC 6455 5.2). */
export function maskedFrame(opcode: number, payload: Buffer | string, fin = true): Buffer {
  const data = Buffer.from(payload);
  const mask = randomBytes(4);
  const len = data.length;
  const header = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) header[1] = 0x80 | len;
  else if (len < 65536) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ mask[i & 3];
  return Buffer.concat([header, mask, masked]);
}

/** A TCP connection to 127.0.0.1:port (from `localAddress`, another loopback address, if given), destroyed at the end of the test. */
export function tcp(t: Pick<TestContext, 'after'>, port: number, localAddress?: string): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => socket.destroy());
  cleanupFor(t).after(() => socket.destroy());
  return withTimeout(
    new Promise<Socket>((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
    }),
    5000,
    'TCP connect',
  );
}

/** Both ends of one TCP connection on 127.0.0.1 (`client` dialed, `accepted` the server's side), closed in clean-up. */
export async function tcpPair(t: Pick<TestContext, 'after'>): Promise<{ client: Socket; accepted: Socket }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await withTimeout(once(server, 'listening'), 5000, 'TCP listen');
  cleanupFor(t).after(() => new Promise((r) => server.close(r)));
  const accepting = once(server, 'connection') as Promise<[Socket]>;
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  cleanupFor(t).after(() => client.destroy());
  const [accepted] = await withTimeout(accepting, 5000, 'TCP accept');
  cleanupFor(t).after(() => accepted.destroy());
  return { client, accepted };
}

export interface RawUpgrade {
  socket: Socket;
  /** The status line and headers of the answer. */
  head: string;
  status: number;
  /** Bytes that came after the answer's head (the first frames). */
  rest: Buffer;
}

/** Writes a WebSocket upgrade for `path` by hand and reads the answer's head. */
export async function rawUpgrade(
  t: Pick<TestContext, 'after'>,
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<RawUpgrade> {
  const socket = await tcp(t, port);
  const lines = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': WS_KEY,
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  socket.write(`GET ${path} HTTP/1.1\r\n${Object.entries(lines).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
  const raw = await readUntil(socket, (b) => b.includes('\r\n\r\n'), 10000, 'upgrade answer');
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end).toString('latin1');
  socket.pause();
  return { socket, head, status: Number(head.split(' ')[1]), rest: raw.subarray(end + 4) };
}

/** Reads from `socket` until `done(bytes so far)`; the bytes are left consumed. */
export function readUntil(socket: Socket, done: (bytes: Buffer) => boolean, ms: number, what: string): Promise<Buffer> {
  let got = Buffer.alloc(0);
  let onData: (chunk: Buffer) => void = () => {};
  let onEnd: () => void = () => {};
  return withTimeout(
    new Promise<Buffer>((resolve, reject) => {
      onData = (chunk) => {
        got = Buffer.concat([got, chunk]);
        if (done(got)) resolve(got);
      };
      onEnd = () => (done(got) ? resolve(got) : reject(new Error(`connection ended waiting for ${what}: ${got.toString('latin1').slice(0, 200)}`)));
      socket.on('data', onData);
      socket.once('end', onEnd);
      socket.once('close', onEnd);
      socket.resume();
    }),
    ms,
    what,
  ).finally(() => {
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', onEnd);
  });
}

/** What the peer sends until it closes the connection or `done(bytes)` holds (bounded). */
export function readUntilCloseOr(socket: Socket, done: (bytes: Buffer) => boolean, ms: number, what: string): Promise<{ bytes: Buffer; closed: boolean }> {
  let got = Buffer.alloc(0);
  return withTimeout(
    new Promise((resolve) => {
      socket.on('data', (c: Buffer) => {
        got = Buffer.concat([got, c]);
        if (done(got)) resolve({ bytes: got, closed: false });
      });
      socket.once('close', () => resolve({ bytes: got, closed: true }));
      socket.resume();
    }),
    ms,
    what,
  );
}

/** Everything the peer sends until it closes the connection (bounded). */
export function readToClose(socket: Socket, ms: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.once('close', () => resolve(Buffer.concat(chunks)));
      socket.resume();
    }),
    ms,
    what,
  );
}

/**
 * Writes `frame` again and again without ever reading, until `totalBytes`
 * are written or the peer has stopped taking them for `stallMs` (it stopped
 * reading us, as TCP backpressure says). Returns the bytes the socket took.
 */
export async function floodWithoutReading(socket: Socket, frame: Buffer, totalBytes: number, stallMs: number): Promise<{ written: number; stalled: boolean; closed: boolean }> {
  socket.pause();
  const batch = Buffer.concat(Array.from({ length: Math.max(1, Math.floor(65536 / frame.length)) }, () => frame));
  let written = 0;
  let closed = socket.destroyed;
  socket.once('close', () => (closed = true));
  while (written < totalBytes && !closed) {
    const more = socket.write(batch);
    written += batch.length;
    if (!more) {
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), stallMs);
        const done = (ok: boolean) => {
          clearTimeout(timer);
          socket.off('drain', onDrain);
          socket.off('close', onClose);
          resolve(ok);
        };
        const onDrain = () => done(true);
        const onClose = () => done(true);
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      });
      if (!drained) return { written: written - socket.writableLength, stalled: true, closed };
    }
  }
  return { written: written - socket.writableLength, stalled: false, closed };
}

/** A decoded server frame. */
export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** Splits unmasked server frames off `bytes`; returns the frames and what is left over. */
export function parseServerFrames(bytes: Buffer): { frames: ServerFrame[]; rest: Buffer } {
  const frames: ServerFrame[] = [];
  let at = 0;
  for (;;) {
    if (bytes.length - at < 2) break;
    let len = bytes[at + 1] & 0x7f;
    let pos = at + 2;
    if (len === 126) {
      if (bytes.length - at < 4) break;
      len = bytes.readUInt16BE(at + 2);
      pos = at + 4;
    } else if (len === 127) {
      if (bytes.length - at < 10) break;
      len = Number(bytes.readBigUInt64BE(at + 2));
      pos = at + 10;
    }
    if (bytes.length < pos + len) break;
    frames.push({ fin: (bytes[at] & 0x80) !== 0, opcode: bytes[at] & 0x0f, payload: bytes.subarray(pos, pos + len) });
    at = pos + len;
  }
  return { frames, rest: bytes.subarray(at) };
}

/** Reads server frames until `done(frames)`; resolves with every frame read. */
export async function readFrames(socket: Socket, done: (frames: ServerFrame[]) => boolean, ms: number, what: string, initial: Buffer = Buffer.alloc(0)): Promise<ServerFrame[]> {
  let frames = parseServerFrames(initial).frames;
  if (done(frames)) return frames;
  await readUntil(
    socket,
    (bytes) => {
      frames = parseServerFrames(Buffer.concat([initial, bytes])).frames;
      return done(frames);
    },
    ms,
    what,
  );
  return frames;
}

/** The TCP states (as /proc/net/tcp numbers them: 04 FIN-WAIT-1, ...) of the kernel's sockets from `localPort` to `remotePort` on IPv4. */
export function kernelStates(localPort: number, remotePort: number): string[] {
  const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[1].endsWith(`:${hex(localPort)}`) && f[2].endsWith(`:${hex(remotePort)}`))
    .map((f) => f[3]);
}
