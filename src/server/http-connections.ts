// Plain HTTP connections of an edge node, before any WebSocket upgrade: how
// many are open (limits.httpConnectionsPerNode: past it a new one is answered
// 503 and closed before its request is read) and which have sent nothing yet
// (timeouts.firstByteMs: one shared timer closes them with 408). Node's own
// headers timeout (timeouts.headersMs, set on the server) bounds the rest of
// a request head. Slowloris held sockets forever: 1,000 connections that
// never sent a byte, or 100 sending a header line every 5 s, all stayed and
// counted against nothing (issue 18, defect 5). A connection that upgrades
// leaves this count for the WebSocket one (limits.connectionsPerNode); a
// request whose head is complete may stream its body for as long as it likes.
import type { Socket } from 'node:net';
import { SweepClock } from '../websocket/sweep-clock.ts';

export interface HttpConnectionEvents {
  /** A new connection past the limit: answer and close it. */
  refused(socket: Socket, open: number): void;
  /** A connection that sent no byte within firstByteMs: answer and close it. */
  silent(socket: Socket): void;
}

export class HttpConnections {
  /** Every plain connection. */
  private readonly plain = new Set<Socket>();
  /**
   * With TLS: TCP connections whose handshake is under way (bounded in time by the server's handshake timeout),
   * by both ends' addresses and ports, which their TLS socket shares, with the TLS settings they were accepted
   * under (relay-server.ts counts client-CA changes). Counted too: before, only finished handshakes were, so any
   * number of connections could sit in their handshakes at once.
   */
  private readonly handshakes = new Map<string, { socket: Socket; settings: number }>();
  /**
   * Connections that have sent nothing yet, and when each was accepted: performance.now(), a monotonic clock (the wall
   * clock stepped back by NTP or a VM restore kept silent connections open for as long as the step).
   */
  private readonly silentSince = new Map<Socket, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly sweepClock: SweepClock;

  constructor(
    /** limits.httpConnectionsPerNode; a reload may change it (connections already open stay). */
    public limit: number,
    private readonly firstByteMs: number,
    private readonly events: HttpConnectionEvents,
    /**
     * Bytes a connection read before its first request byte (listen.proxyProtocol: its PROXY header); undefined
     * while that is still being read (bounded elsewhere: not counted silent meanwhile).
     */
    private readonly preambleBytes: (socket: Socket) => number | undefined = () => 0,
  ) {
    // A quarter of the bound: a silent connection is closed within 1.25 times it.
    const period = Math.max(25, Math.floor(firstByteMs / 4));
    this.sweepClock = new SweepClock(period, () => performance.now());
    this.timer = setInterval(() => this.closeSilent(), period);
    this.timer.unref();
  }

  get size(): number {
    return this.plain.size + this.handshakes.size;
  }

  /**
   * With TLS, a new TCP connection, accepted under the TLS `settings` of now: counted until its handshake is done
   * (then accepted() takes it over) or it closes; refused past `limit`.
   */
  handshaking(socket: Socket, settings = 0): void {
    if (this.size >= this.limit) return this.events.refused(socket, this.size);
    const key = addressKey(socket);
    if (key === undefined) return;
    this.handshakes.set(key, { socket, settings });
    socket.once('close', () => {
      if (this.handshakes.get(key)?.socket === socket) this.handshakes.delete(key);
    });
  }

  /**
   * A new connection (with TLS: its handshake done): counted, or refused when the node holds `limit` already.
   * With TLS, returns the settings its TCP connection was accepted under (handshaking()), when known.
   */
  accepted(socket: Socket, now = performance.now()): number | undefined {
    let settings: number | undefined;
    if (this.handshakes.size > 0) {
      const key = addressKey(socket);
      if (key !== undefined) {
        settings = this.handshakes.get(key)?.settings;
        this.handshakes.delete(key);
      }
    }
    if (this.size >= this.limit) {
      this.events.refused(socket, this.size);
      return settings;
    }
    this.plain.add(socket);
    this.silentSince.set(socket, now);
    socket.once('close', () => this.forget(socket));
    return settings;
  }

  /** The connection became a WebSocket: it counts as one from now on. */
  upgraded(socket: Socket): void {
    this.forget(socket);
  }

  private forget(socket: Socket): void {
    this.plain.delete(socket);
    this.silentSince.delete(socket);
  }

  private closeSilent(now = performance.now()): void {
    // A sweep that runs late (the process was paused: a VM stall, a blocked event loop) does not judge: the first
    // bytes that came meanwhile are not read yet (before: such connections were answered 408).
    if (!this.sweepClock.onTime(now)) return;
    for (const [socket, since] of this.silentSince) {
      const preamble = this.preambleBytes(socket);
      if (preamble === undefined) continue;
      if (socket.bytesRead > preamble) this.silentSince.delete(socket);
      else if (now - since >= this.firstByteMs) {
        this.silentSince.delete(socket);
        this.events.silent(socket);
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/**
 * A TCP connection's addresses and ports, both ends: the same on the TLS socket over it. (The peer's alone is not
 * one connection's: a client may use one source port towards two addresses of this host.)
 */
function addressKey(socket: Socket): string | undefined {
  if (socket.remoteAddress === undefined || socket.localAddress === undefined) return undefined;
  return `${socket.localAddress}|${socket.localPort}|${socket.remoteAddress}|${socket.remotePort}`;
}
