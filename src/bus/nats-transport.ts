// Fixes for nats.js 2.29's Node transport, applied once when the bus is
// loaded.
//
// Attempts given up on. When the client gives up on a connection attempt (its
// connect timeout passed: the server accepted the TCP connection but is
// frozen, or a firewall holds it), it closes the attempt's transport, but that
// close does nothing for a transport not connected yet: the attempt goes on,
// and when the server answers later it completes, unread and unused. The
// server then holds a connection for good; and when it finally drops it, the
// client takes that for a loss of its real connection, connects again and
// keeps the first one open too, reading both, so every message on its
// subscriptions arrived twice (a chaos soak saw an edge get every
// hybrid-connection answer twice after a NATS node was frozen). Here, closing
// an attempt ends it: its socket is destroyed, and one that completes anyway
// is destroyed instead of used.
//
// Stale connections. When the client judges its connection stale (pings
// unanswered: maxPingOut), it calls disconnect(), which first waits for an
// empty write to go out, to flush what is queued, and only then destroys the
// socket. A server frozen (SIGSTOP) or cut off while more is queued than the
// kernel's buffers hold (a few MB on loopback) never lets that write go out:
// the socket was never destroyed, no Disconnect came, and the edge went on as
// connected for as long as the freeze lasted (16 MiB queued: still connected
// after 15 s, pings every second). Here, disconnect() destroys the socket at
// once: what is queued on a connection judged dead is lost either way.
//
// Failed reconnects. The client swallows why an attempt to connect again
// failed (a server back with a certificate the edge does not trust, a TLS
// handshake refused, a timeout): the edge logged bus.disconnected, then
// nothing for as long as it lasted. Here each failed attempt is told to the
// function the connection's options carry under DIAL_FAILED (nats.ts logs it).
import type { NatsConnection } from 'nats';
import type { NatsConnectionImpl } from 'nats/lib/nats-base-client/nats.js';
import { ProtocolHandler } from 'nats/lib/nats-base-client/protocol.js';
import { NodeTransport } from 'nats/lib/src/node_transport.js';

/** The connection option (a function of the server and the error) that hears each failed attempt to connect. */
export const DIAL_FAILED = 'edgeRelayDialFailed';

/** Attempts the client gave up on before they connected. */
const abandoned = new WeakSet<NodeTransport>();
let applied = false;

/** Applies the fixes (once). */
export function fixNodeTransport(): void {
  if (applied) return;
  applied = true;
  const proto = NodeTransport.prototype;
  const close = proto.close;
  const setupHandlers = proto.setupHandlers;
  const dial = proto.dial;
  // A TCP connection that completes after its attempt was given up on is closed at once (it would wait for INFO).
  proto.dial = async function (this: NodeTransport, hp: { hostname: string; port: number }) {
    const socket = await dial.call(this, hp);
    if (abandoned.has(this)) {
      socket.destroy();
      throw new Error('connection attempt given up on');
    }
    return socket;
  };
  proto.close = function (this: NodeTransport, err?: Error): Promise<void> {
    if (!this.connected) {
      abandoned.add(this);
      // While the server's INFO is awaited, this rejects the attempt; before the TCP connection, there is no socket yet.
      this.socket?.destroy();
    }
    return close.call(this, err);
  };
  // Called as an attempt completes: one given up on meanwhile is dropped, never read.
  proto.setupHandlers = function (this: NodeTransport): void {
    if (abandoned.has(this)) {
      this.socket?.destroy();
      return;
    }
    setupHandlers.call(this);
  };
  // Stale (or told to reconnect): the socket goes without waiting for a last write that a full buffer never lets out.
  // close() is disconnect() without that wait; the client then reconnects as after any loss of its connection.
  proto.disconnect = function (this: NodeTransport): void {
    close.call(this).catch(() => undefined);
  };
  // An attempt (TCP, TLS, the server's answer, within the connect timeout) that failed: told, then thrown as before.
  const protocolDial = ProtocolHandler.prototype.dial;
  ProtocolHandler.prototype.dial = async function (this: ProtocolHandler, srv: Parameters<typeof protocolDial>[0]): Promise<void> {
    try {
      await protocolDial.call(this, srv);
    } catch (err) {
      const told = (this.options as unknown as Record<string, unknown>)[DIAL_FAILED];
      if (typeof told === 'function') told(srv.toString(), err);
      throw err;
    }
  };
}

/**
 * Bytes `nc` holds that its server has not taken: in the client's outbound buffer, and written to the socket but not
 * yet into the kernel's buffers (which hold a few MB more: this counts what this process holds).
 */
export function unsentBytes(nc: NatsConnection): number {
  const protocol = (nc as NatsConnectionImpl).protocol;
  const transport = protocol.transport as NodeTransport | undefined;
  return protocol.outbound.size() + (transport?.socket?.writableLength ?? 0);
}
