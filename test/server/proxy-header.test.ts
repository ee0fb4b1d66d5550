// The PROXY protocol header (src/server/proxy-header.ts): v1 lines and v2
// blocks as load balancers write them, every prefix of a valid header
// waiting for more, and the malformed ones refused as soon as the bytes say so.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import { describe, it } from 'node:test';
import { parseProxyHeader } from '../../src/server/proxy-header.ts';
import { proxyV2Header } from '../helpers/proxy-protocol.ts';

const v1 = (line: string) => Buffer.from(`${line}\r\n`);

describe('PROXY protocol header', () => {
  it('reads v1 lines of TCP4, TCP6 and UNKNOWN', () => {
    const line = v1('PROXY TCP4 203.0.113.7 10.0.0.5 51234 443');
    assert.deepEqual(parseProxyHeader(line), { kind: 'client', address: '203.0.113.7', port: 51234, bytes: line.length });
    const six = v1('PROXY TCP6 2001:db8::7 2001:db8::1 65535 443');
    assert.deepEqual(parseProxyHeader(six), { kind: 'client', address: '2001:db8::7', port: 65535, bytes: six.length });
    assert.deepEqual(parseProxyHeader(v1('PROXY UNKNOWN')), { kind: 'local', bytes: 15 });
    assert.deepEqual(parseProxyHeader(v1('PROXY UNKNOWN ffff::1 ffff::2 1 2')), { kind: 'local', bytes: 35 });
    // What follows the header is the connection's: only the header's bytes are counted.
    const withRequest = Buffer.concat([line, Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
    assert.equal((parseProxyHeader(withRequest) as { bytes: number }).bytes, line.length);
  });

  it('reads v2 blocks of IPv4, IPv6, LOCAL and UNSPEC, extensions skipped', () => {
    const four = proxyV2Header({ address: '203.0.113.7', port: 51234 });
    assert.deepEqual(parseProxyHeader(four), { kind: 'client', address: '203.0.113.7', port: 51234, bytes: 28 });
    const six = proxyV2Header({ address: '2001:db8::7', port: 5555 });
    assert.deepEqual(parseProxyHeader(six), { kind: 'client', address: '2001:db8::7', port: 5555, bytes: 52 });
    assert.deepEqual(parseProxyHeader(proxyV2Header({ address: '::', port: 1 })), { kind: 'client', address: '::', port: 1, bytes: 52 });
    assert.deepEqual(parseProxyHeader(proxyV2Header({ address: '1:0:0:2:0:0:0:3', port: 1 })), { kind: 'client', address: '1:0:0:2::3', port: 1, bytes: 52 });
    assert.deepEqual(parseProxyHeader(proxyV2Header({ address: '::ffff:192.0.2.9', port: 7 })), { kind: 'client', address: '::ffff:192.0.2.9', port: 7, bytes: 52 });
    // AWS and Azure add extensions (TLVs) after the addresses.
    const tlv = Buffer.from([0xee, 0x00, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05]);
    assert.deepEqual(parseProxyHeader(proxyV2Header({ address: '198.51.100.1', port: 80, extensions: tlv })), { kind: 'client', address: '198.51.100.1', port: 80, bytes: 36 });
    assert.deepEqual(parseProxyHeader(proxyV2Header({ local: true })), { kind: 'local', bytes: 16 });
    assert.deepEqual(parseProxyHeader(proxyV2Header({ unspec: true })), { kind: 'local', bytes: 16 });
  });

  it('waits for more on every prefix of a valid header', () => {
    for (const header of [v1('PROXY TCP4 203.0.113.7 10.0.0.5 51234 443'), proxyV2Header({ address: '2001:db8::7', port: 5555 })]) {
      for (let n = 0; n < header.length; n++) assert.deepEqual(parseProxyHeader(header.subarray(0, n)), { kind: 'incomplete' }, `${n} bytes`);
    }
  });

  it('refuses malformed headers', () => {
    const invalid = (buf: Buffer) => (parseProxyHeader(buf) as { kind: string }).kind;
    assert.equal(invalid(Buffer.from('GET / HTTP/1.1\r\n\r\n')), 'invalid');
    assert.equal(invalid(Buffer.from('\x16\x03\x01\x02\x00')), 'invalid');
    for (const line of [
      'PROXY TCP4 203.0.113.7 10.0.0.5 51234',
      'PROXY TCP4 203.0.113.7  10.0.0.5 51234 443',
      'PROXY TCP4 2001:db8::7 10.0.0.5 51234 443',
      'PROXY TCP6 203.0.113.7 2001:db8::1 51234 443',
      'PROXY TCP4 203.0.113 10.0.0.5 51234 443',
      'PROXY TCP4 203.0.113.7 10.0.0.5 65536 443',
      'PROXY TCP4 203.0.113.7 10.0.0.5 0443 443',
      'PROXY TCP4 203.0.113.7 10.0.0.5 -1 443',
      'PROXY UDP4 203.0.113.7 10.0.0.5 51234 443',
      'PROXY TCP4 203.0.113.7 10.0.0.5 51234 443 extra',
      'PROXY TCP4 203.0.113.7\t10.0.0.5 51234 443',
      'proxy TCP4 203.0.113.7 10.0.0.5 51234 443',
      'PROXY TCP6 fe80::1%eth0 ::1 51234 443',
    ]) {
      assert.equal(invalid(v1(line)), 'invalid', line);
    }
    // No CRLF within 107 bytes: refused without waiting for more.
    assert.equal(invalid(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(93)}`)), 'invalid');
    assert.equal(invalid(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(92)}`)), 'incomplete');
    assert.equal(invalid(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(91)}\r\n`)), 'local');
    assert.equal(invalid(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`)), 'invalid');
    assert.equal(invalid(Buffer.from('PROXY UNKNOWN \u00e9\r\n', 'utf8')), 'invalid');
    const good = proxyV2Header({ address: '203.0.113.7', port: 1 });
    const edit = (at: number, value: number) => {
      const copy = Buffer.from(good);
      copy[at] = value;
      return copy;
    };
    assert.equal(invalid(edit(12, 0x11)), 'invalid', 'version 1');
    assert.equal(invalid(edit(12, 0x22)), 'invalid', 'command 2');
    // The spec's other valid pairs fall back to UNSPEC (the connection's own peer), as it allows a receiver to.
    for (const pair of [0x12, 0x22, 0x31, 0x32]) assert.equal(invalid(edit(13, pair)), 'local', `family and transport ${pair.toString(16)}`);
    for (const pair of [0x01, 0x10, 0x13, 0x23, 0x30, 0x33, 0x41]) assert.equal(invalid(edit(13, pair)), 'invalid', `family and transport ${pair.toString(16)}`);
    assert.equal(invalid(edit(15, 8)), 'invalid', 'a block shorter than its addresses');
    const tooLong = Buffer.from(good);
    tooLong.writeUInt16BE(4097, 14);
    assert.equal(invalid(tooLong), 'invalid', 'a block over 4 KiB');
  });

  it('never throws on random bytes after a valid start, and what it reads is always a client it can name', () => {
    const starts = [Buffer.from('PROXY '), Buffer.from('PROXY TCP4 '), Buffer.from('PROXY TCP6 '), proxyV2Header({ address: '203.0.113.7', port: 1 }).subarray(0, 12)];
    for (let i = 0; i < 20000; i++) {
      const start = starts[i % starts.length];
      const tail = i % 3 === 0 ? Buffer.from(Array.from({ length: randomInt(0, 60) }, () => ' .:0123456789abcdefTCP\r\n'.charCodeAt(randomInt(0, 26)))) : randomBytes(randomInt(0, 200));
      const buf = Buffer.concat([start, tail]);
      const result = parseProxyHeader(buf);
      if (result.kind === 'incomplete' || result.kind === 'invalid') continue;
      assert.ok(result.bytes <= buf.length, `bytes within what was read (${buf.toString('hex')})`);
      if (result.kind === 'client') {
        assert.notEqual(isIP(result.address), 0, result.address);
        assert.ok(Number.isInteger(result.port) && result.port >= 0 && result.port <= 65535);
      }
    }
  });
});
