// The least a Node process relaying HTTP the hybrid-connection way can do per
// request, as a bench peer: it shows what bounds our relay's HTTP rows and
// what is ours. It accepts one listener's control channel (any path, no
// token), and relays GETs without a body: each request goes to the listener
// as a `request` notice in a text frame (a turn's notices leave in one write),
// the listener's `response` and its body frame come back, and one write
// answers the sender. No checks, limits, timeouts, routing or metrics: not a
// relay anyone should run.
//   net          senders are read by a bare `net` server (request heads split, nothing more)
//   node-http    senders are served by node:http, as our relay's are
// Prints "ready PORT".
import { createServer as createHttpServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { OP_BINARY, OP_TEXT, encodeTextFrame } from '../../src/websocket/frames.ts';
import { writeSwitchingProtocols } from '../../src/websocket/handshake.ts';

const HEAD_END = Buffer.from('\r\n\r\n');

/** Where a listener's answer goes: a sender's socket (net) or its response (node-http). */
type Answer = (status: number, headers: Record<string, string>, body: Buffer) => void;

const waiting = new Map<string, Answer>();
let nextId = 0;
let control: Socket | undefined;
let corked = false;

function relay(method: string, target: string, headers: IncomingHttpHeaders | Record<string, string>, answer: Answer): void {
  if (!control) throw new Error('floor-relay: a request before the listener');
  const id = String(++nextId);
  waiting.set(id, answer);
  const notice = { request: { address: `sb://floor/${id}`, id, requestTarget: target, method, requestHeaders: headers } };
  if (!corked) {
    corked = true;
    control.cork();
    setImmediate(() => {
      corked = false;
      control?.uncork();
    });
  }
  control.write(encodeTextFrame(JSON.stringify(notice)));
}

/** Reads the listener's masked frames: a `response` notice, then its body as one binary frame. */
function readControlChannel(socket: Socket, first: Buffer): void {
  control = socket;
  let pending: Buffer = Buffer.alloc(0);
  let answering: { answer: Answer; status: number; headers: Record<string, string> } | undefined;
  const read = (chunk: Buffer) => {
    const buf = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (buf.length - at < 2) break;
      const short = buf[at + 1]! & 0x7f;
      if (short === 127) throw new Error('floor-relay: frame too large');
      const lengthBytes = short === 126 ? 2 : 0;
      if (buf.length - at < 2 + lengthBytes) break;
      const length = short === 126 ? buf.readUInt16BE(at + 2) : short;
      const start = at + 2 + lengthBytes + 4;
      if (buf.length < start + length) break;
      const payload = Buffer.from(buf.subarray(start, start + length));
      for (let i = 0; i < length; i++) payload[i]! ^= buf[start - 4 + (i & 3)]!;
      const opcode = buf[at]! & 0x0f;
      at = start + length;
      if (opcode === OP_TEXT) {
        const { response } = JSON.parse(payload.toString()) as { response: { requestId: string; statusCode: number; responseHeaders: Record<string, string> } };
        const answer = waiting.get(response.requestId);
        if (!answer) throw new Error(`floor-relay: an answer to no request (${response.requestId})`);
        waiting.delete(response.requestId);
        answering = { answer, status: response.statusCode, headers: response.responseHeaders };
      } else if (opcode === OP_BINARY && answering) {
        answering.answer(answering.status, answering.headers, payload);
        answering = undefined;
      }
    }
    pending = at < buf.length ? buf.subarray(at) : Buffer.alloc(0);
  };
  socket.on('data', read);
  if (first.length > 0) read(first);
}

function acceptControlChannel(socket: Socket, key: string, rest: Buffer): void {
  writeSwitchingProtocols(socket, key, undefined);
  readControlChannel(socket, rest);
}

/** net: request heads split at their blank line; the listener's WebSocket is told apart by its Upgrade header. */
function serveNet(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  let pending: Buffer | undefined;
  const answer: Answer = (status, headers, body) => {
    let head = `HTTP/1.1 ${status} OK\r\n`;
    for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    socket.write(Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]));
  };
  const onData = (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    for (let end = buf.indexOf(HEAD_END, at); end >= 0; end = buf.indexOf(HEAD_END, at)) {
      const lines = buf.toString('latin1', at, end).split('\r\n');
      at = end + HEAD_END.length;
      const headers: Record<string, string> = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i]!.indexOf(':');
        headers[lines[i]!.slice(0, colon).toLowerCase()] = lines[i]!.slice(colon + 1).trim();
      }
      const [method, target] = lines[0]!.split(' ') as [string, string];
      if (headers.upgrade?.toLowerCase() === 'websocket') {
        socket.off('data', onData);
        return acceptControlChannel(socket, headers['sec-websocket-key']!, buf.subarray(at));
      }
      if (headers['content-length'] || headers['transfer-encoding']) throw new Error('floor-relay: GETs without a body only');
      relay(method, target, headers, answer);
    }
    pending = at < buf.length ? buf.subarray(at) : undefined;
  };
  socket.on('data', onData);
}

const mode = process.argv[2];
if (mode === 'net') {
  const server = createNetServer(serveNet);
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`));
} else if (mode === 'node-http') {
  const server = createHttpServer((req, res: ServerResponse) => {
    relay(req.method!, req.url!, req.headers, (status, headers, body) => {
      res.writeHead(status, headers);
      res.end(body);
    });
  });
  server.on('upgrade', (req, socket: Socket, head: Buffer) => acceptControlChannel(socket, String(req.headers['sec-websocket-key']), head));
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`));
} else {
  process.stderr.write('usage: floor-relay.ts net | node-http\n');
  process.exit(2);
}
