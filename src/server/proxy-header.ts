// The PROXY protocol header (HAProxy's "PROXY protocol" versions 1 and 2) a
// TCP load balancer writes at the start of each connection it opens to the
// relay, naming the client it accepted: v1 is one text line
// (`PROXY TCP4 192.0.2.7 10.0.0.5 51234 443\r\n`), v2 a binary block after a
// 12-byte signature. This is hostile input like any other: strict forms only,
// a bound on the length, and a verdict as soon as the bytes decide one.
import { isIP } from 'node:net';

/** What a complete, valid header says. `local`: the balancer's own connection (a health check), or no client address given. */
export type ProxyHeader =
  | { kind: 'client'; address: string; port: number; bytes: number }
  | { kind: 'local'; bytes: number };

export type ProxyHeaderResult = ProxyHeader | { kind: 'incomplete' } | { kind: 'invalid'; why: string };

const V1_PREFIX = Buffer.from('PROXY ');
/** The longest v1 line the specification allows, CRLF included. */
export const V1_MAX_BYTES = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** v2's fixed part: the signature, version and command, family and transport, length. */
const V2_FIXED_BYTES = 16;
/**
 * The longest v2 address block and extensions (TLVs) accepted. Addresses take
 * at most 216 bytes; the extensions balancers add (AWS's VPC endpoint id,
 * Azure's private link id, a TLS summary) take a few hundred more.
 */
export const V2_MAX_BLOCK_BYTES = 4096;

const PORT = /^(0|[1-9]\d{0,4})$/;

/** Whether `buf` could still become `whole` (it is a prefix of it). */
function mayBecome(buf: Buffer, whole: Buffer): boolean {
  const n = Math.min(buf.length, whole.length);
  return buf.subarray(0, n).equals(whole.subarray(0, n));
}

/** Reads the header at the start of `buf`, the bytes of a connection received so far. */
export function parseProxyHeader(buf: Buffer): ProxyHeaderResult {
  if (mayBecome(buf, V2_SIGNATURE)) return buf.length < V2_FIXED_BYTES ? { kind: 'incomplete' } : parseV2(buf);
  if (mayBecome(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? { kind: 'incomplete' } : parseV1(buf);
  return { kind: 'invalid', why: 'no PROXY protocol header' };
}

function parseV1(buf: Buffer): ProxyHeaderResult {
  const end = buf.indexOf('\r\n');
  if (end < 0 || end + 2 > V1_MAX_BYTES) {
    return buf.length >= V1_MAX_BYTES || end >= 0 ? { kind: 'invalid', why: 'v1 line too long' } : { kind: 'incomplete' };
  }
  const bytes = end + 2;
  // US-ASCII only: a byte past 0x7e could read as something else after decoding.
  for (let i = 0; i < end; i++) if (buf[i] < 0x20 || buf[i] > 0x7e) return { kind: 'invalid', why: 'v1 line not printable' };
  const fields = buf.toString('latin1', 0, end).split(' ');
  if (fields[1] === 'UNKNOWN') return { kind: 'local', bytes };
  if (fields.length !== 6) return { kind: 'invalid', why: 'v1 line not of six fields' };
  const [, proto, source, destination, sourcePort, destinationPort] = fields;
  const family = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (family === 0) return { kind: 'invalid', why: 'v1 protocol neither TCP4, TCP6 nor UNKNOWN' };
  // A zone (fe80::1%eth0) names the balancer's interface, not a client's address.
  if (isIP(source) !== family || isIP(destination) !== family || fields[2].includes('%') || fields[3].includes('%')) return { kind: 'invalid', why: 'v1 address not of its protocol' };
  for (const port of [sourcePort, destinationPort]) if (!PORT.test(port) || Number(port) > 65535) return { kind: 'invalid', why: 'v1 port not a port' };
  return { kind: 'client', address: source, port: Number(sourcePort), bytes };
}

function parseV2(buf: Buffer): ProxyHeaderResult {
  const versionCommand = buf[12];
  if (versionCommand >> 4 !== 2) return { kind: 'invalid', why: 'v2 version not 2' };
  const command = versionCommand & 0x0f;
  if (command > 1) return { kind: 'invalid', why: 'v2 command neither LOCAL nor PROXY' };
  const length = buf.readUInt16BE(14);
  if (length > V2_MAX_BLOCK_BYTES) return { kind: 'invalid', why: 'v2 block too long' };
  const bytes = V2_FIXED_BYTES + length;
  if (buf.length < bytes) return { kind: 'incomplete' };
  // LOCAL: the balancer's own connection; the addresses, if any, are not a client's.
  if (command === 0) return { kind: 'local', bytes };
  const familyTransport = buf[13];
  if (familyTransport === 0x00) return { kind: 'local', bytes };
  const block = buf.subarray(V2_FIXED_BYTES, bytes);
  if (familyTransport === 0x11) {
    if (length < 12) return { kind: 'invalid', why: 'v2 block shorter than its IPv4 addresses' };
    return { kind: 'client', address: `${block[0]}.${block[1]}.${block[2]}.${block[3]}`, port: block.readUInt16BE(8), bytes };
  }
  if (familyTransport === 0x21) {
    if (length < 36) return { kind: 'invalid', why: 'v2 block shorter than its IPv6 addresses' };
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(block.readUInt16BE(i).toString(16));
    return { kind: 'client', address: compactIpv6(groups), port: block.readUInt16BE(32), bytes };
  }
  // The spec's other valid pairs (UDP over IPv4 or IPv6, a Unix stream or datagram socket): "a receiver is not required
  // to implement other ones, provided that it automatically falls back to the UNSPEC mode" (haproxy's
  // proxy-protocol.txt, 2.2): the connection's own peer stands, as for \x00. Refused before, so a balancer that took
  // its client on a Unix socket (haproxy `bind unix@...` with `send-proxy-v2`) had every connection closed.
  if (V2_UNSPEC_FALLBACK.has(familyTransport)) return { kind: 'local', bytes };
  return { kind: 'invalid', why: 'v2 family and transport none the spec names' };
}

/** v2 family-and-transport bytes the spec names besides TCP over IPv4 (\x11) and IPv6 (\x21) and UNSPEC (\x00). */
const V2_UNSPEC_FALLBACK = new Set([0x12, 0x22, 0x31, 0x32]);

/** Eight hex groups as an address is written (RFC 5952: the longest run of two or more zero groups as `::`). */
function compactIpv6(groups: string[]): string {
  let bestAt = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) [bestAt, bestLength] = [i, j - i];
    i = j;
  }
  // An IPv4 address mapped into IPv6 is written as Node writes a dual-stack socket's peer (::ffff:192.0.2.7).
  if (bestAt === 0 && bestLength === 5 && groups[5] === 'ffff') {
    const [high, low] = [parseInt(groups[6], 16), parseInt(groups[7], 16)];
    return `::ffff:${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  }
  if (bestAt < 0) return groups.join(':');
  return `${groups.slice(0, bestAt).join(':')}::${groups.slice(bestAt + bestLength).join(':')}`;
}
