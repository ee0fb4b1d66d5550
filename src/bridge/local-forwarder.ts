// `bridge -L [bind:]port:entity`: a local TCP port whose every accepted
// connection becomes a relayed WebSocket to the entity's listener (the side
// that dials out, like azbridge -L). A connection the relay refuses (no
// listener, bad token) is closed and the reason logged.
import { createServer, type Server, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { Logger } from '../telemetry/logger.ts';
import { pipeSocketToWebSocket } from './pipe.ts';
import type { RelayAccess } from './relay-access.ts';

export interface LocalForward {
  bindHost: string;
  port: number;
  entity: string;
}

/** Parses `[bind:]port:entity`. */
export function parseLocalForward(spec: string): LocalForward {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3) throw new Error(`-L ${spec}: expected [bind:]port:entity`);
  const [bindHost, portText, entity] = parts.length === 3 ? parts : ['127.0.0.1', ...parts];
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`-L ${spec}: bad port "${portText}"`);
  if (!entity) throw new Error(`-L ${spec}: no entity`);
  return { bindHost, port, entity };
}

export class LocalForwarder {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  opened = 0;

  constructor(
    readonly forward: LocalForward,
    private readonly access: RelayAccess,
    private readonly log: Logger,
    private readonly highWaterMark: number,
  ) {}

  /** Listens; resolves with the bound port. */
  start(): Promise<number> {
    const server = createServer({ allowHalfOpen: false }, (tcp) => this.accept(tcp));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.forward.port, this.forward.bindHost, () => resolve((server.address() as { port: number }).port));
    });
  }

  private accept(tcp: Socket): void {
    const id = ++this.opened;
    const log = this.log.child({ entity: this.forward.entity, connection: id });
    this.sockets.add(tcp);
    tcp.on('close', () => this.sockets.delete(tcp));
    tcp.pause();
    tcp.setNoDelay(true);
    const ws = new WebSocket(this.access.actionUrl(this.forward.entity, 'connect'), this.access.socketOptions(this.access.wsBase));
    let opened = false;
    ws.on('unexpected-response', (_req, res) => {
      log.warn({ event: 'bridge.connect_refused', status: res.statusCode, reason: res.statusMessage });
      res.resume();
      tcp.destroy();
    });
    ws.once('error', (err) => {
      if (!opened) {
        log.warn({ event: 'bridge.connect_failed', err: err.message });
        tcp.destroy();
      }
    });
    ws.once('open', () => {
      opened = true;
      log.info({ event: 'bridge.connected' });
      tcp.resume();
      pipeSocketToWebSocket(tcp, ws, this.highWaterMark, (result) => log.info({ event: 'bridge.closed', ...result }));
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
