// Liveness of relayed legs (the relay answers a leg's pings itself:
// websocket/frame-splice.ts). A path dropped without a word (a NAT or firewall
// that forgot it, the relay's host gone without a FIN or a reset) would
// otherwise leave each open connection open for good at both ends. One timer
// per forwarder pings every open leg each period; a leg from which nothing
// came (no pong, no frame) for two periods in a row is terminated, which the
// pipe passes on to its TCP socket as a reset (pipe.ts).
//
// Silence counts only while it means something: not while this bridge has
// paused the leg (its local side is not reading, so neither are the pongs),
// nor once bytes went out on it since the relay was last heard (the relay may
// have stopped reading this leg because the far side is slow: the pings wait
// behind those bytes, in this process or in the kernels' buffers, where
// bufferedAmount no longer sees them). A path that dies then is left to TCP
// (its retransmission timeout errors the socket, and setKeepAlive below
// covers an idle one). Narrowed, not removed: a relay that reads the last
// bytes and the ping after them together, answers the ping and then holds the
// leg back for a far end that reads nothing for two periods gets the leg cut
// (nothing this bridge sees tells that from a path gone after the pong).
import type { IncomingMessage } from 'node:http';
import type WebSocket from 'ws';

/** What the keep-alive knows of one leg; the pipe marks what it sends (`sent`). */
export interface WatchedLeg {
  /** A frame (pong, ping or message) came since the last tick. */
  heard: boolean;
  /** Ticks in a row with nothing heard. */
  silentPeriods: number;
  /** Bytes went out on the leg since the last ping (set by the pipe). */
  sent: boolean;
  /** Pings sent, and pongs heard back (in order: the relay answers each ping as it reads it). */
  pings: number;
  pongs: number;
  /** The first ping sent after the latest bytes: until its pong, the relay may not have read them (a far end not reading). */
  pingAfterSent: number;
}

/** Periods of silence after which a leg is taken for dead. */
const SILENT_PERIODS = 2;

export class LegKeepAlive {
  private readonly legs = new Map<WebSocket, WatchedLeg>();
  /** Legs this keep-alive terminated: the pipe names the reason. */
  private readonly cut = new WeakSet<WebSocket>();
  private timer: NodeJS.Timeout | undefined;
  // Shared by every leg (`this` is the leg that emitted): no closure per leg.
  private readonly onFrame: (this: WebSocket) => void;
  private readonly onPong: (this: WebSocket) => void;
  private readonly onClose: (this: WebSocket) => void;

  constructor(readonly periodMs: number) {
    const legs = this.legs;
    this.onFrame = function (this: WebSocket) {
      const state = legs.get(this);
      if (state) state.heard = true;
    };
    this.onPong = function (this: WebSocket) {
      const state = legs.get(this);
      if (!state) return;
      state.heard = true;
      state.pongs++;
    };
    const forget = (ws: WebSocket) => this.forget(ws);
    this.onClose = function (this: WebSocket) {
      forget(this);
    };
  }

  /** Watches an open leg until it closes; the caller sets `sent` on what it returns when it sends on the leg. */
  watch(ws: WebSocket): WatchedLeg {
    const leg: WatchedLeg = { heard: true, silentPeriods: 0, sent: false, pings: 0, pongs: 0, pingAfterSent: 0 };
    this.legs.set(ws, leg);
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
      const sendingUnread = state.sent || state.pongs < state.pingAfterSent || ws.bufferedAmount > 0;
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
          state.sent = false;
        }
        ws.ping();
        state.pings++;
      }
    }
  }
}

/**
 * TCP keep-alive on a WebSocket's connection to the relay, set once the handshake is answered:
 * the kernel probes an idle connection and errors it when the path is gone.
 */
export function keepTcpAlive(ws: WebSocket, delayMs: number): void {
  ws.once('upgrade', (res: IncomingMessage) => res.socket.setKeepAlive(true, delayMs));
}
