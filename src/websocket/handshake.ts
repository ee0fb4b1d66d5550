// The server side of the RFC 6455 opening handshake on a raw socket, for the
// legs the relay splices itself (sender connect, listener rendezvous). Also
// writes plain HTTP error answers on an upgrade socket that will not upgrade.
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const KEY_PATTERN = /^[A-Za-z0-9+/]{22}==$/;

export function acceptKeyFor(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

export interface UpgradeRequest {
  key: string;
  /** Subprotocols offered, in order of preference. */
  protocols: string[];
}

/**
 * True when the request asks for a WebSocket version other than 13: it is
 * answered 426 with `Sec-WebSocket-Version: 13` (RFC 6455 4.2.2), not 400.
 */
export function asksOtherVersion(req: IncomingMessage): boolean {
  const version = req.headers['sec-websocket-version'];
  return version !== undefined && version !== '13';
}

/** Checks a request is a well-formed WebSocket version 13 upgrade. */
export function parseUpgradeRequest(req: IncomingMessage): UpgradeRequest | undefined {
  if (req.method !== 'GET') return undefined;
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return undefined;
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !KEY_PATTERN.test(key.trim())) return undefined;
  if (req.headers['sec-websocket-version'] !== '13') return undefined;
  const offered = req.headers['sec-websocket-protocol'];
  const protocols = typeof offered === 'string' ? offered.split(',').map((p) => p.trim()).filter(Boolean) : [];
  return { key: key.trim(), protocols };
}

const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Writes the 101 answer. `protocol` must be a token (it is checked). */
export function writeSwitchingProtocols(socket: Duplex, key: string, protocol: string | undefined): void {
  let head =
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${acceptKeyFor(key)}\r\n`;
  if (protocol !== undefined && TOKEN_CHARS.test(protocol)) head += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
  socket.write(head + '\r\n');
}

/**
 * A reason phrase safe to put on a status line: printable ASCII, or with `latin1` also tab and bytes 0x80-0xFF
 * (what HTTP allows there, written as Latin-1 by node:http); anything else a space; bounded.
 */
export function safeReason(text: string | undefined, status: number, latin1 = false): string {
  const cleaned = (text ?? '').replace(latin1 ? /[^\t\x20-\x7e\x80-\xff]/g : /[^\x20-\x7e]/g, ' ').trim().slice(0, 256);
  return cleaned || STATUS_CODES[status] || 'Error';
}

/**
 * Answers an upgrade request with an HTTP error (and `headers`, names and values the caller's own) and closes the
 * socket. With `latin1` the reason phrase keeps Latin-1 letters, written as Latin-1 bytes (a listener's reject
 * description, as HTTP mode passes its statusDescription on: `Grüße` reached the sender as `Gr  e`); the JSON body
 * says it whole, as UTF-8.
 */
export function writeUpgradeError(socket: Duplex, status: number, reason?: string, code?: string, headers: Record<string, string> = {}, latin1 = false): void {
  if (socket.destroyed) return;
  const phrase = safeReason(reason, status, latin1);
  const body = JSON.stringify({ code: code ?? phrase, message: latin1 ? (reason ?? '').slice(0, 256) || phrase : phrase }) + '\n';
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  const head = `HTTP/1.1 ${status} ${phrase}\r\nConnection: close\r\n${extra}Content-Type: application/json\r\n` + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body, 'utf8')]));
  // end() closes only our side (the HTTP server allows half-open sockets): a
  // client that never closes its own would keep the socket, and its place in
  // the connection counts, for good.
  (socket as Duplex & { destroySoon?(): void }).destroySoon?.();
}
