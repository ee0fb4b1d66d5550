// How a message on the bus is laid out: a 4-byte big-endian length, that many
// bytes of JSON (the header: what to do), then raw bytes (a body, if any), so
// bodies cross the bus without base64. Headers are checked against
// schemas/bus-message.schema.json by the receiver: the bus is a network too.
import { parseJson } from '../validation/bounded-json.ts';

export interface Envelope {
  header: unknown;
  body: Buffer;
}

export function encodeEnvelope(header: object, body?: Uint8Array): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(4 + json.length + (body?.length ?? 0));
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  if (body) out.set(body, 4 + json.length);
  return out;
}

/** The envelope, or undefined when the bytes are not one. */
export function decodeEnvelope(data: Uint8Array): Envelope | undefined {
  if (data.length < 4) return undefined;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const length = buf.readUInt32BE(0);
  if (length > buf.length - 4) return undefined;
  try {
    return { header: parseJson(buf.toString('utf8', 4, 4 + length)), body: buf.subarray(4 + length) };
  } catch {
    return undefined;
  }
}
