// Liveness of relayed legs (the relay answers a leg's pings itself:
// websocket/frame-splice.ts). A path dropped without a word (a NAT or firewall
// that forgot it, the relay's host gone without a FIN or a reset) would
// otherwise leave each open connection open for good at both ends. One timer
// per forwarder pings every open leg each period; a leg from which nothing
// came (not a byte: a large frame arriving slowly is no silence) for two
// periods in a row is terminated, which the pipe passes on to its TCP socket
// as a reset (pipe.ts).
//
// Silence counts only while it means something: not while this bridge has
// paused the leg (its local side is not reading, so neither are the pongs),
// nor once bytes went out on it since the relay was last heard (the relay may
// have stopped reading this leg because the far side is slow: the pings wait
// behind those bytes, in this process or in the kernels' buffers, where
// bufferedAmount no longer sees them). A path that dies then is left to TCP
// (its retransmission timeout errors the socket, and setKeepAlive below
// covers an idle one).
//
// One pong is not enough: the relay may read the last bytes and the ping after
// them in one go, answer the ping, and only then hold the leg back (it stops
// reading a leg when what it forwards from it queues up, so only upon bytes
// read). A second pong, to a ping sent after the first pong came, shows it
// reading on past them, and from then on it has no reason to stop: silence is
// counted again. A path that dies between the two pongs is left to TCP too.
// Each ping carries its number, which the pong echoes: a relay may answer only
// the latest of several pings (ours does while a frame to the bridge is half
// sent, RFC 6455 5.5.3) or send pongs of its own, so pongs are not counted.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type WebSocket from 'ws';

/** What the keep-alive knows of one leg; the pipe marks what it sends (`sent`). */
export interface WatchedLeg {
  /** Bytes came since the last tick (a whole frame, for a leg whose socket prepare() did not see). */
  heard: boolean;
  /** Ticks in a row with nothing heard. */
  silentPeriods: number;
  /** Bytes went out on the leg since the last ping (set by the pipe). */
  sent: boolean;
  /** The number of the latest ping sent (its payload, which the pong echoes). */
  pings: number;
  /** The first ping sent after the latest bytes: until a pong to it (or a later one), the relay may not have read them (0: none awaited). */
  pingAfterSent: number;
  /** Set at that pong: the first ping sent after it, whose pong shows the relay reading on (0: none awaited). */
  pingAfterPong: number;
}

/** A ping's payload: its number, 4 bytes big-endian. */
const PING_NUMBER_BYTES = 4;

/** Periods of silence after which a leg is taken for dead. */
const SILENT_PERIODS = 2;

export class LegKeepAlive {
  private readonly legs = new Map<WebSocket, WatchedLeg>();
  /** Legs this keep-alive terminated: the pipe names the reason. */
  private readonly cut = new WeakSet<WebSocket>();
  private timer: NodeJS.Timeout | undefined;
  /** Each leg's connection to the relay, once its handshake is answered (see prepare()), and the leg it carries. */
  private readonly sockets = new WeakMap<WebSocket, Socket>();
  private readonly legsBySocket = new WeakMap<Socket, WatchedLeg>();
  // Shared by every leg (`this` is the leg, or its socket, that emitted): no closure per leg.
  private readonly onFrame: (this: WebSocket) => void;
  private readonly onBytes: (this: Socket) => void;
  private readonly onPong: (this: WebSocket, data: Buffer) => void;
  private readonly onClose: (this: WebSocket) => void;

  constructor(readonly periodMs: number) {
    const legs = this.legs;
    const legsBySocket = this.legsBySocket;
    this.onFrame = function (this: WebSocket) {
      const state = legs.get(this);
      if (state) state.heard = true;
    };
    this.onBytes = function (this: Socket) {
      const state = legsBySocket.get(this);
      if (state) state.heard = true;
    };
    this.onPong = function (this: WebSocket, data: Buffer) {
      const state = legs.get(this);
      if (!state) return;
      state.heard = true;
      // Not one of ours (or not sent yet): heard, nothing more.
      if (data.length !== PING_NUMBER_BYTES) return;
      const answered = data.readUInt32BE(0);
      if (answered > state.pings) return;
      if (state.pingAfterSent !== 0 && answered >= state.pingAfterSent) {
        state.pingAfterSent = 0;
        state.pingAfterPong = state.pings + 1;
      } else if (state.pingAfterPong !== 0 && answered >= state.pingAfterPong) state.pingAfterPong = 0;
    };
    const forget = (ws: WebSocket) => this.forget(ws);
    this.onClose = function (this: WebSocket) {
      forget(this);
    };
  }

  /**
   * Called on a leg before it opens: TCP keep-alive on its connection (as keepTcpAlive), whose socket is kept so
   * that watch() hears every byte on it (without, only whole messages, pings and pongs count).
   */
  prepare(ws: WebSocket): void {
    keepTcpAlive(ws, this.periodMs, (socket) => this.sockets.set(ws, socket));
  }

  /** Watches an open leg until it closes; the caller sets `sent` on what it returns when it sends on the leg. */
  watch(ws: WebSocket): WatchedLeg {
    const leg: WatchedLeg = { heard: true, silentPeriods: 0, sent: false, pings: 0, pingAfterSent: 0, pingAfterPong: 0 };
    this.legs.set(ws, leg);
    const socket = this.sockets.get(ws);
    if (socket) {
      this.legsBySocket.set(socket, leg);
      socket.on('data', this.onBytes);
    }
    ws.on('pong', this.onPong);
    ws.on('ping', this.onFrame);
    ws.on('message', this.onFrame);
    ws.once('close', this.onClose);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.periodMs);
      this.timer.unref();
    }
    return leg;
  }

  /** True when this keep-alive terminated the leg (nothing heard for two periods). */
  terminated(ws: WebSocket): boolean {
    return this.cut.has(ws);
  }

  /** How long a leg may stay silent, for the log. */
  get silenceMs(): number {
    return SILENT_PERIODS * this.periodMs;
  }

  private forget(ws: WebSocket): void {
    this.legs.delete(ws);
    // No timer while no leg is open (an idle bridge wakes for nothing).
    if (this.legs.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    for (const [ws, state] of this.legs) {
      if (ws.readyState !== ws.OPEN && ws.readyState !== ws.CLOSING) continue;
      const sendingUnread = state.sent || state.pingAfterSent !== 0 || state.pingAfterPong !== 0 || ws.bufferedAmount > 0;
      if (state.heard || sendingUnread || ws.isPaused) state.silentPeriods = 0;
      else if (++state.silentPeriods >= SILENT_PERIODS) {
        this.cut.add(ws);
        ws.terminate();
        continue;
      }
      state.heard = false;
      if (ws.readyState === ws.OPEN && !ws.isPaused) {
        if (state.sent) {
          state.pingAfterSent = state.pings + 1;
          state.pingAfterPong = 0;
          state.sent = false;
        }
        const number = Buffer.allocUnsafe(PING_NUMBER_BYTES);
        number.writeUInt32BE(++state.pings, 0);
        ws.ping(number);
      }
    }
  }
}

/**
 * TCP keep-alive on a WebSocket's connection to the relay, set once the handshake is answered:
 * the kernel probes an idle connection and errors it when the path is gone. `onSocket` is given that connection.
 */
export function keepTcpAlive(ws: WebSocket, delayMs: number, onSocket?: (socket: Socket) => void): void {
  ws.once('upgrade', (res: IncomingMessage) => {
    res.socket.setKeepAlive(true, delayMs);
    onSocket?.(res.socket);
  });
}
