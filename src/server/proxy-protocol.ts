// listen.proxyProtocol (docs/security.md, "Behind a load balancer"): every
// TCP connection to the port begins with a PROXY protocol header (v1 or v2,
// proxy-header.ts) from a balancer listed in listen.trustProxy, which names
// the client; the relay takes that client as the connection's peer
// (http/client-address.ts) and hands the rest of the bytes to the HTTP or
// TLS server as if the connection had just been accepted. A connection from
// any other peer is closed unread (anyone could write a header), and so is
// one whose header is malformed or not complete within timeouts.firstByteMs
// (or headersMs, if shorter: a balancer sends it at once).
//
// Node's HTTP and TLS servers take a connection in their own 'connection'
// listeners; those are held back here until the header is read. The relay's
// other 'connection' listeners (counting, the shutdown drain) run at accept,
// so a connection still owing its header counts against
// limits.httpConnectionsPerNode like any other.
import type { Server } from 'node:net';
import type { Socket } from 'node:net';
import { setConnectionPeer } from '../http/client-address.ts';
import { V1_MAX_BYTES, V2_MAX_BLOCK_BYTES, parseProxyHeader } from './proxy-header.ts';

/** The most bytes a header can take: a longer one is refused before it is all read. */
const MAX_HEADER_BYTES = Math.max(V1_MAX_BYTES, 16 + V2_MAX_BLOCK_BYTES);

export type ProxyProtocolRefusal = 'untrusted_peer' | 'invalid' | 'timeout';

export interface ProxyProtocolOptions {
  /** Whether the TCP peer may send a header (listen.trustProxy, read live). */
  trusts(address: string | undefined): boolean;
  /** How long a header may take (the shorter of timeouts.firstByteMs and headersMs: a balancer sends it at once). */
  headerMs: number;
  /** A connection closed without reaching the server, and why. */
  refused(socket: Socket, reason: ProxyProtocolRefusal, detail?: string): void;
}

export class ProxyProtocolFront {
  /** The server's own connection listeners (Node's HTTP or TLS server), called once the header is read. */
  private readonly serverListeners: ((socket: Socket) => void)[];

  /**
   * Takes over `server`'s connection listeners registered so far (Node's
   * own): call before adding the relay's. `tls`: the server is a TLS one,
   * which reads what follows the header from the socket's buffer.
   */
  constructor(
    private readonly server: Server,
    private readonly tls: boolean,
    private readonly options: ProxyProtocolOptions,
  ) {
    this.serverListeners = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => this.readHeader(socket));
  }

  /** The size of each connection's header: what it read before its first byte of HTTP or TLS. */
  private readonly headerBytes = new WeakMap<Socket, number>();

  /** Connections whose header is still being read. */
  private readonly reading = new WeakSet<Socket>();

  /**
   * Bytes `socket` read that were no request's (its header): a connection that sent its header and nothing more
   * is silent (timeouts.firstByteMs) and idle (the drain). Undefined while its header is being read: its timer
   * here bounds it, and it holds no request.
   */
  preambleBytes(socket: Socket): number | undefined {
    return this.reading.has(socket) ? undefined : (this.headerBytes.get(socket) ?? 0);
  }

  /** Connections whose header was read elsewhere (another worker's hand-off): the server takes them as they are. */
  private readonly headerRead = new WeakSet<Socket>();

  /** The next 'connection' of `socket` carries no header: it was read by the worker that accepted it. */
  skipHeader(socket: Socket): void {
    this.headerRead.add(socket);
  }

  private adopt(socket: Socket): void {
    for (const listener of this.serverListeners) listener.call(this.server, socket);
  }

  private readHeader(socket: Socket): void {
    if (this.headerRead.delete(socket)) return this.adopt(socket);
    // Gone before it was taken (no peer to ask about): nothing to refuse.
    if (socket.remoteAddress === undefined) return void socket.destroy();
    if (!this.options.trusts(socket.remoteAddress)) {
      this.options.refused(socket, 'untrusted_peer');
      socket.destroy();
      return;
    }
    let received: Buffer = Buffer.alloc(0);
    this.reading.add(socket);
    const end = () => {
      this.reading.delete(socket);
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', end);
    };
    const refuse = (reason: ProxyProtocolRefusal, detail?: string) => {
      end();
      this.options.refused(socket, reason, detail);
      socket.destroy();
    };
    const timer = setTimeout(() => refuse('timeout'), this.options.headerMs);
    const onError = () => {
      end();
      socket.destroy();
    };
    socket.once('close', end);
    const onData = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const header = parseProxyHeader(received.length > MAX_HEADER_BYTES ? received.subarray(0, MAX_HEADER_BYTES) : received);
      if (header.kind === 'incomplete') return;
      if (header.kind === 'invalid') return refuse('invalid', header.why);
      end();
      setConnectionPeer(socket, header.kind === 'client' ? { address: header.address, port: header.port } : 'unnamed');
      this.headerBytes.set(socket, header.bytes);
      const rest = received.subarray(header.bytes);
      if (this.tls) {
        // A TLS server reads what the socket holds buffered as the start of the handshake.
        socket.pause();
        if (rest.length > 0) socket.unshift(rest);
        this.adopt(socket);
      } else {
        // Node's HTTP server reads the socket's handle itself: what was read already is given to it as read.
        this.adopt(socket);
        if (rest.length > 0) socket.emit('data', rest);
      }
    };
    socket.on('data', onData);
    socket.on('error', onError);
  }
}
