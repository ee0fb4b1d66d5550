// Messages the relay sends to pub/sub clients (docs/protocols/web-pubsub.md, "Relay to client"),
// encoded once per event for every recipient on this node. A data message is
// kept as its JSON body without the opening brace; a plain client gets
// `{` + body in one shared frame, a reliable client gets `{` + body with a
// `"sequenceId":N` member last (sequencedParts), so the only per-recipient
// work is the sequence number the protocol forces.
import { DATA_TYPES, type DataMessageHead, type DataType, type PsSend } from '../bus/messages.ts';
import { ownBytes, owned } from '../collections/own-bytes.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { OP_BINARY, OP_TEXT, encodeFrame, encodeFrameHeader } from '../websocket/frames.ts';
import { encodeTextFrame } from '../websocket/message-socket.ts';
import type { LoggedMessage, ProtobufParts, SequencedParts } from './message-log.ts';

export type { DataType };

/** A data message to clients: the head that crosses the bus, and its data already as JSON text. */
export interface DataMessage extends DataMessageHead {
  /** The `data` value already as JSON text (a JSON value, a JSON string, or base64 in a JSON string). */
  dataJson: string;
}

const OPEN_BRACE = Buffer.from('{');

/** One event, encoded once for every local recipient. */
export class SharedMessage {
  /** The message's JSON without its opening `{` (copied out of the memory it shares once a session holds it). */
  body: Buffer;
  /** A reliable session holds it (the message log has it): what it builds from now on is made of its own bytes. */
  private kept = false;
  private frame: Buffer | undefined;
  private raw: Buffer | undefined;
  private readonly dataType: DataType;
  /** The `data` value as JSON text, for a simple client's frame; let go with the live frames (dropLiveFrames). */
  private dataJson: string | undefined;
  /** Where that text starts in `body` (it ends before the closing brace): a simple client's frame is made from there once it is let go. */
  private readonly dataStart: number;
  /** Where the edge's message log holds it for reliable sessions (message-log.ts). */
  logIndex: number | undefined = undefined;
  /** A durable hub's session fell behind the live flow at it (its buffer full): the hub keeps its recent messages. */
  leftBehind = false;
  /** Its sequenced copies' shared parts, once a reliable recipient got it (sequencedParts). */
  sequenced: SequencedParts | undefined = undefined;
  /** Its DataMessage for protobuf clients, once one got it (protobuf-protocol.ts). */
  protobuf: ProtobufParts | undefined = undefined;
  /** Past this time (ms since epoch) it goes to nobody who does not have it yet: a REST send's messageTtlSeconds. */
  readonly expiresAt: number | undefined;

  /**
   * `mid` names the event cluster-wide (origin node and counter), so a
   * session handed between nodes is not given it twice; `position` is its
   * place in the hub's JetStream stream (0 elsewhere); `sequence`, when the
   * hub keeps history, is the history sequence the message carries (clients
   * that do not know the field ignore it: the SDK passes it through).
   */
  constructor(
    message: DataMessage,
    readonly mid: string,
    readonly position = 0,
    sequence?: number,
  ) {
    let text = `"type":"message","from":"${message.from}"`;
    if (message.group !== undefined) text += `,"group":${JSON.stringify(message.group)}`;
    if (sequence !== undefined) text += `,"sequence":${sequence}`;
    if (message.fromUserId !== undefined) text += `,"fromUserId":${JSON.stringify(message.fromUserId)}`;
    text += `,"dataType":"${message.dataType}","data":`;
    // (The members before the data are a few dozen bytes: counting them costs little, unlike counting the data.)
    this.dataStart = Buffer.byteLength(text, 'utf8');
    this.body = Buffer.from(`${text}${message.dataJson}}`, 'utf8');
    this.dataType = message.dataType;
    this.dataJson = message.dataJson;
    this.expiresAt = message.expiresAt;
  }

  /**
   * The frame for simple WebSocket clients: the data alone, without the JSON
   * envelope, as sent: JSON as its text, text as text, binary and protobuf
   * as a binary frame. Built on first use.
   */
  rawFrame(): Buffer {
    if (!this.raw) {
      let raw: Buffer;
      if (this.dataType === 'json') raw = encodeFrame(true, OP_TEXT, this.dataJson === undefined ? this.body.subarray(this.dataStart, this.body.length - 1) : Buffer.from(this.dataJson, 'utf8'));
      else {
        const value = String(JSON.parse(this.dataJson ?? this.body.toString('utf8', this.dataStart, this.body.length - 1)));
        raw = this.dataType === 'text' ? encodeFrame(true, OP_TEXT, Buffer.from(value, 'utf8')) : encodeFrame(true, OP_BINARY, Buffer.from(value, 'base64'));
      }
      this.raw = this.kept ? owned(raw) : raw;
    }
    return this.raw;
  }

  /** Wire size of the message without a sequence id. */
  get byteLength(): number {
    return this.body.length + 1;
  }

  /** The whole frame for clients without sequence ids, built on first use. */
  plainFrame(): Buffer {
    if (!this.frame) {
      const header = encodeFrameHeader(true, OP_TEXT, this.body.length + 1);
      this.frame = this.kept ? ownBytes(header, OPEN_BRACE, this.body) : Buffer.concat([header, OPEN_BRACE, this.body]);
    }
    return this.frame;
  }

  /**
   * Held by a reliable session, it lives until acknowledged or the session's end: its buffers are copied out of the
   * 8 KiB slabs they were cut from (own-bytes.ts). Only then: a message for plain clients alone goes at once, and
   * copying every one cost its making twice (1.0 -> 2.2 us).
   */
  keepOwnBytes(): void {
    this.kept = true;
    this.body = owned(this.body);
    if (this.frame) this.frame = owned(this.frame);
    if (this.raw) this.raw = owned(this.raw);
  }

  /**
   * The fan-out is over: the frames only live recipients without sequence ids take (a plain JSON client's, a simple
   * client's, a plain protobuf client's) are let go. A message a reliable session holds lives until acknowledged,
   * and nothing writes those frames again (a session re-sends from the body and its subprotocol's numbered parts).
   * Before, a message held by a session that never acknowledged kept them all: in a group with a plain JSON, a plain
   * protobuf and a simple member, 5 times its body where the session counted it once against
   * limits.sessionBufferBytes (37.5 MiB held for an 8 MiB bound, test/pubsub/session-buffer-memory.test.ts). Its
   * data's JSON text goes too (a string on the heap, as large as the data: a simple client's frame was made from it),
   * which kept it at 3 times its body, not 2, the heap counted (a simple client's frame is made from the body now).
   */
  dropLiveFrames(): void {
    this.frame = undefined;
    this.raw = undefined;
    this.dataJson = undefined;
    // A plain protobuf client's frame is built from the DataMessage's fields: kept only when a reliable one numbers them.
    if (this.protobuf?.numbered) this.protobuf.plain = undefined;
    else this.protobuf = undefined;
  }
}

/** True when `dataJson` is JSON text, and a JSON string for text and binary data (data from the bus is checked). */
export function isDataOfType(dataType: DataType, dataJson: string): boolean {
  try {
    const data: unknown = parseJson(dataJson);
    return dataType === 'json' || typeof data === 'string';
  } catch {
    return false;
  }
}

/**
 * True when `body` is what a SharedMessage holds: `{` + body is a data
 * message for a client (from a group or the server, a dataType and data,
 * no sequence id of its own). Checks events that another edge hands over
 * with a session, which reach clients as they are.
 */
export function isMessageBody(body: Buffer): boolean {
  let value: unknown;
  try {
    value = parseJson(`{${body.toString('utf8')}`);
  } catch {
    return false;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  return m.type === 'message' && (m.from === 'group' || m.from === 'server') && (DATA_TYPES as readonly unknown[]).includes(m.dataType) && 'data' in m && !('sequenceId' in m);
}

/** The event a ps.send carries, framed once; undefined when its data is not what its dataType says. */
export function sharedMessageOf(h: PsSend, body: Buffer, position = 0, sequence?: number): SharedMessage | undefined {
  const dataJson = body.toString('utf8');
  if (!isDataOfType(h.message.dataType, dataJson)) return undefined;
  return new SharedMessage({ ...h.message, dataJson }, h.mid, position, sequence);
}

/**
 * A send read from a durable hub's stream at `seq`, as every edge delivers it (the live flow, a session's replay or
 * catch-up): group messages of a hub keeping history carry `seq` as their sequence.
 */
export function streamMessageOf(h: PsSend, body: Buffer, seq: number, history: boolean): SharedMessage | undefined {
  return sharedMessageOf(h, body, seq, history && h.target.kind === 'group' ? seq : undefined);
}

const SEQUENCE_ID_MEMBER = Buffer.from(',"sequenceId":', 'latin1');
const SEQUENCE_ID_FIRST = Buffer.from('{"sequenceId":', 'latin1');
const CLOSE_BRACE = Buffer.from('}', 'latin1');
const COMMA = Buffer.from(',', 'latin1');

/**
 * What every reliable recipient's copy of a message shares, built on first
 * use and kept with the message: the copy is `head` + its sequence id +
 * `tail` (MessageSocket.writeNumberedText). The id goes last, `{` + body up
 * to its closing brace + `,"sequenceId":` N `}`, so a delivery copies one
 * shared buffer (with the id first it was three: `{"sequenceId":`, `,` and
 * the body); JSON members have no order, and Microsoft's client reads the
 * object whole.
 */
export function sequencedParts(message: LoggedMessage): SequencedParts {
  let parts = message.sequenced;
  if (!parts) {
    const body = message.body;
    // A body is the message's members and its closing brace (SharedMessage); anything else keeps the id first.
    parts =
      body.length > 1 && body[body.length - 1] === 0x7d
        ? { head: ownBytes(OPEN_BRACE, body.subarray(0, body.length - 1), SEQUENCE_ID_MEMBER), tail: CLOSE_BRACE }
        : { head: SEQUENCE_ID_FIRST, tail: ownBytes(COMMA, body) };
    message.sequenced = parts;
  }
  return parts;
}

/** An ack; `ackId` is a number, or a JSON number's text as the client wrote it. */
export function ackFrame(ackId: number | string, error?: { name: string; message: string }): Buffer {
  if (!error) return encodeTextFrame(`{"type":"ack","ackId":${ackId},"success":true}`);
  return encodeTextFrame(`{"type":"ack","ackId":${ackId},"success":false,"error":${JSON.stringify(error)}}`);
}

export const PONG_FRAME = encodeTextFrame('{"type":"pong"}');

export function connectedFrame(connectionId: string, userId: string | null, reconnectionToken?: string): Buffer {
  return encodeTextFrame(
    JSON.stringify({ type: 'system', event: 'connected', userId, connectionId, reconnectionToken }),
  );
}

export function disconnectedFrame(message: string): Buffer {
  return encodeTextFrame(JSON.stringify({ type: 'system', event: 'disconnected', message }));
}

export function invokeFailedFrame(invocationId: string, name: string, message: string): Buffer {
  return encodeTextFrame(
    JSON.stringify({ type: 'invokeResponse', invocationId, success: false, error: { name, message } }),
  );
}

/**
 * A successful invokeResponse: the event handler's answer as `data` of its type (as a user event's reply), or
 * none. A JSON `null` answer is sent as none: the SDK drops an invokeResponse whose json data is null (its
 * parsePayload's "unknown type"), and its invokeEvent then waited for good.
 */
export function invokeAnsweredFrame(invocationId: string, answer: Pick<DataMessage, 'dataType' | 'dataJson'> | undefined): Buffer {
  const head = `{"type":"invokeResponse","invocationId":${JSON.stringify(invocationId)},"success":true`;
  const data = answer && !(answer.dataType === 'json' && answer.dataJson === 'null') ? answer : undefined;
  return encodeTextFrame(data ? `${head},"dataType":"${data.dataType}","data":${data.dataJson}}` : `${head}}`);
}
