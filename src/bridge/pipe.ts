// Joins a TCP socket and a relayed WebSocket both ways: TCP bytes go as
// binary messages, binary messages come out as TCP bytes. Each direction stops
// reading when the other side has `highWaterMark` bytes queued and resumes
// when it drains. An end on either side ends the other, and the TCP socket is
// closed once what is queued for it is written, whether or not its peer closes
// its own side (a socket left half-open held a descriptor for good). A stream
// cut short (a reset, an error, a relay leg closed with anything but 1000)
// reaches the other end as a reset, never as a clean end: a reader that reads
// to the end of the stream must not take a cut transfer for a complete one.
import type { Socket } from 'node:net';
import type WebSocket from 'ws';

export interface PipeResult {
  bytesToRelay: number;
  bytesFromRelay: number;
  /** Why it ended, for the log. */
  reason: string;
}

export function pipeSocketToWebSocket(tcp: Socket, ws: WebSocket, highWaterMark: number, onEnd: (result: PipeResult) => void): void {
  let toRelay = 0;
  let fromRelay = 0;
  let inFlight = 0;
  let ended = false;
  /** `failed`: the local side was cut (reset or error), and the relay leg says so. */
  const finish = (reason: string, failed = false) => {
    if (ended) return;
    ended = true;
    // The relay's answer to the close (and its end) is read even if the local side had stopped reading.
    ws.resume();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(failed ? CLOSE_CUT : 1000, reason.slice(0, 100));
    tcp.destroySoon();
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason });
  };

  tcp.on('data', (chunk: Buffer) => {
    toRelay += chunk.length;
    inFlight += chunk.length;
    ws.send(chunk, { binary: true }, () => {
      inFlight -= chunk.length;
      if (tcp.isPaused() && inFlight < highWaterMark / 2) tcp.resume();
    });
    if (inFlight >= highWaterMark) tcp.pause();
  });
  tcp.on('end', () => finish('local end closed'));
  tcp.on('error', (err) => finish(`local socket error: ${err.message}`, true));
  // Closed without an end first: cut (destroyed here, as when the bridge stops), never a clean end for the far side.
  tcp.on('close', () => finish('local socket closed', true));

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    const chunk = isBinary ? data : Buffer.from(data);
    fromRelay += chunk.length;
    // After the local end, what still arrives has nowhere to go (and must not pause the leg again).
    if (ended) return;
    if (!tcp.write(chunk)) ws.pause();
  });
  tcp.on('drain', () => ws.resume());
  ws.on('close', (code: number) => {
    if (ended) return;
    ended = true;
    // A clean close: what is queued reaches the local end, then it closes. Any other (the far side
    // cut, the relay gone or draining): the local end is reset, as a direct connection would be.
    if (code === 1000) tcp.destroySoon();
    else tcp.resetAndDestroy();
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason: `relay side closed (${code})` });
  });
  ws.on('error', (err) => {
    if (ended) return;
    ended = true;
    tcp.resetAndDestroy();
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason: `relay side error: ${err.message}` });
  });
}

/** The close code a leg whose local socket was cut ends with (1011: the end could not go on). */
const CLOSE_CUT = 1011;
