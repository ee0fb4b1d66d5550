// What the relay does with each frame a pub/sub client sends
// (docs/protocols/web-pubsub.md, "Client to relay", "Acks"). Frames are checked against
// schemas/pubsub-client-message.schema.json: a frame that is not a JSON object
// with a string `type` (or is binary and not UTF-8) ends the connection; a known type with
// bad fields, or an unknown type, is answered with a failed ack when it
// carries an ackId. Every ackId gets exactly one ack; a repeated ackId that
// was processed is answered `Duplicate` and not processed again. A protobuf
// client's frame is read into the JSON message it means first
// (handleProtobufFrame). A simple WebSocket client (no Web PubSub subprotocol)
// speaks no protocol: each frame it sends is a `message` user event, one at a
// time, and a non-empty answer goes back to it (handleSimpleFrame), or, in
// sendToGroup mode, a message to its group (publishSimpleFrame).
//
// A frame's `data` travels as its sender wrote it (Azure publishes json data
// "as what it is"): the parse only validates, and what is sent on, to other
// clients and to the event handler, is the data's own text from the frame
// (rawMemberText). Re-encoding the parsed value turned 12345678901234567890
// into 12345678901234567000, 1.10 into 1.1 and 1e400 into null.
import { isUtf8 } from 'node:buffer';
import { BusError } from '../bus/bus.ts';
import { DATA_TYPES } from '../bus/messages.ts';
import { parseJson, rawMemberText } from '../validation/bounded-json.ts';
import { describeErrors, pubsubMessageValidators, validateInvocationId, validatePubSubEnvelope } from '../validation/schemas.ts';
import { ACK_ERRORS, GroupLimitReached, type AckErrorName, type PubSubErrorCode } from './errors.ts';
import { invokeAnsweredFrame, invokeFailedFrame, type DataType } from './downstream.ts';
import { WireError, readUpstream, type UpstreamReading } from './protobuf-protocol.ts';
import type { ClusterHub } from './hub-cluster.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import type { UserEventResult } from './cloud-events.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

/** What the protocol needs from the service around it. */
export interface ClientProtocolContext {
  hub(connection: PubSubConnection): ClusterHub | undefined;
  endConnection(connection: PubSubConnection, code: PubSubErrorCode, reason?: string): void;
  /**
   * A JSON client's `event` to the hub's event handler; `payload` is the
   * body as the client sent it: the data's JSON text (json), the string
   * (text), or base64 (binary).
   */
  sendEvent(connection: PubSubConnection, hub: ClusterHub, event: string, dataType: DataType, payload: string): Promise<UserEventResult>;
  /** A simple client's frame, as a `message` event with this content type. */
  sendMessageEvent(connection: PubSubConnection, hub: ClusterHub, contentType: string, body: Buffer): Promise<UserEventResult>;
  groupsPerConnection: number;
  /** The upstream's reply to an event could not be delivered (a durable hub could not store it). */
  replyLost(connection: PubSubConnection, reason: string): void;
  /** Counts an ack sent, by result: success or the error name. */
  countAck(result: string): void;
  /** A simple client's message event was not accepted (logged; the connection is then ended). */
  eventFailed(connection: PubSubConnection, reason: string): void;
  /** A sendToGroup-mode client's frame was not published (logged; the connection is then ended). */
  groupSendFailed(connection: PubSubConnection, group: string, code: PubSubErrorCode, reason: string): void;
}

interface Upstream {
  type: string;
  ackId?: number;
  group?: string;
  noEcho?: boolean;
  dataType?: DataType;
  data?: unknown;
  event?: string;
  sequenceId?: number;
  invocationId?: string;
}

function ack(ctx: ClientProtocolContext, connection: PubSubConnection, ackId: number | undefined, error?: AckErrorName, detail?: string): void {
  if (ackId === undefined) return;
  ctx.countAck(error ?? 'success');
  connection.sendControl(connection.frames.ack(ackId, error ? { name: error, message: detail ?? ACK_ERRORS[error] } : undefined));
}

/**
 * Acks a request, and the `retries` of it held while it was in progress (PubSubConnection.holdRetry): each gets
 * its error, or, when it succeeded, `Duplicate` (it was processed).
 */
function ackWithRetries(ctx: ClientProtocolContext, connection: PubSubConnection, ackId: number | undefined, retries: number, error?: AckErrorName, detail?: string): void {
  ack(ctx, connection, ackId, error, detail);
  for (let i = 0; i < retries; i++) ack(ctx, connection, ackId, error ?? 'Duplicate', detail);
}

/** Longest ackId that is not one the relay echoes in its BadRequest ack (as written, quotes included). */
const MAX_ECHOED_ACK_ID = 66;

export function handleClientFrame(ctx: ClientProtocolContext, connection: PubSubConnection, isBinary: boolean, data: Buffer): void {
  // Azure takes a message in a binary frame as UTF-8 ("UTF8 encoded binaries for binary message frames"): a client
  // library that sends bytes (ws.send(Buffer)) is served; before, it was closed 1003. Bytes that are not UTF-8: 1007.
  if (isBinary && !isUtf8(data)) return ctx.endConnection(connection, 'BinaryFrame');
  handleClientMessage(ctx, connection, data.toString('utf8'));
}

/**
 * A frame from a client on a protobuf subprotocol (protobuf-protocol.ts): read into the JSON message it means,
 * which goes the JSON way from there. Bytes that are not an UpstreamMessage end the connection (InvalidMessage),
 * as a JSON frame that is not JSON does; a message of no kind the protocol knows is ignored; a json_data that is
 * not JSON is refused BadRequest under its ackId.
 */
export function handleProtobufFrame(ctx: ClientProtocolContext, connection: PubSubConnection, data: Buffer): void {
  let reading: UpstreamReading;
  try {
    reading = readUpstream(data);
  } catch (err) {
    if (err instanceof WireError) return ctx.endConnection(connection, 'InvalidMessage', `The frame is not a protobuf UpstreamMessage: ${err.message}`);
    throw err;
  }
  if (reading.kind === 'none') return;
  if (reading.kind === 'refused') {
    if (reading.ackId === undefined) return;
    ctx.countAck('BadRequest');
    return connection.sendControl(connection.frames.ack(reading.ackId, { name: 'BadRequest', message: reading.detail }));
  }
  handleClientMessage(ctx, connection, reading.text);
}

/** A client's message as JSON text: checked against the schemas, and acted on. */
function handleClientMessage(ctx: ClientProtocolContext, connection: PubSubConnection, text: string): void {
  let message: unknown;
  try {
    // Bounded nesting: parsed values are walked (ajv), and receivers parse the data again (bounded-json.ts).
    message = parseJson(text);
  } catch {
    return ctx.endConnection(connection, 'InvalidMessage');
  }
  if (!validatePubSubEnvelope(message)) return ctx.endConnection(connection, 'InvalidMessage');
  const m = message as Upstream;
  const ackId = Number.isSafeInteger(m.ackId) && (m.ackId as number) >= 0 ? m.ackId : undefined;
  if (ackId === undefined && m.ackId !== undefined) {
    // Past 2^53 - 1 (or negative, or not whole) an ackId cannot be remembered
    // exactly, and one that is not a number is none: the request is refused,
    // and answered with the ackId as written (before, a string, true or null
    // was refused without a word, and a client waiting for its ack hung). One
    // too odd to echo (an object, an array, a long string) ends the connection,
    // as Azure declines a client whose message does not match the protocol.
    if (typeof m.ackId === 'object' && m.ackId !== null) return ctx.endConnection(connection, 'InvalidMessage');
    const written = rawMemberText(text, 'ackId') ?? JSON.stringify(m.ackId);
    if (written.length > MAX_ECHOED_ACK_ID) return ctx.endConnection(connection, 'InvalidMessage');
    ctx.countAck('BadRequest');
    const detail = 'ackId must be an integer from 0 to 2^53 - 1';
    return connection.sendControl(connection.frames.ack(written, { name: 'BadRequest', message: detail }));
  }
  // Azure's .NET client writes dataType as its enum's names ("Json", "Text", "Binary") and Azure takes them: before,
  // every send and event of that SDK was refused BadRequest (and a fire-and-forget one lost without a word).
  if (typeof m.dataType === 'string') m.dataType = canonicalDataType(m.dataType);
  const validate = pubsubMessageValidators.get(m.type);
  if (!validate) return ack(ctx, connection, ackId, 'Unsupported', `unknown message type '${m.type.slice(0, 64)}'`);
  // An invocation is answered by its id (it has no ackId): the SDK would wait for the answer for good.
  const invocationId = m.type === 'invoke' && validateInvocationId(m.invocationId) ? (m.invocationId as string) : undefined;
  if (!validate(m)) {
    if (invocationId !== undefined) {
      // Not under the id of an invocation still unanswered: its own answer is the one its caller waits for.
      if (connection.invocations?.has(invocationId)) return;
      return connection.sendControl(invokeFailedFrame(invocationId, 'BadRequest', describeErrors(validate.errors)));
    }
    return ack(ctx, connection, ackId, 'BadRequest', describeErrors(validate.errors));
  }
  const hub = ctx.hub(connection);
  if (!hub) return;
  switch (m.type) {
    case 'ping':
      return connection.sendControl(connection.frames.pong);
    case 'sequenceAck':
      connection.session?.acknowledge(m.sequenceId as number);
      // A durable hub writes the session's checkpoint as acknowledgements arrive.
      return hub.durable?.sessionChanged(connection);
    case 'cancelInvocation':
      // Its answer, when it comes, is not sent (the client gave up on it); one not at the handler yet is not sent there.
      connection.invocations?.delete(m.invocationId as string);
      return;
    case 'invoke':
      return forwardInvocation(ctx, connection, hub, m, text);
  }
  if (m.type === 'event') {
    if (ackId !== undefined && connection.hasAckId(ackId)) return connection.holdRetry(ackId) ? undefined : ack(ctx, connection, ackId, 'Duplicate');
    return forwardEvent(ctx, connection, hub, m, text, ackId);
  }
  // Past limits.requestsInFlightPerConnection requests wait here, in order (so does any read after them until they
  // are started), and the client is read on until what waits is too much (PubSubConnection.wait).
  if (connection.requestsBacklogged) return connection.wait((connection.requestsWaiting ??= []), text.length, () => startRequest(ctx, connection, m, text, ackId));
  startRequest(ctx, connection, m, text, ackId);
}

/** A joinGroup, leaveGroup or sendToGroup request, checked and started (acked once done). */
function startRequest(ctx: ClientProtocolContext, connection: PubSubConnection, m: Upstream, text: string, ackId: number | undefined): void {
  const hub = ctx.hub(connection);
  if (!hub) return;
  // Asked here, not as the frame was read: a retry read while its first try waited is processed after it.
  if (ackId !== undefined && connection.hasAckId(ackId)) return connection.holdRetry(ackId) ? undefined : ack(ctx, connection, ackId, 'Duplicate');
  const group = m.group as string;
  switch (m.type) {
    case 'joinGroup':
      if (!connection.permissions.allows('joinLeaveGroup', group)) return ack(ctx, connection, ackId, traced(hub, 'pubsub.join', connection, group, 'Forbidden'));
      // A durable hub decides where the stream applies the join (joins and leaves before it, from anywhere, count first).
      if (!hub.durable && !connection.mayJoin(group)) {
        return ack(ctx, connection, ackId, traced(hub, 'pubsub.join', connection, group, 'Forbidden'), groupLimitDetail(ctx));
      }
      // Acknowledged once the bus has this node's interest in the group (stored and applied here, on a durable hub).
      return ackWhenDone(ctx, connection, ackId, traced(hub, 'pubsub.join', connection, group, hub.join(connection, group, storeId(connection, ackId))));
    case 'leaveGroup':
      if (!connection.permissions.allows('joinLeaveGroup', group)) return ack(ctx, connection, ackId, traced(hub, 'pubsub.leave', connection, group, 'Forbidden'));
      return ackWhenDone(ctx, connection, ackId, traced(hub, 'pubsub.leave', connection, group, hub.leave(connection, group, storeId(connection, ackId))));
    case 'sendToGroup': {
      if (!connection.permissions.allows('sendToGroup', group)) return ack(ctx, connection, ackId, traced(hub, 'pubsub.publish', connection, group, 'Forbidden'));
      const message = { from: 'group' as const, group, fromUserId: connection.userId, dataType: m.dataType ?? 'json', dataJson: dataTextOf(text, m) };
      const sent = hub.send({ kind: 'group', name: group }, message, m.noEcho ? new Set([connection.id]) : undefined, storeId(connection, ackId));
      return ackWhenDone(ctx, connection, ackId, traced(hub, 'pubsub.publish', connection, group, sent, () => payloadBytes(message.dataType, m.data, message.dataJson)));
    }
  }
}

/**
 * The frame's `data` as its sender wrote it: one complete JSON value, since
 * the frame parsed. JSON.stringify of the parsed value is the fallback only
 * for a frame without `data`, which the schemas refuse before this.
 */
function dataTextOf(frame: string, m: Upstream): string {
  return rawMemberText(frame, 'data') ?? JSON.stringify(m.data ?? null);
}

/** An `event`'s body for the handler: json data as written, text and binary (base64) as the string they are. */
function eventPayload(frame: string, m: Upstream): string {
  const dataType = m.dataType ?? 'json';
  return dataType === 'json' ? dataTextOf(frame, m) : (m.data as string);
}

/** A data type named in any ASCII case, as the schema and every receiver take it (lower case); anything else as it was, for the schema to refuse. */
function canonicalDataType(given: string): DataType {
  const lower = asciiLowerCase(given);
  return (DATA_TYPES as readonly string[]).includes(lower) ? (lower as DataType) : (given as DataType);
}

/** A message's payload size in bytes, as its receivers get it: UTF-8 text, decoded binary, or the JSON text. */
function payloadBytes(dataType: string, data: unknown, dataJson: string): number {
  if (dataType === 'text' && typeof data === 'string') return Buffer.byteLength(data, 'utf8');
  if ((dataType === 'binary' || dataType === 'protobuf') && typeof data === 'string') return Buffer.byteLength(data, 'base64');
  return Buffer.byteLength(dataJson, 'utf8');
}

/**
 * Traces a client's join, leave or publish with its outcome (the ack's result)
 * when someone watches the live trace; returns the outcome unchanged. The
 * message's data is never traced, only its size.
 */
function traced<T extends Promise<unknown> | AckErrorName>(
  hub: ClusterHub,
  kind: 'pubsub.join' | 'pubsub.leave' | 'pubsub.publish',
  connection: PubSubConnection,
  group: string,
  outcome: T,
  bytes?: () => number,
): T {
  const trace = hub.trace;
  if (!trace.on) return outcome;
  const fields = { hub: hub.name, connectionId: connection.id, userId: connection.userId, group, bytes: bytes?.() };
  if (typeof outcome === 'string') trace.emit(kind, { ...fields, code: outcome });
  else trace.settled(kind, fields, outcome);
  return outcome;
}

function groupLimitDetail(ctx: ClientProtocolContext): string {
  return `a connection may be in at most ${ctx.groupsPerConnection} groups`;
}

/**
 * The id under which a durable hub stores what a request changes: a retry of
 * the same ackId (after a lost ack, or on another edge) is then stored once.
 */
function storeId(connection: PubSubConnection, ackId: number | undefined): string | undefined {
  return ackId === undefined ? undefined : `${connection.id}:${ackId}`;
}

/**
 * Acks a request once it is done: success (`Duplicate` when a durable hub had
 * stored it already), or `InternalServerError` with the reason when it could
 * not be stored, and the ackId forgotten so that a retry is processed again.
 */
function ackWhenDone(ctx: ClientProtocolContext, connection: PubSubConnection, ackId: number | undefined, done: Promise<unknown>): void {
  // Remembered while in flight, so a retry that overtakes the answer is a Duplicate.
  if (ackId !== undefined) connection.rememberAckId(ackId, true);
  // Bounded per connection: past limits.requestsInFlightPerConnection the next ones wait until one is done.
  connection.requestsInFlight++;
  const finished = () => requestDone(connection);
  done.then(
    (result) => {
      finished();
      const retries = ackId === undefined ? 0 : connection.ackIdDone(ackId);
      if (!connection.ended) ackWithRetries(ctx, connection, ackId, retries, result === 'duplicate' ? 'Duplicate' : undefined);
    },
    (err: Error) => {
      finished();
      // Forgotten, a refused join too: the client SDK retries a refusal with the same ackId and takes Duplicate for
      // success. Its retry is stored under the same id, found the same stream sequence, and refused again.
      const retries = ackId === undefined ? 0 : connection.forgetAckId(ackId);
      if (connection.ended) return;
      // The retries held while it was in flight get its outcome too (a retry after this one is processed again).
      if (err instanceof GroupLimitReached) return ackWithRetries(ctx, connection, ackId, retries, 'Forbidden', groupLimitDetail(ctx));
      // A message the bus cannot carry fails however often it is retried: not the server's passing trouble.
      const tooLarge = err instanceof BusError && err.code === 'TooLarge';
      ackWithRetries(ctx, connection, ackId, retries, tooLarge ? 'BadRequest' : 'InternalServerError', err.message);
    },
  );
}

/** A request in flight is done: those waiting start as far as limits.requestsInFlightPerConnection allows, and the client is read again. */
function requestDone(connection: PubSubConnection): void {
  connection.requestsInFlight--;
  if (!requestsGoOn(connection)) return;
  const waiting = connection.requestsWaiting;
  while (waiting && waiting.length > 0 && !connection.requestsFull && requestsGoOn(connection)) waiting.shift()!();
  if (!connection.ended) connection.readAgainUnlessBusy();
}

/**
 * Whether the connection's requests still waiting are started: while it is open; a sendToGroup-mode client's
 * frames also once its client left (a device that sends its readings and closes: before, those still waiting
 * behind a durable hub's store when its close was read were dropped), not once the relay ended it.
 */
function requestsGoOn(connection: PubSubConnection): boolean {
  return !connection.ended || (connection.sendToGroup !== undefined && !connection.endedByRelay);
}

/**
 * `event` messages of one connection at the event handler at once: one. User
 * events are blocking on Azure (the service waits for the answer before it
 * takes the connection's next message), so the state an answer sets
 * (ce-connectionState) reaches the next event, and the handler sees them in the
 * order sent. With one in flight the next ones wait their turn in order, and the
 * client is read on (its acks and pings) until too much waits (PubSubConnection.wait).
 * Requests (joins, leaves, group sends) do not wait behind events. Before, 16
 * events went at once: a counter kept in the state stayed at 1, and order was lost.
 */
export const EVENTS_IN_FLIGHT = 1;

/** `text` is the frame as read: the event's payload is taken from it, and it weighs by it while it waits. */
function forwardEvent(ctx: ClientProtocolContext, connection: PubSubConnection, hub: ClusterHub, m: Upstream, text: string, ackId: number | undefined): void {
  // Remembered while in flight, so a retry that overtakes the answer is a Duplicate.
  if (ackId !== undefined) connection.rememberAckId(ackId, true);
  toEventHandler(ctx, connection, hub, m, text, (result) => {
    if (!result.ok) {
      // The retries held while it was at the handler get its outcome too.
      return ackWithRetries(ctx, connection, ackId, ackId === undefined ? 0 : connection.forgetAckId(ackId), result.code, result.detail);
    }
    const retries = ackId === undefined ? 0 : connection.ackIdDone(ackId);
    if (result.reply) {
      hub.send({ kind: 'connection', name: connection.id }, result.reply).catch((err: Error) => ctx.replyLost(connection, err.message));
    }
    ackWithRetries(ctx, connection, ackId, retries);
  });
}

/**
 * An `invoke` (the SDK's invokeEvent): the same user event as an `event`
 * message, in the same turn (EVENTS_IN_FLIGHT), whose outcome is the answer:
 * success with the handler's reply as `data` of its type (none for an empty
 * answer), or failure named as an event's ack would be (NoUpstream,
 * UpstreamFailed). An invocationId repeated while its invocation is not
 * answered is that invocation (it is answered once); a cancelled one is not
 * answered, and not sent to the handler if it had not been yet.
 */
function forwardInvocation(ctx: ClientProtocolContext, connection: PubSubConnection, hub: ClusterHub, m: Upstream, text: string): void {
  const id = m.invocationId as string;
  const invocations = (connection.invocations ??= new Map());
  if (invocations.has(id)) return;
  const token = {};
  invocations.set(id, token);
  const current = () => invocations.get(id) === token;
  toEventHandler(
    ctx,
    connection,
    hub,
    m,
    text,
    (result) => {
      if (!current()) return;
      invocations.delete(id);
      connection.sendControl(result.ok ? invokeAnsweredFrame(id, result.reply) : invokeFailedFrame(id, result.code, result.detail));
    },
    current,
  );
}

/**
 * Sends the user event of an `event` or `invoke` message to the hub's event
 * handler in its turn: one at a time per connection, in the order read
 * (EVENTS_IN_FLIGHT); `answered` gets the outcome unless the connection ended
 * meanwhile. `wanted`, asked when its turn comes, may drop it unsent.
 */
function toEventHandler(
  ctx: ClientProtocolContext,
  connection: PubSubConnection,
  hub: ClusterHub,
  m: Upstream,
  text: string,
  answered: (result: UserEventResult) => void,
  wanted?: () => boolean,
): void {
  // An invocation without data is an event with an empty body (application/octet-stream, as empty binary data).
  const [dataType, payload] = m.data === undefined ? (['binary', ''] as const) : [m.dataType ?? 'json', eventPayload(text, m)];
  const send = () => {
    if (wanted && !wanted()) return;
    connection.eventsInFlight++;
    void ctx.sendEvent(connection, hub, m.event as string, dataType, payload).then((result) => {
      connection.eventsInFlight--;
      takeNextEvents(connection);
      if (!connection.ended) answered(result);
    });
  };
  // Behind those read before it, too.
  if (!eventTurnFree(connection) || connection.eventsWaiting?.length) return connection.wait((connection.eventsWaiting ??= []), text.length, send);
  send();
}

/** Whether another event or invocation may go to the handler now: fewer than EVENTS_IN_FLIGHT there, and the client's answers not backlogged. */
function eventTurnFree(connection: PubSubConnection): boolean {
  return connection.eventsInFlight < EVENTS_IN_FLIGHT && !connection.answersBacklogged;
}

/**
 * Starts what waits for the event handler, as far as EVENTS_IN_FLIGHT allows
 * (one dropped unsent lets the next go), and reads the client again. Nothing
 * starts while limits.outboundBufferBytes are queued to the client: an
 * invocation's answer is written to it whatever its size, and a client that
 * sent 200 invocations and read nothing had 46 MiB of 256 KiB answers queued
 * (an event's reply is bounded where it is delivered: SlowConsumer, or the
 * reliable session's buffer). The socket's drain calls this again.
 */
export function takeNextEvents(connection: PubSubConnection): void {
  while (!connection.ended && eventTurnFree(connection)) {
    const next = connection.eventsWaiting?.shift();
    if (!next) break;
    next();
  }
  if (!connection.ended) connection.readAgainUnlessBusy();
}

/**
 * A frame from a simple WebSocket client: a `message` user event (text or
 * binary content), sent one at a time in the order the frames came; the
 * socket is not read while any wait. A non-empty answer goes back to the
 * client as a raw frame. An event the handler did not accept (not 2xx, or no
 * answer) ends the connection, as Azure drops it ("The connection would be
 * dropped if the message response status code isn't success"): the protocol
 * has no other way to tell the client, and the frames after it are not sent.
 * A hub with no handler for `message` drops the frames and keeps the client.
 */
export function handleSimpleFrame(ctx: ClientProtocolContext, connection: PubSubConnection, isBinary: boolean, data: Buffer): void {
  if (connection.sendToGroup !== undefined) return publishSimpleFrame(ctx, connection, connection.sendToGroup, isBinary, data);
  const pending = (connection.pendingFrames ??= []);
  pending.push({ isBinary, data });
  if (pending.length > 1) return;
  connection.socket?.hold();
  void sendSimpleFrames(ctx, connection, pending);
}

async function sendSimpleFrames(ctx: ClientProtocolContext, connection: PubSubConnection, pending: { isBinary: boolean; data: Buffer }[]): Promise<void> {
  while (pending.length > 0 && !connection.ended) {
    const hub = ctx.hub(connection);
    if (!hub) break;
    const { isBinary, data } = pending[0];
    const result = await ctx.sendMessageEvent(connection, hub, isBinary ? 'application/octet-stream' : 'text/plain; charset=utf-8', data);
    if (result.ok && result.reply && !connection.ended) {
      await hub.send({ kind: 'connection', name: connection.id }, result.reply).catch((err: Error) => ctx.replyLost(connection, err.message));
    } else if (!result.ok) {
      // No handler takes `message`: the frame is dropped, and that is logged once per connection (before, a warning
      // line for every frame, as fast as the client could send them: one client flooded the log).
      if (result.code !== 'NoUpstream' || !connection.unroutedLogged) ctx.eventFailed(connection, result.detail);
      if (result.code === 'NoUpstream') connection.unroutedLogged = true;
      if (result.code === 'UpstreamFailed') ctx.endConnection(connection, 'MessageEventFailed');
    }
    pending.shift();
  }
  pending.length = 0;
  if (!connection.ended) connection.readAgainUnlessBusy();
}

/**
 * A frame from a simple client in sendToGroup mode (webpubsub_mode=sendToGroup&group=g, simple-client-mode.ts):
 * published to its group as a JSON client's sendToGroup without an ackId is, a text frame as text data and a binary
 * frame as binary data, from the client's user, echoed to the client when it is a member. Frames go in the order
 * sent, limits.requestsInFlightPerConnection at once, the others waiting their turn as requests do (and the client
 * unread while they weigh limits.pubsubMessageBytes). The mode has no acks: a frame the connection may not send
 * (it needs webpubsub.sendToGroup or webpubsub.sendToGroup.<group>, asked per frame, as a grant or a revocation
 * through REST changes it), or one the bus or the event log did not take, ends the connection with a close code
 * that says which. No frame after a forbidden one is published; after a failed one, the frames already on their
 * way with it (up to limits.requestsInFlightPerConnection: a durable hub's store answers each a moment later) may
 * still be, the others not. Before, the mode was not read: every frame went to the hub's
 * `message` event handler, or nowhere.
 */
function publishSimpleFrame(ctx: ClientProtocolContext, connection: PubSubConnection, group: string, isBinary: boolean, data: Buffer): void {
  const publish = () => publishToGroup(ctx, connection, group, isBinary, data);
  if (connection.requestsBacklogged) return connection.wait((connection.requestsWaiting ??= []), data.length, publish);
  publish();
}

function publishToGroup(ctx: ClientProtocolContext, connection: PubSubConnection, group: string, isBinary: boolean, data: Buffer): void {
  const hub = ctx.hub(connection);
  if (!hub || !requestsGoOn(connection)) return;
  if (!connection.permissions.allows('sendToGroup', group)) {
    traced(hub, 'pubsub.publish', connection, group, 'Forbidden');
    ctx.groupSendFailed(connection, group, 'GroupSendForbidden', 'the connection lacks webpubsub.sendToGroup for the group');
    return ctx.endConnection(connection, 'GroupSendForbidden');
  }
  const dataType: DataType = isBinary ? 'binary' : 'text';
  const dataJson = JSON.stringify(isBinary ? data.toString('base64') : data.toString('utf8'));
  const sent = hub.send({ kind: 'group', name: group }, { from: 'group', group, fromUserId: connection.userId, dataType, dataJson });
  connection.requestsInFlight++;
  const finished = () => requestDone(connection);
  traced(hub, 'pubsub.publish', connection, group, sent, () => data.length).then(finished, (err: Error) => {
    // Ended first, so the frames waiting behind this one are not published after it (those already sent may be);
    // also when its client had left already (endConnection then only stops them).
    const code = err instanceof BusError && err.code === 'TooLarge' ? 'GroupSendTooLarge' : 'GroupSendFailed';
    if (!connection.endedByRelay) {
      ctx.groupSendFailed(connection, group, code, err.message);
      ctx.endConnection(connection, code);
    }
    finished();
  });
}
