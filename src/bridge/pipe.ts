// Joins a TCP socket and a relayed WebSocket both ways: TCP bytes go as
// binary messages, binary messages come out as TCP bytes. Each direction stops
// reading when the other side has `highWaterMark` bytes queued and resumes
// when it drains. An end or error on either side ends the other.
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
  const finish = (reason: string) => {
    if (ended) return;
    ended = true;
    // The relay's answer to the close (and its end) is read even if the local side had stopped reading.
    ws.resume();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000, reason.slice(0, 100));
    tcp.end();
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
  tcp.on('error', (err) => finish(`local socket error: ${err.message}`));
  tcp.on('close', () => finish('local socket closed'));

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
    // Let what is queued reach the local end, then close it.
    tcp.end();
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason: `relay side closed (${code})` });
  });
  ws.on('error', (err) => finish(`relay side error: ${err.message}`));
}
