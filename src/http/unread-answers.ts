// Answers a client does not read. A REST answer may be large (a group's
// history, up to 8 MiB a page): one a client never read was held for as long
// as its connection stayed open, and pipelined calls on one connection had
// the relay build a page for each of them at once (30 calls, ~285 MiB held).
// Two bounds: a connection's calls are taken up one after the other, each
// once the answer before it has left (whenItsTurn, connection-close.ts, for
// every request on the port), and an answer whose connection takes none of it
// for timeouts.senderStallMs cuts the connection, as a relayed response's does.
// Cut with a reset: closed with a FIN, the socket lived on in the kernel, FIN
// queued behind what the client never read (megabytes on a pipelined
// connection), for as long as TCP tries.
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { dropUnanswered } from '../websocket/close-handshake.ts';

/**
 * Once an answer is written: while the connection's queue holds part of it, the queue must shrink within every
 * `ms`; when it does not, the connection is cut (`stalled` says so first).
 */
export function cutWhenUnread(res: ServerResponse, socket: Socket, ms: number, stalled: () => void): void {
  if (res.writableFinished || socket.destroyed || socket.writableLength === 0) return;
  let queued = socket.writableLength;
  const timer = setInterval(() => {
    if (res.writableFinished || socket.destroyed) return clearInterval(timer);
    const now = socket.writableLength;
    if (now > 0 && now >= queued) {
      clearInterval(timer);
      stalled();
      dropUnanswered(socket);
      return;
    }
    queued = now;
  }, ms);
  timer.unref();
  res.once('close', () => clearInterval(timer));
}

/**
 * Bounds `res` once it is written, as cutWhenUnread does (`ms` read then): for answers whose domain does not bound
 * them itself. A client that pipelined requests for more than the kernel queues for it and read nothing stalled the
 * last answer in the relay's queue, where the next ones wait their turn, and an ops answer, an error or a refusal
 * held the connection for good (its heads all read, it was never idle).
 */
export function boundEveryAnswer(res: ServerResponse, socket: Socket, ms: () => number, stalled: () => void): void {
  res.once('prefinish', () => cutWhenUnread(res, socket, ms(), stalled));
}
