// Joins a TCP socket and a relayed WebSocket both ways: TCP bytes go as
// binary messages, binary messages come out as TCP bytes. Each direction stops
// reading when the other side has `highWaterMark` bytes (--buffer) queued and
// resumes when it drains. With a LegKeepAlive the leg is pinged, and one the
// relay stays silent on is cut (leg-keep-alive.ts): its TCP socket is reset.
//
// How an end (FIN) crosses: between two bridges that both speak it, half-close.
// `-L` asks for it in its connect address (HALF_CLOSE_PARAM, which the relay
// passes to the listener as Azure does); a `-R` that speaks it says so first
// thing on the leg (HALF_CLOSE_HELLO, a text message: bytes always go as
// binary). Then a local end is an empty binary message to the other bridge,
// which ends its TCP socket's writing side and keeps reading, so a client that
// sends a request and its FIN still gets the answer (`nc -N`, `echo x | socat
// - TCP:...`); the leg closes (1000) once both directions ended. With any
// other peer (an older bridge, another client of the entity) an end on either
// side ends the other, and the TCP socket is closed once what is queued for it
// is written (a socket left half-open held a descriptor for good); a peer that
// takes none of that for two keep-alive periods is reset (closeOnceWritten).
//
// A stream cut short (a reset, an error, a relay leg closed with anything but
// 1000, a socket closed without an end) reaches the other end as a reset,
// never as a clean end: a reader that reads to the end of the stream must not
// take a cut transfer for a complete one.
import type { Socket } from 'node:net';
import type WebSocket from 'ws';
import type { LegKeepAlive } from './leg-keep-alive.ts';

export interface PipeResult {
  bytesToRelay: number;
  bytesFromRelay: number;
  /** Why it ended, for the log. */
  reason: string;
}

/** The query parameter `-L` adds to its connect address: it speaks half-close. */
const HALF_CLOSE_PARAM = 'edge-relay-bridge';
const HALF_CLOSE_VERSION = 'half-close';

/** `-L`'s connect address (one with a query already) asking for half-close. */
export function askingHalfClose(connectUrl: string): string {
  return `${connectUrl}&${HALF_CLOSE_PARAM}=${HALF_CLOSE_VERSION}`;
}

/** How `-R` handles ends on a leg whose accept address is `address`: half-close when its sender asked for it. */
export function halfCloseFor(address: string): HalfClose {
  return new URL(address).searchParams.get(HALF_CLOSE_PARAM) === HALF_CLOSE_VERSION ? 'on' : 'off';
}

/** What a `-R` that speaks half-close sends first on a leg whose connect asked for it. */
export const HALF_CLOSE_HELLO = 'edge-relay-bridge: half-close';

/**
 * How this end handles ends: `on` (the peer speaks half-close: `-R` when the
 * connect asked for it), `ask` (`-L`: on once the peer's hello came; an end
 * before it waits up to HELLO_WAIT_MS for it), `off` (an end ends both ways).
 */
export type HalfClose = 'on' | 'ask' | 'off';

/**
 * The largest message a forwarded connection's leg takes: `--buffer`, or 64 KiB when that is less (a bridge sends
 * one socket read per message, 64 KiB at most). `ws` gathers a whole message before the pipe sees it, past any
 * backpressure: with its default, 100 MiB, one sender's messages grew a bridge by hundreds of MiB whatever
 * `--buffer` said (found by review). A larger one closes the leg, 1009, which reaches the local end as a reset.
 */
export function legMaxPayload(highWaterMark: number): number {
  return Math.max(highWaterMark, 65536);
}

/** How long a local end waits for the peer's hello before it ends both ways (the hello follows the leg's opening at once). */
const HELLO_WAIT_MS = 2000;

const EMPTY = Buffer.alloc(0);

export function pipeSocketToWebSocket(
  tcp: Socket,
  ws: WebSocket,
  highWaterMark: number,
  onEnd: (result: PipeResult) => void,
  halfClose: HalfClose = 'off',
  keepAlive?: LegKeepAlive,
): void {
  let toRelay = 0;
  let fromRelay = 0;
  let inFlight = 0;
  let ended = false;
  let mode = halfClose;
  /** The local socket ended (FIN read) and, in half-close, the peer was told. */
  let localEnded = false;
  /** The peer's end arrived (half-close): the local socket's writing side is ended. */
  let remoteEnded = false;
  let helloWait: NodeJS.Timeout | undefined;
  const stallMs = keepAlive?.silenceMs ?? DEFAULT_STALL_MS;
  /** `failed`: the local side was cut (reset or error), and the relay leg says so. */
  const finish = (reason: string, failed = false) => {
    if (ended) return;
    ended = true;
    clearTimeout(helloWait);
    // The relay's answer to the close (and its end) is read even if the local side had stopped reading.
    ws.resume();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(failed ? CLOSE_CUT : 1000, reason.slice(0, 100));
    closeOnceWritten(tcp, stallMs);
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason });
  };
  /** The local end in half-close: the peer is told (after every byte before it) and the other direction goes on. */
  const endLocalSide = () => {
    localEnded = true;
    if (ws.readyState === ws.OPEN) ws.send(EMPTY, { binary: true });
    if (remoteEnded) finish('both ends closed');
  };

  if (mode === 'on' && ws.readyState === ws.OPEN) ws.send(HALF_CLOSE_HELLO);
  const watched = keepAlive?.watch(ws);

  tcp.on('data', (chunk: Buffer) => {
    toRelay += chunk.length;
    inFlight += chunk.length;
    if (watched) watched.sent = true;
    ws.send(chunk, { binary: true }, () => {
      inFlight -= chunk.length;
      if (tcp.isPaused() && inFlight < highWaterMark / 2) tcp.resume();
    });
    if (inFlight >= highWaterMark) tcp.pause();
  });
  tcp.on('end', () => {
    if (ended) return;
    if (mode === 'on') return endLocalSide();
    if (mode === 'off') return finish('local end closed');
    // Asked, no answer yet: the hello may be on its way.
    localEnded = true;
    helloWait = setTimeout(() => {
      mode = 'off';
      finish('local end closed');
    }, HELLO_WAIT_MS);
  });
  tcp.on('error', (err) => finish(`local socket error: ${err.message}`, true));
  // Closed without an end first (destroyed here, as when the bridge stops): cut, never a clean end for the far side.
  tcp.on('close', () => finish('local socket closed', true));

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary && mode === 'ask' && data.toString() === HALF_CLOSE_HELLO) {
      mode = 'on';
      if (localEnded && !ended) {
        clearTimeout(helloWait);
        endLocalSide();
      }
      return;
    }
    if (mode === 'ask' && isBinary) {
      // Bytes before any hello: a peer that does not speak it.
      mode = 'off';
      if (localEnded) return finish('local end closed');
    }
    const chunk = isBinary ? data : Buffer.from(data);
    if (mode === 'on' && isBinary && chunk.length === 0) {
      if (remoteEnded || ended) return;
      remoteEnded = true;
      // What is queued is written first, then the FIN.
      tcp.end();
      // An ending socket emits no 'drain': a leg paused for it would stay paused, its close (a cut) never read.
      // Nothing more is written to the socket, so the leg is read again.
      ws.resume();
      if (localEnded) finish('both ends closed');
      return;
    }
    fromRelay += chunk.length;
    // After the local end, what still arrives has nowhere to go (and must not pause the leg again).
    if (ended || remoteEnded) return;
    tcp.write(chunk);
    // Paused at --buffer queued for the local socket, not at write()'s own 16 KiB mark; only when a 'drain' is to come.
    if (tcp.writableLength >= highWaterMark && tcp.writableNeedDrain) ws.pause();
  });
  tcp.on('drain', () => ws.resume());
  /**
   * The relay leg ended first. A clean close (1000): what is queued reaches the local end, then it closes. Any
   * other (the far side cut, the relay gone or draining): the local end is reset, as a direct connection would be.
   */
  const relayEnded = (reason: string, clean: boolean) => {
    if (ended) return;
    ended = true;
    clearTimeout(helloWait);
    if (clean) closeOnceWritten(tcp, stallMs);
    else tcp.resetAndDestroy();
    onEnd({ bytesToRelay: toRelay, bytesFromRelay: fromRelay, reason });
  };
  ws.on('close', (code: number) =>
    keepAlive?.terminated(ws) ? relayEnded(`no answer from the relay for ${keepAlive.silenceMs / 1000} s`, false) : relayEnded(`relay side closed (${code})`, code === 1000),
  );
  ws.on('error', (err) => relayEnded(`relay side error: ${err.message}`, false));
}

/**
 * Closes the local socket once what is queued for it is written, its end after it (destroySoon), but resets it when
 * its peer takes none of that for `stallMs`: destroySoon alone waits for the writes for good, and a peer that stopped
 * reading (hung, frozen: its kernel answers with a closed window for ever) held the socket, and up to --buffer bytes
 * queued for it, as long as the bridge ran. Taken is what left this process: Node's queue, which goes down only as a
 * whole write is done (one write may carry all of it), and the handle's writeQueueSize, what the last write still
 * holds, which Node updates now and then as the kernel takes it in pieces.
 */
function closeOnceWritten(tcp: Socket, stallMs: number): void {
  tcp.destroySoon();
  if (tcp.destroyed) return;
  const unsent = () => tcp.writableLength + ((tcp as Socket & { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0);
  let left = unsent();
  const watch = setInterval(() => {
    const now = unsent();
    // Taken since the last look, or all taken (only the end is left, which needs nothing of the peer).
    if (now < left || tcp.writableLength === 0) {
      left = now;
      return;
    }
    clearInterval(watch);
    tcp.resetAndDestroy();
  }, stallMs);
  watch.unref();
  tcp.once('close', () => clearInterval(watch));
}

/** The stall bound of a pipe without a keep-alive: two of the bridge's default --keepalive periods. */
const DEFAULT_STALL_MS = 60_000;

/** The close code a leg whose local socket was cut ends with (1011: the end could not go on). */
const CLOSE_CUT = 1011;
