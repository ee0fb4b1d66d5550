// WebSocket mode (docs/protocols/hybrid-connections.md, "WebSocket mode: rendezvous"): a
// sender's upgrade is held while an `accept` notice goes to a listener; the
// listener dials the rendezvous address to accept (the relay then completes
// both handshakes and splices the sockets) or to reject with a status code
// (the sender's upgrade fails with it). No answer in time: 504. A listener
// that drops its control channel before dialing fails the sender at once
// with 502 ListenerGone (the pending connect is tracked on the route like an
// HTTP exchange; across edges the listener's edge reports it, hc.failed).
import type { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { remoteEndpointOf } from '../http/client-address.ts';
import type { Logger } from '../telemetry/logger.ts';
import { FrameSplice } from '../websocket/frame-splice.ts';
import { parseUpgradeRequest, writeSwitchingProtocols, writeUpgradeError } from '../websocket/handshake.ts';
import { connectHeadersOf } from './connect-headers.ts';
import { connectFailed, countConnectFailure, partsAllowed, pendingLimitReached, rendezvousAddress, type HybridContext, type HybridPathBelow } from './context.ts';
import type { HybridEntity } from './entity-catalog.ts';
import { failUpgrade } from './errors.ts';
import { LocalRoute, NONE_TOOK_OVER, type ListenerRoutes } from './listener-route.ts';
import type { PendingRendezvous } from './rendezvous-table.ts';
import type { CredentialHeaders } from './sender-credential.ts';
import { paramInAnyCase } from '../http/query-params.ts';

export interface PendingConnect extends PendingRendezvous {
  action: 'accept';
  id: string;
  entity: HybridEntity;
  socket: Duplex;
  head: Buffer;
  /** Bytes the held sender sent after its upgrade, joined once at the splice (appending each read copied all before it). */
  early: Buffer[];
  earlyBytes: number;
  key: string;
  /** Subprotocols the sender offered: the listener may accept one of them, or none. */
  protocols: string[];
  log: Logger;
  timer: NodeJS.Timeout;
  onSenderGone: () => void;
  /** Reads the held socket so a hang-up is seen; keeps any early bytes. */
  onEarlyData: (chunk: Buffer) => void;
  onSenderEnd: () => void;
  /** Stops the route from reporting this connect's listener (it is settled). */
  untrack: () => void;
}

/** Takes the held-socket handlers off the sender: it is answered or spliced now. */
function detachSender(pending: PendingConnect): void {
  pending.untrack();
  const s = pending.socket;
  s.off('close', pending.onSenderGone);
  s.off('data', pending.onEarlyData);
  s.off('end', pending.onSenderEnd);
}

/** First TCP keep-alive probe on an idle spliced leg. */
const SPLICE_TCP_KEEPALIVE_MS = 30_000;

/** Bytes a sender may send before its upgrade is answered (it should send none). */
const MAX_EARLY_BYTES = 65536;

/**
 * Holds the sender's upgrade and pushes `accept` along `route`; its address
 * carries the sender's path suffix and query (`below`), its headers all but
 * the sender's credential.
 */
export function startConnect(
  ctx: HybridContext,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  entity: HybridEntity,
  routes: ListenerRoutes,
  below: HybridPathBelow,
  credential: CredentialHeaders,
  /** The sender's sb-hc-id, when valid: what the listener is told as the accept's id. */
  trackingId: string | undefined,
  log: Logger,
): void {
  const upgrade = parseUpgradeRequest(req);
  if (!upgrade) return failUpgrade(socket, 'BadRequest', 'Invalid WebSocket handshake');
  if (pendingLimitReached(ctx, entity)) return connectFailed(ctx, socket, 'TooManyPending', entity);
  let route = routes.routeTo(entity);
  const id = ctx.newRendezvousId();
  const pending: PendingConnect = {
    action: 'accept',
    id,
    entity,
    socket,
    head,
    early: [],
    earlyBytes: head.length,
    key: upgrade.key,
    protocols: upgrade.protocols,
    log,
    timer: setTimeout(() => {
      if (!ctx.rendezvous.delete(pending)) return;
      detachSender(pending);
      log.info({ event: 'connect.timeout', ms: ctx.config.timeouts.acceptMs });
      connectFailed(ctx, socket, route.isOpen ? 'AcceptTimeout' : 'ListenerGone', entity);
    }, ctx.config.timeouts.acceptMs),
    onSenderGone: () => {
      if (ctx.rendezvous.delete(pending)) {
        clearTimeout(pending.timer);
        pending.untrack();
        countConnectFailure(ctx, 'SenderGone', entity);
        log.info({ event: 'connect.sender_gone' });
      }
    },
    onEarlyData: (chunk) => {
      pending.early.push(chunk);
      pending.earlyBytes += chunk.length;
      // A sender trickling bytes is held to as many reads as to bytes (partsAllowed).
      if (pending.earlyBytes > MAX_EARLY_BYTES || pending.early.length > partsAllowed(MAX_EARLY_BYTES)) socket.destroy();
    },
    onSenderEnd: () => socket.destroy(),
    untrack: () => route.untrack(id),
    listenerLost: () => {
      if (!ctx.rendezvous.delete(pending)) return;
      clearTimeout(pending.timer);
      detachSender(pending);
      log.info({ event: 'connect.listener_gone' });
      connectFailed(ctx, socket, 'ListenerGone', entity);
    },
    entityRemoved: () => {
      if (!ctx.rendezvous.delete(pending)) return;
      clearTimeout(pending.timer);
      pending.untrack();
      detachSender(pending);
      log.info({ event: 'connect.entity_removed' });
      connectFailed(ctx, socket, 'EntityRemoved', entity);
    },
    arrive: (listenerReq, listenerSocket, listenerHead, params) => completeConnect(ctx, listenerReq, listenerSocket, listenerHead, pending, params),
  };
  // After 'upgrade' Node leaves the socket paused: without reading it, a
  // sender that hangs up while held would go unnoticed.
  socket.on('data', pending.onEarlyData);
  socket.on('end', pending.onSenderEnd);
  socket.on('close', pending.onSenderGone);
  socket.on('error', () => socket.destroy());
  ctx.rendezvous.add(pending);
  const watch = { onControlResponse: () => undefined, badResponse: () => {}, listenerLost: () => pending.listenerLost() };
  route.track(id, watch);
  const accept = {
    address: rendezvousAddress(ctx, 'accept', entity, id, below),
    id,
    ...(trackingId !== undefined ? { trackingId } : {}),
    // All of the sender's handshake headers but its credential (and extension offers no server could accept).
    connectHeaders: connectHeadersOf(req, credential),
    remoteEndpoint: remoteEndpointOf(req),
  };
  let rerouted = false;
  const deliver = (): void =>
    void route.deliver({ accept }).then((code) => {
      if (!code) return log.info({ event: 'connect.accept_sent', via: route.via });
      // A listener of this edge that could not be told (dropped, its buffer full): another listener takes the
      // connect, once, when there is one (as a relayed request goes on to another; the bus route asks again itself).
      if (code === 'ListenerGone' && route instanceof LocalRoute && !rerouted && ctx.rendezvous.get(id) === pending) {
        const next = routes.routeTo(entity);
        if (next.isOpen) {
          rerouted = true;
          route.untrack(id);
          route = next;
          route.track(id, watch);
          log.info({ event: 'connect.rerouted', via: route.via, reason: 'listener_gone' });
          return deliver();
        }
      }
      // Not delivered: the sender hears why now rather than at the accept timeout. Asked again after its listener
      // was dropped and nobody else took it: the listener left (502 ListenerGone), not that there was never one.
      if (!ctx.rendezvous.delete(pending)) return;
      clearTimeout(pending.timer);
      detachSender(pending);
      const reported = rerouted && NONE_TOOK_OVER.has(code) ? 'ListenerGone' : code;
      log.info({ event: 'connect.refused', code: reported });
      connectFailed(ctx, socket, reported, entity);
    });
  deliver();
}

/** The listener's rendezvous leg arrived for `pending`: accept or reject. */
function completeConnect(
  ctx: HybridContext,
  req: IncomingMessage,
  listenerSocket: Duplex,
  listenerHead: Buffer,
  pending: PendingConnect,
  params: URLSearchParams,
): void {
  ctx.rendezvous.delete(pending);
  clearTimeout(pending.timer);
  const sender = pending.socket;
  detachSender(pending);
  const log = pending.log;
  if (sender.destroyed) {
    countConnectFailure(ctx, 'SenderGone', pending.entity);
    return failUpgrade(listenerSocket, 'SenderGone');
  }

  const rejectCode = paramInAnyCase(params, 'sb-hc-statusCode') ?? params.get('statusCode');
  const given = paramInAnyCase(params, 'sb-hc-statusDescription') ?? params.get('statusDescription') ?? undefined;
  // A description without a code is a reject too (Azure requires both): before, the connection was spliced.
  if (rejectCode !== null || given !== undefined) {
    // Three digits, as .NET writes an int: `0x194`, `4.04e2` or ` 404 ` are not a status (Number() read them as 404).
    const status = rejectCode !== null && /^[0-9]{3}$/.test(rejectCode) ? Number(rejectCode) : 0;
    const inRange = status >= 400 && status <= 599;
    const code = inRange ? status : 400;
    // A description written for another status (a 302's "Found") would read as the 400's own phrase: it is named as the listener's.
    const said = rejectCode === null ? 'without a status' : `with status ${rejectCode}`;
    const description = inRange ? given : `Rejected by the listener ${said}${given ? `: ${given}` : ''}`;
    log.info({ event: 'connect.rejected', status: code });
    countConnectFailure(ctx, 'RejectedByListener', pending.entity, code);
    writeUpgradeError(sender, code, description, 'RejectedByListener', {}, true);
    return failUpgrade(listenerSocket, 'RendezvousRejected');
  }

  const upgrade = parseUpgradeRequest(req);
  if (!upgrade) {
    connectFailed(ctx, sender, 'ListenerGone', pending.entity, 'The listener sent an invalid rendezvous handshake');
    return failUpgrade(listenerSocket, 'BadRequest', 'Invalid WebSocket handshake');
  }
  // The listener's leg names the subprotocol it accepts: it must be one the
  // sender offered (RFC 6455 4.2.2), or the sender would get a subprotocol it
  // never asked for.
  const protocol = upgrade.protocols.find((p) => pending.protocols.includes(p));
  if (upgrade.protocols.length > 0 && protocol === undefined) {
    log.info({ event: 'connect.subprotocol_not_offered' });
    connectFailed(ctx, sender, 'BadListenerResponse', pending.entity, 'The listener accepted with a subprotocol the sender did not offer');
    return failUpgrade(listenerSocket, 'BadRequest', 'Accept with a subprotocol the sender offered, or none');
  }
  writeSwitchingProtocols(listenerSocket, upgrade.key, protocol);
  writeSwitchingProtocols(sender, pending.key, protocol);
  for (const s of [sender, listenerSocket]) {
    if (!(s instanceof Socket)) continue;
    s.setNoDelay(true);
    // The relay does not ping spliced legs (each end pings the other through
    // it); TCP keep-alive finds a peer that vanished without a FIN.
    s.setKeepAlive(true, SPLICE_TCP_KEEPALIVE_MS);
  }
  log.info({ event: 'connect.spliced', protocol });
  ctx.metrics.rendezvousOpened.inc();
  const openedAt = performance.now();
  const splice = new FrameSplice(
    sender,
    listenerSocket,
    {
      highWaterMark: ctx.config.limits.spliceBufferBytes,
      closeHandshakeMs: ctx.config.timeouts.closeHandshakeMs,
      maxFrameBytes: 0,
    },
    (result) => {
      ctx.open.splices.delete(splice);
      ctx.traffic.spliceClosed(pending.entity, splice, result.bytesAtoB + result.bytesBtoA);
      if (ctx.metrics.trace.on) ctx.metrics.trace.emit('connect.closed', { entity: pending.entity.name, code: String(result.code), bytes: result.bytesAtoB + result.bytesBtoA, ms: performance.now() - openedAt, detail: `closed by ${result.closedBy === 'a' ? 'sender' : 'listener'}` });
      ctx.metrics.bytesRelayed.inc({ direction: 'to_listener' }, result.bytesAtoB);
      ctx.metrics.bytesRelayed.inc({ direction: 'to_sender' }, result.bytesBtoA);
      log.info({
        event: 'connect.closed',
        code: result.code,
        closedBy: result.closedBy === 'a' ? 'sender' : 'listener',
        bytesToListener: result.bytesAtoB,
        bytesToSender: result.bytesBtoA,
      });
    },
  );
  ctx.open.splices.set(splice, pending.entity);
  ctx.traffic.spliceOpened(pending.entity, splice);
  // Whether a subprotocol was agreed, never which: some clients carry a credential in it.
  if (ctx.metrics.trace.on) ctx.metrics.trace.emit('connect.accepted', { entity: pending.entity.name, detail: protocol ? 'with a subprotocol' : undefined });
  splice.start(pending.early.length === 0 ? pending.head : Buffer.concat([pending.head, ...pending.early]), listenerHead);
}
