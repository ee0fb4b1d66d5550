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
// One client address may hold limits.httpConnectionsPerAddress of them (IPv6
// by its /64, as the connection rate counts): before, one address could take
// every place of the node and keep it with a request every few seconds on
// each. Peers in listen.trustProxy (load balancers, carrying many clients;
// with listen.proxyProtocol every peer is one) are not counted by address.
import type { Socket } from 'node:net';
import { SweepClock } from '../websocket/sweep-clock.ts';
import { ConnectionsByAddress } from './connections-by-address.ts';

export interface HttpConnectionEvents {
  /** A new connection past the limit: answer and close it. */
  refused(socket: Socket, open: number): void;
  /** A new connection past the limit for its client address (`open`: that address's): answer and close it. */
  refusedAddress(socket: Socket, open: number): void;
  /** A connection that sent no byte within firstByteMs: answer and close it. */
  silent(socket: Socket): void;
  /** A kept-alive connection whose next request head did not come within betweenRequestsMs of its last answer: answer and close it. */
  idle(socket: Socket): void;
}

/** Requests a connection's heads began (requestArrived), on the socket itself: no table per request. */
const REQUESTS = Symbol('requests');
/** node:http's `_httpMessage`: the answer it writes on the connection now, null between answers. */
type CountedSocket = Socket & { [REQUESTS]?: number; _httpMessage?: object | null };

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
  /** Connections counted by client address (plain ones and handshakes). */
  private readonly byAddress = new ConnectionsByAddress();
  /** The address each connection counted by address counts under (its TCP socket's while its handshake runs). */
  private readonly addressOf = new Map<Socket, string>();

  /**
   * Kept-alive connections seen with no request under way at a sweep, since when (performance.now()) and at which
   * count of requests: the next head must come within betweenRequestsMs. Node's own headers timeout starts only with
   * a request, and CRLFs before a request line begin none while each puts off its keep-alive timeout: two bytes every
   * few seconds held a connection for good. Judged at the sweeps (a request count on the socket, node:http's
   * `_httpMessage` for an answer under way) rather than by a listener per request: that cost the relayed path ~4 %.
   */
  private readonly idleSince = new Map<Socket, { since: number; requests: number }>();

  /**
   * limits.httpConnectionsPerAddress; a reload may change it (connections already open stay). 0: not counted
   * (connections open while it was 0 stay uncounted).
   */
  perAddressLimit = 0;

  /** timeouts.headersMs: how long a kept-alive connection may wait for its next request head; 0: not bounded here. */
  betweenRequestsMs = 0;

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
    /** Whether a TCP peer is a load balancer (listen.trustProxy, read live): its connections are not counted by address. */
    private readonly isProxy: (address: string | undefined) => boolean = () => false,
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
    if (!this.countByAddress(socket)) return;
    this.handshakes.set(key, { socket, settings });
    socket.once('close', () => {
      if (this.handshakes.get(key)?.socket === socket) this.handshakes.delete(key);
      this.uncount(socket);
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
      const handshake = key === undefined ? undefined : this.handshakes.get(key);
      if (handshake) {
        settings = handshake.settings;
        this.handshakes.delete(key!);
        // Its place by address passes from the TCP socket to the TLS one (counted again just below).
        this.uncount(handshake.socket);
      }
    }
    if (this.size >= this.limit) {
      this.events.refused(socket, this.size);
      return settings;
    }
    if (!this.countByAddress(socket)) return settings;
    this.plain.add(socket);
    this.silentSince.set(socket, now);
    socket.once('close', () => this.forget(socket));
    return settings;
  }

  /** The connection became a WebSocket: it counts as one from now on. */
  upgraded(socket: Socket): void {
    this.forget(socket);
  }

  /** A request head of `socket` came (a request, or an upgrade: which the connection is not kept after). */
  requestArrived(socket: Socket): void {
    const counted = socket as CountedSocket;
    counted[REQUESTS] = (counted[REQUESTS] ?? 0) + 1;
  }

  private forget(socket: Socket): void {
    this.plain.delete(socket);
    this.silentSince.delete(socket);
    this.idleSince.delete(socket);
    this.uncount(socket);
  }

  /**
   * Counts `socket` against its client address, unless it is not counted by address (the limit off, a balancer's
   * connection); false when that address holds perAddressLimit already (the connection was refused).
   */
  private countByAddress(socket: Socket): boolean {
    const address = socket.remoteAddress;
    if (this.perAddressLimit <= 0 || !address || this.isProxy(address)) return true;
    const taken = this.byAddress.take(address, this.perAddressLimit);
    if ('refused' in taken) {
      this.events.refusedAddress(socket, taken.refused);
      return false;
    }
    this.addressOf.set(socket, taken.key);
    return true;
  }

  private uncount(socket: Socket): void {
    const key = this.addressOf.get(socket);
    if (key === undefined) return;
    this.addressOf.delete(socket);
    this.byAddress.release(key);
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
    if (this.betweenRequestsMs <= 0) return;
    for (const socket of this.plain) {
      const { [REQUESTS]: requests, _httpMessage: answering } = socket as CountedSocket;
      // Before its first request, the silent check's; with one under way (its answer not all out), not idle.
      if (requests === undefined || answering) {
        this.idleSince.delete(socket);
        continue;
      }
      const idle = this.idleSince.get(socket);
      if (!idle || idle.requests !== requests) this.idleSince.set(socket, { since: now, requests });
      else if (now - idle.since >= this.betweenRequestsMs) {
        this.idleSince.delete(socket);
        this.events.idle(socket);
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
