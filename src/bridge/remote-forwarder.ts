// `bridge -R entity:host:port`: holds a listener control channel on the
// entity and turns every relayed connection into a TCP connection to
// host:port (the side that listens, like azbridge -R). The target is dialed
// first; if it cannot be reached the relayed connection is rejected with 502,
// so the sender sees why. A lost control channel is re-opened after a
// jittered, growing delay, and the log says why it was lost; a 401 for
// credentials that never change (a fixed token, or none) is not retried but
// ends the bridge (RelayAccess.refusedForGood), as a fixed token's expiry
// does: the channel is closed, and the bridge ends once the legs open then
// have ended (retire; the relay keeps spliced legs whatever becomes of the
// listener's token). Tokens minted from a key are renewed on the channel at
// half their lifetime. Open legs are pinged every keep-alive period too
// (leg-keep-alive.ts).
import { connect, type Socket } from 'node:net';
import WebSocket from 'ws';
import { hostBeforePort } from '../http/host-header.ts';
import type { Logger } from '../telemetry/logger.ts';
import { SweepClock } from '../websocket/sweep-clock.ts';
import { Backoff } from './backoff.ts';
import { LegKeepAlive, keepTcpAlive } from './leg-keep-alive.ts';
import { halfCloseFor, pipeSocketToWebSocket, legMaxPayload } from './pipe.ts';
import { CREDENTIALS_REFUSED_403, refusalCode } from './refusal-code.ts';
import { MAX_TIMER_MS, type RelayAccess } from './relay-access.ts';

export interface RemoteForward {
  entity: string;
  host: string;
  port: number;
}

/** Parses `entity:host:port`. */
export function parseRemoteForward(spec: string): RemoteForward {
  const m = /^([^:]+):(.+):(\d+)$/.exec(spec);
  if (!m) throw new Error(`-R ${spec}: expected entity:host:port`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`-R ${spec}: bad port "${m[3]}"`);
  return { entity: m[1], host: m[2].replace(/^\[(.*)\]$/, '$1'), port };
}

interface AcceptNotice {
  address: string;
  id: string;
}

/** How long a refusal's body is read for its code (the relay's is one short line, sent with its head). */
const REFUSAL_READ_MS = 1000;

/** When a minted token is renewed: at half its life, and within what a timer can wait (about 24.8 days). */
export function renewDelayMs(ttlSeconds: number): number {
  return Math.min((ttlSeconds * 1000) / 2, MAX_TIMER_MS);
}

export class RemoteForwarder {
  private control: WebSocket | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Listens no more (retire): the channel is not re-opened, and `idle` resolves once the last leg has ended. */
  private retiring = false;
  private idle: Promise<void> | undefined;
  private markIdle: (() => void) | undefined;
  private readonly backoff = new Backoff();
  private readonly keepAlive: LegKeepAlive;
  private readonly open = new Set<WebSocket>();
  /** Connections to the target, dialing or carried by a relayed leg: stop() ends them too. */
  private readonly targets = new Set<Socket>();
  /** Resolves the first time the control channel is open. */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  accepted = 0;

  constructor(
    readonly forward: RemoteForward,
    private readonly access: RelayAccess,
    private readonly log: Logger,
    private readonly highWaterMark: number,
    private readonly timing: {
      /** The control channel is pinged this often; one silent for two periods is re-opened (a path that died without a word). */
      keepAliveMs: number;
      /** How long the target may take to accept a TCP connection (the relay's handshakes: RelayAccess). */
      connectTimeoutMs: number;
    },
  ) {
    this.ready = new Promise((r) => (this.markReady = r));
    this.keepAlive = new LegKeepAlive(timing.keepAliveMs);
  }

  start(): void {
    this.connectControl();
  }

  private connectControl(): void {
    const log = this.log.child({ entity: this.forward.entity });
    const ws = new WebSocket(this.access.actionUrl(this.forward.entity, 'listen'), this.access.actionOptions(this.forward.entity));
    keepTcpAlive(ws, this.timing.keepAliveMs);
    this.control = ws;
    let why = 'connection closed';
    let heard = true;
    let heartbeat: NodeJS.Timeout | undefined;
    const alive = () => (heard = true);
    let refused = false;
    /** Refused for good (a 401 for credentials that never change): nothing is retried, the bridge ends (RelayAccess.ended). */
    let hopeless = false;
    ws.on('unexpected-response', (_req, res) => {
      refused = true;
      const answer = `${res.statusCode} ${res.statusMessage ?? ''}`.trim();
      why = `relay refused the listener: ${answer}`;
      // Before, a fixed --token that had expired (or that the relay refused otherwise) was tried again for good.
      if (res.statusCode === 401) hopeless = this.access.refusedForGood(this.forward.entity, answer) !== undefined;
      if (res.statusCode !== 403 || this.access.mintsTokens) {
        res.resume();
        ws.terminate();
        return;
      }
      // A 403 with credentials that never change: the end too when the relay says they are what it refuses (a token
      // for another entity, without the Listen right); one that may clear (the most listeners allowed, another
      // relay's 403) is tried again. Before, each was tried again for ever.
      void refusalCode(res, REFUSAL_READ_MS).then((code) => {
        if (code !== undefined && CREDENTIALS_REFUSED_403.has(code)) hopeless = this.access.refusedForGood(this.forward.entity, `${answer}, ${code}`) !== undefined;
        ws.terminate();
      });
    });
    // terminate() above also raises an error ("closed before the connection was established"): the refusal is the reason.
    ws.on('error', (err) => {
      if (!refused) why = err.message;
    });
    ws.on('open', () => {
      this.backoff.connected();
      log.info({ event: 'bridge.listening', target: `${hostBeforePort(this.forward.host)}:${this.forward.port}` });
      this.markReady();
      this.scheduleRenew(ws);
      // A NAT or firewall that drops the path says nothing: without this the
      // bridge would go on believing it listens while the relay has dropped it.
      // A check that runs late (this process was paused) only pings: what came meanwhile is not read yet.
      const clock = new SweepClock(this.timing.keepAliveMs);
      heartbeat = setInterval(() => {
        if (clock.onTime() && !heard) {
          why = `no answer from the relay for ${(2 * this.timing.keepAliveMs) / 1000} s`;
          ws.terminate();
          return;
        }
        heard = false;
        ws.ping();
      }, this.timing.keepAliveMs);
    });
    ws.on('pong', alive);
    ws.on('ping', alive);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      alive();
      if (isBinary) return;
      let message: unknown;
      try {
        message = JSON.parse(data.toString('utf8'));
      } catch {
        return;
      }
      // Anything but an object naming an accept address is ignored (a `null` used to throw here and end the bridge).
      if (typeof message !== 'object' || message === null) return;
      const accept = (message as { accept?: unknown }).accept as AcceptNotice | undefined;
      // Retired, the channel closing: an accept the relay sent before it read the close is not taken. The relay fails
      // that sender 502 ListenerGone once the channel is closed; taken, it was a connection after listening_stopped,
      // not waited for once the legs open then had ended, and reset when the bridge exited.
      if (this.retiring || this.stopped) return;
      if (typeof accept === 'object' && accept !== null && typeof accept.address === 'string') this.accept(accept, log);
    });
    ws.on('close', (code: number, reason: Buffer) => {
      clearInterval(heartbeat);
      if (this.renewTimer) clearTimeout(this.renewTimer);
      if (this.stopped || this.retiring) return;
      const text = reason.length > 0 ? `closed by the relay: ${code} ${reason.toString()}` : code === 1006 ? why : `closed by the relay: ${code}`;
      if (hopeless) return void log.warn({ event: 'bridge.control_lost', why: text });
      const delay = this.backoff.next();
      log.warn({ event: 'bridge.control_lost', why: text, retryInMs: delay });
      this.retryTimer = setTimeout(() => this.connectControl(), delay);
    });
  }

  private scheduleRenew(ws: WebSocket): void {
    if (!this.access.mintsTokens) return;
    this.renewTimer = setTimeout(() => {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(JSON.stringify({ renewToken: { token: this.access.token(this.forward.entity) } }));
      this.scheduleRenew(ws);
    }, renewDelayMs(this.access.tokenTtlSeconds));
    this.renewTimer.unref();
  }

  private accept(notice: AcceptNotice, parentLog: Logger): void {
    const id = ++this.accepted;
    const log = parentLog.child({ connection: id });
    if (!/^wss?:\/\//i.test(notice.address)) {
      log.warn({ event: 'bridge.accept_failed', err: 'the accept address is not a ws:// or wss:// URL' });
      return;
    }
    // Half-open allowed: the target's FIN leaves the other direction open when the sender speaks half-close (pipe.ts).
    const tcp = connect({ host: this.forward.host, port: this.forward.port, timeout: this.timing.connectTimeoutMs, allowHalfOpen: true });
    this.targets.add(tcp);
    tcp.on('close', () => {
      this.targets.delete(tcp);
      this.checkIdle();
    });
    tcp.pause();
    let connected = false;
    tcp.once('timeout', () => {
      if (!connected) tcp.destroy(new Error(`no answer in ${this.timing.connectTimeoutMs / 1000} s`));
    });
    tcp.once('connect', () => {
      connected = true;
      tcp.setTimeout(0);
      if (this.stopped) return tcp.resetAndDestroy();
      tcp.setNoDelay(true);
      let ws: WebSocket;
      try {
        ws = new WebSocket(notice.address, { ...this.access.socketOptions(notice.address), maxPayload: legMaxPayload(this.highWaterMark) });
      } catch (err) {
        log.warn({ event: 'bridge.accept_failed', err: (err as Error).message });
        tcp.resetAndDestroy();
        return;
      }
      this.keepAlive.prepare(ws);
      this.open.add(ws);
      ws.on('close', () => {
        this.open.delete(ws);
        this.checkIdle();
      });
      ws.once('error', (err) => {
        log.warn({ event: 'bridge.accept_failed', err: err.message });
        // The target sees a connection cut, not one opened and ended cleanly with nothing said.
        tcp.resetAndDestroy();
      });
      ws.once('open', () => {
        if (tcp.destroyed) return ws.close(1011, 'target connection lost');
        log.info({ event: 'bridge.accepted' });
        tcp.resume();
        pipeSocketToWebSocket(tcp, ws, this.highWaterMark, (result) => log.info({ event: 'bridge.closed', ...result }), halfCloseFor(notice.address), this.keepAlive);
      });
    });
    tcp.once('error', (err) => {
      if (connected) {
        // Reset after connecting, before the relayed leg opened: the leg closes when it opens (above).
        log.info({ event: 'bridge.target_lost', err: err.message });
        return;
      }
      if (this.stopped) return;
      log.warn({ event: 'bridge.target_unreachable', err: err.message });
      // Reject through the rendezvous address: the sender gets 502 and this text.
      const reject = `${notice.address}&sb-hc-statusCode=502&sb-hc-statusDescription=${encodeURIComponent(`target unreachable: ${err.message}`.slice(0, 120))}`;
      let ws: WebSocket;
      try {
        ws = new WebSocket(reject, this.access.socketOptions(reject));
      } catch {
        return; // An address ws cannot take: the relay's accept timeout answers the sender.
      }
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => res.resume());
    });
  }

  /** Connections to the target, dialing or carried by a leg, and legs still closing. */
  get openConnections(): number {
    return Math.max(this.targets.size, this.open.size);
  }

  /**
   * Listens no more: the control channel is closed (the relay gives this listener no new connection) and not
   * re-opened. Resolves once every connection open then has ended on its own; they go on as before, with their
   * keep-alive. The relay keeps a spliced leg whatever becomes of its listener's channel or token. Before, a fixed
   * token's expiry, or the relay's 401 to it, reset them all.
   */
  retire(): Promise<void> {
    if (!this.retiring) {
      this.retiring = true;
      if (this.retryTimer) clearTimeout(this.retryTimer);
      if (this.renewTimer) clearTimeout(this.renewTimer);
      this.log.info({ event: 'bridge.listening_stopped', entity: this.forward.entity, open: this.openConnections });
      const control = this.control;
      if (control?.readyState === WebSocket.OPEN) control.close(1000, 'listener retired');
      else control?.terminate();
    }
    this.idle ??= new Promise<void>((r) => {
      this.markIdle = r;
      this.checkIdle();
    });
    return this.idle;
  }

  private checkIdle(): void {
    if (this.retiring && this.targets.size === 0 && this.open.size === 0) this.markIdle?.();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.control?.terminate();
    for (const ws of this.open) ws.terminate();
    // Cut mid-stream: each target is reset, and its relayed leg ends 1011 (pipe.ts).
    for (const tcp of this.targets) tcp.resetAndDestroy();
  }
}
