// Closing a keep-alive connection after an answer (RFC 9112 9.6): the answer
// says `Connection: close`, no request that came after it on the connection
// is acted on, and the close lingers: what the client still sends is read
// and dropped for a while before the socket goes. Closed at once, bytes left
// unread make the kernel answer with a reset, which can throw away the
// answer at a client that reads only after sending its whole body (as most
// uploaders do); nginx's `lingering_close` is the same idea.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Connections whose close was decided (closeAfterAnswer). */
const closing = new WeakSet<Socket>();
/**
 * The latest request's answer on each connection, to tell whether it is the connection's last. Held weakly: one
 * written and done with keeps nothing of its exchange alive while the connection idles (it was not the last then,
 * or the connection would be closing: `closing`, or node:http's own close).
 */
const latestAnswer = new WeakMap<Socket, WeakRef<ServerResponse>>();

/**
 * Ends `res`'s connection once `res` is written, lingering `lingerMs`. Said
 * in the answer's head when it has not gone out yet (else the connection
 * still closes after it, unannounced).
 */
export function closeAfterAnswer(res: ServerResponse, lingerMs: number): void {
  const req = res.req;
  const socket = req.socket;
  if (closing.has(socket)) return;
  closing.add(socket);
  const linger = () => {
    socket.end();
    // The request's body, which may have been paused for a slow listener, is read on and dropped.
    req.resume();
    setTimeout(() => socket.destroy(), lingerMs).unref();
  };
  if (!res.headersSent) {
    res.shouldKeepAlive = false;
    // Node ends a connection whose answer said close with socket.destroySoon() once the answer is written, which
    // destroys it as soon as its writes are out: on this connection, the lingering close instead.
    (socket as Socket & { destroySoon(): void }).destroySoon = linger;
  } else if (res.writableFinished) {
    linger();
  } else {
    res.once('finish', linger);
  }
}

/**
 * Requests waiting their turn on one connection past which it is not read until some were taken up (node:http
 * itself stops reading only for answers it cannot write out, and a waiting request writes none: before, a flood of
 * tiny requests behind one slow answer held ~2 KB each, 1.1 GB for 23 MB of them; found by review).
 */
export const MAX_REQUESTS_WAITING = 32;
/** Requests waiting their turn, per connection, and the connections this module paused for them. */
const waiting = new WeakMap<Socket, number>();
const pausedHere = new WeakSet<Socket>();

/**
 * Runs `handle(req, res)` once every answer given earlier on `req`'s connection is out (written, or its exchange
 * closed), as nginx and haproxy take pipelined requests: one after the other, never two at once. Not at all when
 * one of those answers is the connection's last (it said `Connection: close`, or its close was decided): `req`
 * came after it and must not be acted on (RFC 9112 9.6; node:http still parses and emits it). Before, a pipelined
 * request went to its listener at once, so a close decided after it was read (an answer cut mid-body, a listener
 * gone) was not seen, and the request ran while its answer was lost with the connection.
 */
export function whenItsTurn(req: IncomingMessage, res: ServerResponse, handle: (req: IncomingMessage, res: ServerResponse) => void): void {
  const socket = req.socket;
  const before = latestAnswer.get(socket)?.deref();
  latestAnswer.set(socket, new WeakRef(res));
  if (before === undefined || before.writableFinished) return takeUp(req, res, before, handle);
  // Pipelined behind an answer still being given: its body waits unread in node:http (which stops reading the
  // socket once that fills), and the request is taken up when the answer is out.
  afterAnswer(socket, before, () => takeUp(req, res, before, handle));
}

/**
 * Runs `handle` for an upgrade request once every answer given earlier on its connection is out; when one of them
 * was the connection's last, the connection is destroyed instead. node:http hands an upgrade over at once, even
 * behind an answer still being given: before, a WebSocket's 101 went out ahead of that answer (which was then
 * written into the WebSocket's stream), and an h2c upgrade served as a plain request ended the relay (its answer
 * could not take the socket, ERR_HTTP_SOCKET_ASSIGNED; found by review).
 */
export function upgradeWhenItsTurn(req: IncomingMessage, socket: Duplex, head: Buffer, handle: (head: Buffer) => void): void {
  // node:http reads no more requests on it: whoever takes the upgrade reads the socket, not a resume from here.
  pausedHere.delete(req.socket);
  const before = latestAnswer.get(req.socket)?.deref();
  if (before === undefined || before.writableFinished) return cameAfterLast(req, before) ? void socket.destroy() : handle(head);
  const watch = watchWhileWaiting(socket, head);
  afterAnswer(req.socket, before, () => {
    const early = watch.stop();
    if (cameAfterLast(req, before)) return void socket.destroy();
    handle(early);
  });
}

/** Bytes read from an upgrade's connection while it waits its turn, at most: past them it is no longer read (TCP holds the rest). */
const WAITING_UPGRADE_BYTES = 65536;

/**
 * Reads an upgrade's connection while it waits its turn, so that a sender that hangs up is seen: node:http reads
 * it no more, and the answer before it (a relayed request) waited out httpResponseMs for a sender long gone, then
 * the upgrade was taken up (its listener told of a connect that could never be spliced). Its end destroys the
 * connection, as it would the upgrade (closing the answer before it); what it sends is kept for the upgrade.
 */
function watchWhileWaiting(socket: Duplex, head: Buffer): { stop(): Buffer } {
  const kept: Buffer[] = head.length > 0 ? [head] : [];
  let bytes = head.length;
  // Its end or an error destroys it, as either would the upgrade.
  const drop = () => socket.destroy();
  // 'readable' rather than 'data': with its listener gone the socket is as node:http left it (not flowing, not
  // paused), so whoever takes the upgrade starts it by listening for 'data', as without the wait.
  const onReadable = () => {
    let chunk: Buffer | null;
    while (bytes <= WAITING_UPGRADE_BYTES && (chunk = socket.read() as Buffer | null) !== null) {
      kept.push(chunk);
      bytes += chunk.length;
    }
    if (bytes > WAITING_UPGRADE_BYTES) stopReading();
  };
  const stopReading = () => {
    socket.off('readable', onReadable);
    socket.off('end', drop);
  };
  // Its 'error' listener stays: whoever takes the upgrade may listen for errors only later, and a reset read
  // meanwhile would otherwise be thrown (node:http took its own off with the upgrade).
  socket.on('error', drop);
  socket.on('end', drop);
  socket.on('readable', onReadable);
  return {
    stop() {
      stopReading();
      return kept.length === 1 ? kept[0] : Buffer.concat(kept);
    },
  };
}

/** Runs `next` once `before` is out (finished, or closed), unless the connection is gone by then; counts the wait. */
function afterAnswer(socket: Socket, before: ServerResponse, next: () => void): void {
  const count = (waiting.get(socket) ?? 0) + 1;
  waiting.set(socket, count);
  // Held back again if node:http read on meanwhile (it resumes a socket of its own accord once its writes drain).
  if (count >= MAX_REQUESTS_WAITING && !(socket as ParsedSocket)._paused) {
    pausedHere.add(socket);
    holdBack(socket as ParsedSocket);
  }
  let waited = false;
  const go = () => {
    if (waited) return;
    waited = true;
    const left = (waiting.get(socket) ?? 1) - 1;
    waiting.set(socket, left);
    // Read again once half of them went.
    if (left <= MAX_REQUESTS_WAITING / 2 && pausedHere.delete(socket) && !socket.destroyed) readOn(socket as ParsedSocket);
    if (!socket.destroyed) next();
  };
  before.once('finish', go);
  before.once('close', go);
}

/**
 * node:http's socket: its parser reads the socket's handle itself (socket.pause() alone does not stop it), and
 * `_paused` is node:http's own mark for a socket it holds back, its parser paused with it after each read.
 */
type ParsedSocket = Socket & { _paused?: boolean; parser?: { pause(): void; resume(): void } | null };

/** Stops reading the connection's requests, as node:http does for answers it cannot write out. */
function holdBack(socket: ParsedSocket): void {
  socket._paused = true;
  socket.pause();
  socket.parser?.pause();
}

/** Reads the connection's requests again, as node:http does once its answers drained. */
function readOn(socket: ParsedSocket): void {
  if (!socket._paused) return;
  socket._paused = false;
  socket.parser?.resume();
  socket.resume();
}

function takeUp(req: IncomingMessage, res: ServerResponse, before: ServerResponse | undefined, handle: (req: IncomingMessage, res: ServerResponse) => void): void {
  if (cameAfterLast(req, before)) {
    res.shouldKeepAlive = false;
    req.resume();
    return;
  }
  handle(req, res);
}

/** Whether `req` came after its connection's last answer: its close was decided, or `before` ended it. */
function cameAfterLast(req: IncomingMessage, before: ServerResponse | undefined): boolean {
  return closing.has(req.socket) || (before !== undefined && isLast(before));
}

/**
 * Whether `res` ends its connection: it will not keep it (shouldKeepAlive), or its head, written, said
 * `Connection: close` (node:http's `_last`: an HTTP/1.0 answer it cannot frame, for one).
 */
function isLast(res: ServerResponse): boolean {
  return !res.shouldKeepAlive || (res as ServerResponse & { _last?: boolean })._last === true;
}
