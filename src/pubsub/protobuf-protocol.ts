// The Web PubSub protobuf subprotocols, protobuf.webpubsub.azure.v1 and
// protobuf.reliable.webpubsub.azure.v1 (docs/protocols/web-pubsub.md,
// "Protobuf subprotocols"), as Azure documents them and Microsoft's .NET
// client (Azure.Messaging.WebPubSub.Client.Protobuf) speaks them. Field
// numbers are the protocol's:
//
//   UpstreamMessage: send_to_group_message 1 {group 1, ack_id 2, data 3, no_echo 4},
//     event_message 5 {event 1, data 2, ack_id 3}, join_group_message 6 {group 1, ack_id 2},
//     leave_group_message 7 {group 1, ack_id 2}, sequence_ack_message 8 {sequence_id 1}, ping_message 9 {}
//   MessageData (oneof): text_data 1, binary_data 2, protobuf_data 3 (a google.protobuf.Any), json_data 4
//   DownstreamMessage: ack_message 1 {ack_id 1, success 2, error 3 {name 1, message 2}},
//     data_message 2 {from 1, group 2, data 3, sequence_id 4},
//     system_message 3 {connected_message 1 {connection_id 1, user_id 2, reconnection_token 3},
//     disconnected_message 2 {reason 2}}, pong_message 4 {}
//
// A client's message is read into the JSON subprotocol's message it means and
// goes the JSON way from there (client-protocol.ts): the same schemas check
// it, the same code acts on it. Data keeps its type: text_data is text,
// binary_data binary, protobuf_data protobuf (the Any's bytes, base64 for JSON
// receivers), json_data json. What the relay sends such a client is built
// from the JSON it sends others: a data message from the message's JSON body
// (its data's JSON text as written), once per message for all protobuf
// recipients, with the sequence id a reliable one needs added per recipient.
import { MAX_JSON_DEPTH, parseJson, rawMemberText } from '../validation/bounded-json.ts';
import { OP_BINARY, encodeFrame, encodeFrameHeader } from '../websocket/frames.ts';
import { ownBytes } from '../collections/own-bytes.ts';
import type { LoggedMessage, ProtobufParts } from './message-log.ts';
import { WireError, bytesOf, lengthField, messageField, readFields, stringOf, varint, varintField, varintOf, type WireField } from './protobuf-wire.ts';

export const PROTOBUF_PROTOCOL = 'protobuf.webpubsub.azure.v1';
export const PROTOBUF_RELIABLE_PROTOCOL = 'protobuf.reliable.webpubsub.azure.v1';

export { WireError };

/** A client's protobuf message as the JSON message it means: its text, for the JSON subprotocols' handling. */
export type UpstreamReading =
  | { kind: 'message'; text: string }
  /** No message the protocol knows (an empty one, or only fields of a later version): nothing to do. */
  | { kind: 'none' }
  /** A request whose json_data is not JSON: refused BadRequest under its ackId (if it has one). */
  | { kind: 'refused'; ackId: string | undefined; detail: string };

const MESSAGE_TYPES: Record<number, string> = { 1: 'sendToGroup', 5: 'event', 6: 'joinGroup', 7: 'leaveGroup', 8: 'sequenceAck', 9: 'ping' };

/**
 * Reads a client's UpstreamMessage. Throws WireError for bytes that are not
 * a protobuf message of that shape (the connection is then ended, as Azure
 * "declines the client if the message doesn't match the prescribed format").
 */
export function readUpstream(frame: Buffer): UpstreamReading {
  let kind: number | undefined;
  let body: Buffer | undefined;
  // A oneof set more than once is its last value (proto3).
  for (const f of readFields(frame)) {
    if (MESSAGE_TYPES[f.field] !== undefined) {
      kind = f.field;
      body = bytesOf(f);
    }
  }
  if (kind === undefined || body === undefined) return { kind: 'none' };
  const type = MESSAGE_TYPES[kind];
  // Each field's last value (proto3: a field repeated is its last), so what is built stays the size of one message
  // however many times a field comes.
  let name: string | undefined;
  let ackId: bigint | undefined;
  let noEcho: boolean | undefined;
  let sequenceId: bigint | undefined;
  let data: Buffer | undefined;
  const ackField = kind === 5 ? 3 : 2;
  const dataField = kind === 5 ? 2 : kind === 1 ? 3 : 0;
  for (const f of readFields(body)) {
    if (kind === 8 || kind === 9) {
      if (kind === 8 && f.field === 1) sequenceId = varintOf(f);
    } else if (f.field === 1) name = stringOf(f);
    else if (f.field === ackField) ackId = varintOf(f);
    else if (f.field === dataField) data = bytesOf(f);
    else if (f.field === 4 && kind === 1) noEcho = varintOf(f) !== 0n;
  }
  // Members as the JSON message has them; `data` is written in as JSON text.
  const members: string[] = [`"type":"${type}"`];
  if (name !== undefined) members.push(`${kind === 5 ? '"event"' : '"group"'}:${JSON.stringify(name)}`);
  if (sequenceId !== undefined) members.push(`"sequenceId":${sequenceId}`);
  if (noEcho !== undefined) members.push(`"noEcho":${noEcho}`);
  if (ackId !== undefined) members.push(`"ackId":${ackId}`);
  const read = data === undefined ? undefined : readData(data);
  if (read && 'invalid' in read) return { kind: 'refused', ackId: ackId === undefined ? undefined : String(ackId), detail: read.invalid };
  if (read) members.push(`"dataType":"${read.dataType}"`, `"data":${read.json}`);
  return { kind: 'message', text: `{${members.join(',')}}` };
}

/** A MessageData: its type and its data as JSON text (json as written, the rest as a JSON string); undefined when unset. */
function readData(buf: Buffer): { dataType: string; json: string } | { invalid: string } | undefined {
  let last: WireField | undefined;
  for (const f of readFields(buf)) if (f.field >= 1 && f.field <= 4) last = f;
  if (!last) return undefined;
  switch (last.field) {
    case 1:
      return { dataType: 'text', json: JSON.stringify(stringOf(last)) };
    case 2:
      return { dataType: 'binary', json: JSON.stringify(bytesOf(last).toString('base64')) };
    case 3:
      return { dataType: 'protobuf', json: JSON.stringify(anyOf(bytesOf(last)).toString('base64')) };
    default: {
      const text = stringOf(last);
      try {
        // One level less than a message may nest: the data is a member of the message it is read into.
        parseJson(text, MAX_JSON_DEPTH - 1);
      } catch (err) {
        return { invalid: `json_data is not JSON: ${(err as Error).message}` };
      }
      return { dataType: 'json', json: text };
    }
  }
}

/**
 * A google.protobuf.Any's bytes, read as the message they are (type_url 1, a string; value 2, bytes): recipients
 * on the protobuf subprotocols parse it within their DownstreamMessage, where bytes that are not one fail the whole
 * message (and Azure, parsing the UpstreamMessage whole, declines it).
 */
function anyOf(bytes: Buffer): Buffer {
  for (const f of readFields(bytes)) {
    if (f.field === 1) stringOf(f);
    else if (f.field === 2) bytesOf(f);
  }
  return bytes;
}

/** Whether `bytes` are a google.protobuf.Any (anyOf reads them without throwing). */
function isAny(bytes: Buffer): boolean {
  try {
    anyOf(bytes);
    return true;
  } catch (err) {
    if (err instanceof WireError) return false;
    throw err;
  }
}

/** An ack; `ackId` as the JSON path has it: a number, or the digits of one past 2^53 - 1. */
export function protobufAckFrame(ackId: number | string, error?: { name: string; message: string }): Buffer {
  const id = typeof ackId === 'number' ? ackId : /^\d+$/.test(ackId) && BigInt(ackId) < 1n << 64n ? BigInt(ackId) : 0n;
  const parts = [varintField(1, id)];
  if (error) parts.push(messageField(3, lengthField(1, error.name), lengthField(2, error.message)));
  else parts.push(varintField(2, 1));
  return binaryFrame(messageField(1, ...parts));
}

export function protobufConnectedFrame(connectionId: string, userId: string | null, reconnectionToken?: string): Buffer {
  const parts = [lengthField(1, connectionId)];
  if (userId !== null) parts.push(lengthField(2, userId));
  if (reconnectionToken !== undefined) parts.push(lengthField(3, reconnectionToken));
  return binaryFrame(messageField(3, messageField(1, ...parts)));
}

export function protobufDisconnectedFrame(reason: string): Buffer {
  return binaryFrame(messageField(3, messageField(2, lengthField(2, reason))));
}

/** The answer to a ping_message: a DownstreamMessage of an empty pong_message. */
export const PROTOBUF_PONG_FRAME = binaryFrame(messageField(4));

function binaryFrame(payload: Buffer): Buffer {
  return encodeFrame(true, OP_BINARY, payload);
}

const DATA_FIELDS: Record<string, number> = { text: 1, binary: 2, protobuf: 3, json: 4 };

/** The DataMessage fields of a message (from, group, data), from its JSON body; kept with the message. */
function protobufParts(message: LoggedMessage): ProtobufParts {
  if (message.protobuf) return message.protobuf;
  const text = `{${message.body.toString('utf8')}`;
  const m = parseJson(text) as { from: string; group?: string; dataType: string; data: unknown };
  let field = DATA_FIELDS[m.dataType] ?? 4;
  let data: string | Buffer;
  if (m.dataType === 'binary' || m.dataType === 'protobuf') data = Buffer.from(String(m.data), 'base64');
  else if (m.dataType === 'text') data = String(m.data);
  else data = rawMemberText(text, 'data') ?? JSON.stringify(m.data);
  // Protobuf data from a JSON client (@azure/web-pubsub-client sends any bytes it is given) or a REST call is not
  // read on its way in: bytes that are not a google.protobuf.Any go as binary_data, since a protobuf client's parser
  // reads protobuf_data as an Any within the DownstreamMessage and would fail on the whole message.
  if (field === 3 && !isAny(data as Buffer)) field = 2;
  const parts = [lengthField(1, m.from)];
  if (m.group !== undefined) parts.push(lengthField(2, m.group));
  parts.push(messageField(3, lengthField(field, data)));
  // Held as long as the message (own bytes, not a slice of a shared slab).
  message.protobuf = { fields: ownBytes(...parts) };
  return message.protobuf;
}

/** The frame of a data message for a protobuf client without sequence ids: shared by all of them. */
export function protobufDataFrame(message: LoggedMessage): Buffer {
  const parts = protobufParts(message);
  if (!parts.plain) {
    const inner = parts.fields;
    const prefix = Buffer.concat([Buffer.from([0x12]), varint(inner.length)]);
    parts.plain = ownBytes(encodeFrameHeader(true, OP_BINARY, prefix.length + inner.length), prefix, inner);
  }
  return parts.plain;
}

/** The frame of a data message for a reliable protobuf client: the shared fields and its sequence id (field 4). */
export function protobufNumberedFrame(message: LoggedMessage, sequenceId: number): Buffer {
  const parts = protobufParts(message);
  parts.numbered = true;
  const fields = parts.fields;
  const sequence = Buffer.concat([Buffer.from([0x20]), varint(sequenceId)]);
  const innerLength = fields.length + sequence.length;
  const prefix = Buffer.concat([Buffer.from([0x12]), varint(innerLength)]);
  const payloadLength = prefix.length + innerLength;
  return Buffer.concat([encodeFrameHeader(true, OP_BINARY, payloadLength), prefix, fields, sequence]);
}
