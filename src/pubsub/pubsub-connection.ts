// One pub/sub client connection: who it is (user, permissions, groups), the
// socket it is currently attached to, and, for the reliable subprotocols, the
// session that outlives a dropped socket. Delivery enforces the outbound cap:
// a plain connection that has limits.outboundBufferBytes queued when another
// message comes is a slow consumer and is closed; a reliable one stops being
// written and catches up from its session buffer on drain, and is closed when
// that buffer is full (on a durable hub it falls behind instead, and reads on
// from the hub's stream: session-catch-up.ts).
import type { ConnectionPermissions } from './permissions.ts';
import { PUBSUB_ERRORS, type PubSubErrorCode } from './errors.ts';
import { PONG_FRAME, ackFrame, connectedFrame, disconnectedFrame, sequencedParts, type SharedMessage } from './downstream.ts';
import {
  PROTOBUF_PROTOCOL,
  PROTOBUF_RELIABLE_PROTOCOL,
  protobufAckFrame,
  protobufConnectedFrame,
  protobufDataFrame,
  protobufDisconnectedFrame,
  protobufNumberedFrame,
  PROTOBUF_PONG_FRAME,
} from './protobuf-protocol.ts';
import { hasExpired, type LoggedMessage } from './message-log.ts';
import { ReliableSession } from './reliable-session.ts';
import { LiveSessionLimits } from './live-limits.ts';
import type { MessageSocket } from '../websocket/message-socket.ts';

/** Retries of one ackId in progress held for its outcome; past it, Duplicate at once (a client repeating itself). */
const RETRIES_HELD_PER_ACK_ID = 16;

export const PLAIN_PROTOCOL = 'json.webpubsub.azure.v1';
export const RELIABLE_PROTOCOL = 'json.reliable.webpubsub.azure.v1';
export const SUPPORTED_PROTOCOLS = [RELIABLE_PROTOCOL, PLAIN_PROTOCOL, PROTOBUF_RELIABLE_PROTOCOL, PROTOBUF_PROTOCOL] as const;

/** True for a Web PubSub subprotocol (JSON or protobuf); anything else (none included) makes a simple WebSocket client. */
export function isWebPubSubProtocol(protocol: string): boolean {
  return (SUPPORTED_PROTOCOLS as readonly string[]).includes(protocol);
}

/** How a client's frames are written: a simple client's raw data, or a subprotocol's JSON or protobuf messages. */
export type ClientWire = 'simple' | 'json' | 'protobuf';

export function wireOf(protocol: string): ClientWire {
  if (protocol === PROTOBUF_PROTOCOL || protocol === PROTOBUF_RELIABLE_PROTOCOL) return 'protobuf';
  return isWebPubSubProtocol(protocol) ? 'json' : 'simple';
}

/** The control messages of a subprotocol's clients: acks, the system messages connected and disconnected, and the answer to a ping. */
export interface ControlFrames {
  /** `ackId` a number, or the digits of one the client wrote past 2^53 - 1. */
  ack(ackId: number | string, error?: { name: string; message: string }): Buffer;
  connected(connectionId: string, userId: string | null, reconnectionToken?: string): Buffer;
  disconnected(message: string): Buffer;
  readonly pong: Buffer;
}

const JSON_FRAMES: ControlFrames = { ack: ackFrame, connected: connectedFrame, disconnected: disconnectedFrame, pong: PONG_FRAME };
const PROTOBUF_FRAMES: ControlFrames = { ack: protobufAckFrame, connected: protobufConnectedFrame, disconnected: protobufDisconnectedFrame, pong: PROTOBUF_PONG_FRAME };

/** The control frames of clients of `wire` (a simple client gets none). */
export function controlFramesOf(wire: ClientWire): ControlFrames {
  return wire === 'protobuf' ? PROTOBUF_FRAMES : JSON_FRAMES;
}

/** An event for a session being taken from another node, kept until the hand-over completes. */
export interface TakenEvent {
  body: Buffer;
  mid: string;
  /** A REST send's messageTtlSeconds as a time (ms since epoch). */
  expiresAt?: number;
}

export interface ConnectionLimits {
  outboundBufferBytes: number;
  sessionBufferMessages: number;
  sessionBufferBytes: number;
  ackIdsPerConnection: number;
  groupsPerConnection: number;
  requestsInFlightPerConnection: number;
  /** Also what the frames read and waiting their turn may weigh before the client is no longer read (PubSubConnection.wait). */
  pubsubMessageBytes: number;
}

/** What a frame waiting its turn weighs besides its text: the closure and the message object that wait with it. */
export const WAITING_FRAME_OVERHEAD = 512;
/**
 * A waiting frame's text counts this many times: the text itself and what parsing it made, which waits too (a JSON
 * `data` of many small members takes a few times its text on the heap).
 */
export const WAITING_TEXT_WEIGHT = 3;

export class PubSubConnection {
  readonly groups = new Set<string>();
  readonly session: ReliableSession | undefined;
  socket: MessageSocket | undefined;
  private readonly recentAckIds = new Set<number>();
  /** Remembered ackIds whose request is still being processed: another edge taking the session must process a retry. */
  private readonly ackIdsInProgress = new Set<number>();
  /** Retries of an ackId in progress, answered with its outcome once it has one (holdRetry). */
  private readonly retriesHeld = new Map<number, number>();
  ended = false;
  /**
   * The relay ended it (ConnectionLifecycle.end: a frame not published, a REST close, a slow consumer, the drain), or
   * wanted to once its client had left; not set when it ended by its client's leaving. A sendToGroup-mode client's
   * frames read and still waiting their turn are published after it left (it has no acks: they were sent), not after
   * the relay ended it.
   */
  endedByRelay = false;
  /** Aborted when the connection ends here (markEnded): a user event or invocation under way at a handler is cut. */
  private endedHere: AbortController | undefined;
  /**
   * True while admitted but not told `connected` yet (core NATS: its subscriptions on their way to the server): an
   * end meanwhile fires no `disconnected` event (there was no `connected` one) unless a connect event said yes
   * (connectEventSaidYes: Azure sends `disconnected` after every 2xx `connect`), and the close it wanted waits for
   * the socket to be attached (`closeWanted`).
   */
  awaitingConnected = false;
  /** A connect event answered 2xx for it: its end is told to the handler (`disconnected`) even before `connected`. */
  connectEventSaidYes = false;
  closeWanted: { code: PubSubErrorCode; reason?: string } | undefined;
  /**
   * Set while this session is being handed between nodes: on the node giving
   * it up, while it is held there (deliveries still buffer); on the node
   * taking it, the events that arrive before the hand-over completes.
   */
  handover: { taking?: TakenEvent[]; givingTimer?: NodeJS.Timeout; givingTo?: string } | undefined;
  /** A simple WebSocket client (no Web PubSub subprotocol): raw frames both ways, each frame a `message` event. */
  readonly simple: boolean;
  /** How its frames are written (wireOf its protocol). */
  readonly wire: ClientWire;
  /** Its acks and system messages, in its subprotocol's encoding. */
  readonly frames: ControlFrames;
  /** ce-connectionState as an event handler last set it (cloud-events.ts). */
  states: string | undefined;
  /** connected/disconnected events still to deliver to the event handler, in order. */
  systemEvents: Promise<void> | undefined;
  /** A simple client's frames waiting for the event handler, oldest first; reading waits while any do. */
  pendingFrames: { isBinary: boolean; data: Buffer }[] | undefined;
  /** A simple client's frame found no handler for `message` and was logged dropped: its later ones are not. */
  unroutedLogged = false;
  /** A simple client in sendToGroup mode (simple-client-mode.ts): the group each of its frames is published to. */
  sendToGroup: string | undefined = undefined;
  /** `event` messages sent to the event handler and not answered yet (client-protocol.ts bounds them). */
  eventsInFlight = 0;
  /** `event` messages read while that many were in flight, oldest first: sent as answers come. */
  eventsWaiting: (() => void)[] | undefined;
  /**
   * `invoke` messages not answered yet, by invocationId: each its own token, so the answer of one cancelled
   * (cancelInvocation) is not taken for a later invocation that reuses its id.
   */
  invocations: Map<string, object> | undefined;
  /** joinGroup, leaveGroup and sendToGroup requests not done yet (waiting for the bus or the store). */
  requestsInFlight = 0;
  /** Such requests read while requestsFull, oldest first: started as others finish. */
  requestsWaiting: (() => void)[] | undefined;
  /** What the frames in eventsWaiting and requestsWaiting weigh: WAITING_TEXT_WEIGHT times their text and WAITING_FRAME_OVERHEAD each. */
  private waitingWeight = 0;

  constructor(
    readonly id: string,
    readonly hub: string,
    readonly userId: string | null,
    readonly permissions: ConnectionPermissions,
    readonly protocol: string,
    private readonly limits: ConnectionLimits,
    reconnectionToken?: string,
  ) {
    this.wire = wireOf(protocol);
    this.simple = this.wire === 'simple';
    this.frames = controlFramesOf(this.wire);
    if (protocol === RELIABLE_PROTOCOL || protocol === PROTOBUF_RELIABLE_PROTOCOL) {
      this.session = new ReliableSession(new LiveSessionLimits(limits), reconnectionToken);
    }
  }

  /** True while limits.requestsInFlightPerConnection requests are not done: the next one waits (client-protocol.ts). */
  get requestsFull(): boolean {
    return this.requestsInFlight >= this.limits.requestsInFlightPerConnection;
  }

  /** True while a new request would wait: as many in flight as allowed, or others read before it still waiting. */
  get requestsBacklogged(): boolean {
    return this.requestsFull || (this.requestsWaiting?.length ?? 0) > 0;
  }

  /**
   * Puts a frame read from the client (`bytes` of text) at the end of `queue`
   * (eventsWaiting or requestsWaiting) to wait its turn. The client is read on
   * meanwhile, so its sequenceAcks and pings are taken at once (before, one
   * event waiting behind another at a slow handler stopped the reading: a
   * reliable client's acks went unread and its session closed
   * SessionBufferFull), until what waits weighs limits.pubsubMessageBytes:
   * then it is not read until some of it went, and a client sending without
   * waiting for its acks keeps the rest in its own buffers (TCP).
   */
  wait(queue: (() => void)[], bytes: number, run: () => void): void {
    const weight = WAITING_TEXT_WEIGHT * bytes + WAITING_FRAME_OVERHEAD;
    this.waitingWeight += weight;
    queue.push(() => {
      this.waitingWeight -= weight;
      run();
    });
    if (this.waitingFull) this.socket?.hold();
  }

  /** What waits its turn weighs limits.pubsubMessageBytes or more: the client is not read. */
  get waitingFull(): boolean {
    return this.waitingWeight >= this.limits.pubsubMessageBytes;
  }

  /**
   * Work of the client's is under way at the event handler or on the bus (each bounded by its own timeout): a hold
   * for it is the relay's doing. A hold with none under way waits on the client itself (its answers unread).
   */
  get workUnderWay(): boolean {
    return this.eventsInFlight > 0 || this.requestsInFlight > 0 || this.framesPending;
  }

  /** A simple client's frames wait for the event handler. */
  private get framesPending(): boolean {
    return (this.pendingFrames?.length ?? 0) > 0;
  }

  /** Aborts when the connection ends here; made when first asked for (an event sent), aborted at once if it ended. */
  get gone(): AbortSignal {
    this.endedHere ??= new AbortController();
    if (this.ended) this.endedHere.abort();
    return this.endedHere.signal;
  }

  /** The connection ends here (for good, or its session went to another edge): what is under way for it is cut. */
  markEnded(): void {
    this.ended = true;
    this.endedHere?.abort();
  }

  /** Reads the client again unless too much of its work waits, or a simple client's frames wait for the handler. */
  readAgainUnlessBusy(): void {
    if (this.waitingFull || this.framesPending) return;
    this.socket?.release();
  }

  /**
   * limits.outboundBufferBytes or more queued to the client: its next event or invocation waits (their answers
   * go to it), and the socket's drain starts it (client-endpoint.ts onDrain, takeNextEvents).
   */
  get answersBacklogged(): boolean {
    return this.socket?.isFull(this.limits.outboundBufferBytes) ?? false;
  }

  /** The subprotocol the client uses, if any (a simple client may have none). */
  get subprotocol(): string | undefined {
    return this.protocol === '' ? undefined : this.protocol;
  }

  /**
   * The ackIds whose request was processed, oldest first, for a hand-over:
   * not those still in progress (an event waiting on its handler or queued),
   * whose retry on the next edge must be processed, not answered Duplicate.
   */
  answeredAckIds(): number[] {
    const out: number[] = [];
    for (const id of this.recentAckIds) if (!this.ackIdsInProgress.has(id)) out.push(id);
    return out;
  }

  /** True when a request with this ackId was already processed (answer Duplicate). */
  hasAckId(ackId: number): boolean {
    return this.recentAckIds.has(ackId);
  }

  /** Whether the connection may join `group` under limits.groupsPerConnection (one it is in always may). */
  mayJoin(group: string): boolean {
    return this.groups.has(group) || this.groups.size < this.limits.groupsPerConnection;
  }

  /**
   * Records an ackId (`inProgress`: its request has arrived and is being
   * processed; ackIdDone when it is); the oldest is forgotten past
   * limits.ackIdsPerConnection.
   */
  rememberAckId(ackId: number, inProgress = false): void {
    this.recentAckIds.add(ackId);
    if (inProgress) this.ackIdsInProgress.add(ackId);
    if (this.recentAckIds.size > this.limits.ackIdsPerConnection) {
      const oldest = this.recentAckIds.values().next().value as number;
      this.recentAckIds.delete(oldest);
      this.ackIdsInProgress.delete(oldest);
    }
  }

  /**
   * Holds a retry of an ackId whose request is still in progress, to be answered with that request's outcome
   * (ackIdDone or forgetAckId say how many): answered `Duplicate` at once, which the client SDK takes for success,
   * it read as done a request that could still fail. False when the ackId is not in progress, or past
   * RETRIES_HELD_PER_ACK_ID of them (answer Duplicate).
   */
  holdRetry(ackId: number): boolean {
    if (!this.ackIdsInProgress.has(ackId)) return false;
    const held = this.retriesHeld.get(ackId) ?? 0;
    if (held >= RETRIES_HELD_PER_ACK_ID) return false;
    this.retriesHeld.set(ackId, held + 1);
    return true;
  }

  /** The request of a remembered ackId was processed; the retries held for it. */
  ackIdDone(ackId: number): number {
    this.ackIdsInProgress.delete(ackId);
    return this.takeRetries(ackId);
  }

  /** Forgets an ackId whose request failed, so a retry is processed again; the retries held for it. */
  forgetAckId(ackId: number): number {
    this.recentAckIds.delete(ackId);
    this.ackIdsInProgress.delete(ackId);
    return this.takeRetries(ackId);
  }

  private takeRetries(ackId: number): number {
    const held = this.retriesHeld.get(ackId) ?? 0;
    if (held > 0) this.retriesHeld.delete(ackId);
    return held;
  }

  /** Sends a control frame (ack, pong, system): never sequenced, never buffered past the socket. */
  sendControl(frame: Buffer): void {
    this.socket?.writeFrame(frame);
  }

  /** Delivers a data message; returns why the connection must end, if it must. */
  deliver(message: SharedMessage): 'SlowConsumer' | 'SessionBufferFull' | undefined {
    if (this.ended) return undefined;
    const taking = this.handover?.taking;
    if (taking) {
      if (taking.length >= this.limits.sessionBufferMessages) return 'SessionBufferFull';
      taking.push({ body: message.body, mid: message.mid, expiresAt: message.expiresAt });
      return undefined;
    }
    const session = this.session;
    // Past a REST send's messageTtlSeconds (an event read late from a stream): sent to nobody, numbered all the same.
    const expired = hasExpired(message);
    if (!session) {
      const socket = this.socket;
      if (!socket || expired) return undefined;
      // Slow: it has not read what it already has. A message is taken whatever
      // its size (one may pass the cap: pubsubMessageBytes can be larger, and
      // the relay's envelope adds to what a client sent); counting it in made
      // one message of the largest size a client may send close every plain
      // member of its group. A queue holds at most the cap plus one message.
      if (socket.bufferedBytes >= this.limits.outboundBufferBytes) return 'SlowConsumer';
      socket.writeFrame(this.wire === 'json' ? message.plainFrame() : this.simple ? message.rawFrame() : protobufDataFrame(message));
      return undefined;
    }
    // Behind the live flow (a durable hub's session whose buffer was full): it reads this event later (session-catch-up.ts).
    if (session.behindAt !== undefined) return undefined;
    const sequenceId = session.push(message);
    if (sequenceId === undefined) {
      // On a durable hub the stream keeps what does not fit: the session falls behind, and reads on from the stream
      // as its client acknowledges (session-catch-up.ts). Before, it was closed (1008 SessionBufferFull), and its
      // client started a new session without the rest: an edge catching up after a stalled read handed on more
      // than the buffer at once and ended every reliable session there (a chaos soak).
      if (message.position > 0 && session.checkpoint) {
        session.behindAt = message.position - 1;
        message.leftBehind = true;
        return undefined;
      }
      return 'SessionBufferFull';
    }
    const socket = this.socket;
    if (socket && session.writtenUpTo === sequenceId - 1 && (expired || !socket.isFull(this.limits.outboundBufferBytes))) {
      if (!expired) this.writeNumbered(socket, message, sequenceId);
      else session.noteExpiredUnsent(sequenceId);
      session.writtenUpTo = sequenceId;
    }
    return undefined;
  }

  /**
   * Writes buffered messages the socket has not had yet, while it takes them;
   * those whose time to live has passed are skipped (and let go once nothing
   * older is held). Returns how many held messages were not sent for their
   * time to live since the last flush (each once: skipped here, let go
   * unsent, or made room for another).
   */
  flush(): number {
    const session = this.session;
    const socket = this.socket;
    if (!session || !socket || this.ended) return 0;
    const now = Date.now();
    session.dropExpired(now);
    const last = session.lastSequenceId;
    for (let id = session.writtenUpTo + 1; id <= last; id++) {
      if (socket.isFull(this.limits.outboundBufferBytes)) break;
      const message = session.messageAt(id);
      if (!message) break;
      // A client takes ids with gaps (it acknowledges the highest it has): the skipped one is acknowledged with the next.
      if (!hasExpired(message, now)) this.writeNumbered(socket, message, id);
      else session.noteExpiredUnsent(id);
      session.writtenUpTo = id;
    }
    return session.takeExpiredUnsent();
  }

  /** Writes a reliable session's message with its sequence id, as its subprotocol has it. */
  private writeNumbered(socket: MessageSocket, message: LoggedMessage, sequenceId: number): void {
    if (this.wire === 'protobuf') return socket.writeFrame(protobufNumberedFrame(message, sequenceId));
    // Built by the message's first reliable recipient: the call is left to it, so the JIT does not inline
    // sequencedParts into every delivery.
    const { head, tail } = message.sequenced ?? sequencedParts(message);
    socket.writeNumberedText(head, sequenceId, tail);
  }

  /**
   * Attaches a (new) socket; a reliable session re-sends everything
   * unacknowledged (from its first held id: with nothing held, the next event
   * is the first the socket gets; before, a session whose client had
   * acknowledged everything was never written again).
   */
  attach(socket: MessageSocket): void {
    this.socket = socket;
    if (this.session) {
      this.session.detachedAt = undefined;
      this.session.writtenUpTo = this.session.firstSequenceId - 1;
    }
  }

  detach(now: number): void {
    this.socket = undefined;
    if (this.session) this.session.detachedAt = now;
  }

  /** Ends the socket with the code's close code, after a `disconnected` system message (not to simple clients: they get raw data only). */
  closeSocket(code: PubSubErrorCode, reason?: string): void {
    const socket = this.socket;
    if (!socket) {
      if (this.awaitingConnected) this.closeWanted ??= { code, reason };
      return;
    }
    closeClientSocket(socket, this.wire, code, reason);
  }
}

/**
 * Closes a client's socket for `code`: a `disconnected` system message (not to a simple client: it gets raw data
 * only), then the code's close code with the code as reason, the close handshake bounded by timeouts.closeHandshakeMs
 * (message-socket.ts). Also for a socket its connection no longer has (a session recovered on another one).
 */
export function closeClientSocket(socket: MessageSocket, wire: ClientWire, code: PubSubErrorCode, reason?: string): void {
  const spec = PUBSUB_ERRORS[code];
  if (wire !== 'simple') socket.writeFrame(controlFramesOf(wire).disconnected(reason ?? spec.message));
  socket.close('closeCode' in spec ? spec.closeCode : 1000, code);
}
