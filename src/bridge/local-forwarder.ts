// `bridge -L [bind:]port:entity`: a local TCP port whose every accepted
// connection becomes a relayed WebSocket to the entity's listener (the side
// that dials out, like azbridge -L). A connection the relay refuses (no
// listener, bad token) is closed and the reason logged; a 401 does not end the
// bridge as it ends a -R with a fixed token: a listener may reject a connection
// with any status, 401 too, and the answer reads the same. A fixed token's
// expiry (RelayAccess.watchExpiry) closes the port, and the bridge ends once
// the connections open then have ended (retire): the relay does not cut a
// sender's leg whose token expired. Open legs are pinged every keep-alive
// period (leg-keep-alive.ts).
import { createServer, type Server, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { Logger } from '../telemetry/logger.ts';
import { LegKeepAlive } from './leg-keep-alive.ts';
import { askingHalfClose, pipeSocketToWebSocket, legMaxPayload } from './pipe.ts';
import type { RelayAccess } from './relay-access.ts';

export interface LocalForward {
  bindHost: string;
  port: number;
  entity: string;
}

/** Parses `[bind:]port:entity`; an empty bind (`:8080:entity`) is 127.0.0.1, as ssh -L takes it: every interface only when written out (0.0.0.0, [::]). */
export function parseLocalForward(spec: string): LocalForward {
  // An IPv6 bind address goes in brackets: [::1]:8080:entity.
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:(.*)$/.exec(spec);
  const parts = v6 ? [v6[1], ...v6[2].split(':')] : spec.split(':');
  if (parts.length < 2 || parts.length > 3 || (v6 && parts.length !== 3)) throw new Error(`-L ${spec}: expected [bind:]port:entity`);
  const [bindHost, portText, entity] = parts.length === 3 ? parts : ['127.0.0.1', ...parts];
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port > 65535) throw new Error(`-L ${spec}: bad port "${portText}"`);
  if (!entity) throw new Error(`-L ${spec}: no entity`);
  return { bindHost: bindHost === '' ? '127.0.0.1' : bindHost, port, entity };
}

/**
 * How much longer than --connect-timeout a connect waits for the relay's answer: a -R gives its target that long from
 * when the accept reaches it, later than this connect began, and answers 502 when the target never did. With the same
 * wait on both sides this side always gave up first and logged its own timeout, never the 502 and its reason.
 */
const TARGET_VERDICT_MARGIN_MS = 5000;

export class LocalForwarder {
  private server: Server | undefined;
  /** Resolves once the port is closed and every connection it took has ended (net.Server's close). */
  private closed: Promise<void> | undefined;
  private readonly sockets = new Set<Socket>();
  /** Relay WebSockets not open yet: stop() ends them too. */
  private readonly connecting = new Set<WebSocket>();

  /** Relayed connections whose handshake with the relay is still under way. */
  get handshakes(): number {
    return this.connecting.size;
  }
  opened = 0;
  private readonly keepAlive: LegKeepAlive;

  constructor(
    readonly forward: LocalForward,
    private readonly access: RelayAccess,
    private readonly log: Logger,
    private readonly highWaterMark: number,
    /** Open legs are pinged this often, and cut after two silent periods (--keepalive). */
    keepAliveMs = 30000,
  ) {
    this.keepAlive = new LegKeepAlive(keepAliveMs);
  }

  /** Listens; resolves with the bound port. */
  start(): Promise<number> {
    // Half-open allowed: a client's FIN leaves the answer's direction open (pipe.ts, half-close).
    const server = createServer({ allowHalfOpen: true }, (tcp) => this.accept(tcp));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.forward.port, this.forward.bindHost, () => {
        server.off('error', reject);
        // Accept errors (EMFILE and the like) are logged; the port stays open.
        server.on('error', (err) => this.log.warn({ event: 'bridge.accept_error', entity: this.forward.entity, err: err.message }));
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  private accept(tcp: Socket): void {
    const id = ++this.opened;
    const log = this.log.child({ entity: this.forward.entity, connection: id });
    this.sockets.add(tcp);
    tcp.on('close', () => this.sockets.delete(tcp));
    tcp.pause();
    tcp.setNoDelay(true);
    let ws: WebSocket;
    try {
      ws = new WebSocket(askingHalfClose(this.access.actionUrl(this.forward.entity, 'connect')), {
        ...this.access.actionOptions(this.forward.entity, TARGET_VERDICT_MARGIN_MS),
        maxPayload: legMaxPayload(this.highWaterMark),
      });
    } catch (err) {
      // A relay URL ws cannot take (the command line checks it): this connection fails, the port stays open.
      log.warn({ event: 'bridge.connect_failed', err: (err as Error).message });
      tcp.resetAndDestroy();
      return;
    }
    this.keepAlive.prepare(ws);
    this.connecting.add(ws);
    let opened = false;
    // Until the relay answers, a local client that resets is this handler's (afterwards the pipe's).
    tcp.on('error', (err) => {
      if (opened) return;
      log.info({ event: 'bridge.local_gone', err: err.message });
      ws.terminate();
    });
    let refused = false;
    ws.on('unexpected-response', (_req, res) => {
      log.warn({ event: 'bridge.connect_refused', status: res.statusCode, reason: res.statusMessage });
      res.resume();
      // Refused (no listener, a bad token, the target unreachable): reset, as a refused direct connection is, not a clean empty end.
      tcp.resetAndDestroy();
      // With this handler, ws leaves the handshake to us: ended here, or the socket stayed CONNECTING
      // in `connecting` for good (~7 KB per refused connection).
      refused = true;
      this.connecting.delete(ws);
      ws.terminate();
    });
    ws.once('error', (err) => {
      this.connecting.delete(ws);
      if (!opened && !refused) {
        log.warn({ event: 'bridge.connect_failed', err: err.message });
        tcp.resetAndDestroy();
      }
    });
    ws.once('open', () => {
      this.connecting.delete(ws);
      opened = true;
      if (tcp.destroyed) return ws.close(1000, 'local connection gone');
      log.info({ event: 'bridge.connected' });
      tcp.resume();
      pipeSocketToWebSocket(tcp, ws, this.highWaterMark, (result) => log.info({ event: 'bridge.closed', ...result }), 'ask', this.keepAlive);
    });
  }

  /** Connections taken and not yet closed, the relay's answer awaited or carried by a leg. */
  get openConnections(): number {
    return this.sockets.size;
  }

  /**
   * Takes no new connections: the port is closed, so a connect is refused, as to a port nobody listens on, not
   * taken and reset. Resolves once every connection open then has ended on its own; they go on as before, with
   * their keep-alive (a leg whose relay goes silent is cut). Before, a fixed token's expiry reset them all: an SSH
   * session forwarded through -L was cut at the token's expiry, where Azure's relay lets it run.
   */
  retire(): Promise<void> {
    if (!this.closed) this.log.info({ event: 'bridge.accepting_stopped', entity: this.forward.entity, open: this.sockets.size });
    return this.closeServer();
  }

  private closeServer(): Promise<void> {
    // Once: net.Server calls back a second close only on a later 'close' event, which may never come.
    this.closed ??= new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    return this.closed;
  }

  async stop(): Promise<void> {
    for (const ws of this.connecting) ws.terminate();
    // Cut mid-stream: each local client is reset, and its relayed leg ends 1011 (pipe.ts), so neither end takes it for a complete transfer.
    for (const s of this.sockets) s.resetAndDestroy();
    await this.closeServer();
  }
}
