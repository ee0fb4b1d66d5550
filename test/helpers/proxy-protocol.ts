// What a load balancer sends with the PROXY protocol, for tests: v1 lines,
// v2 blocks, and connections (plain or TLS) that begin with a header, as a
// `createConnection` for ws and node:http clients; and a real haproxy that
// sends them.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { cleanupFor } from './cleanup.ts';
import { freePort } from './nats.ts';
import { withTimeout } from './wait.ts';
import { tracked } from './child-processes.ts';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function ipv6Bytes(address: string): Buffer {
  let text = address;
  const mapped = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (mapped) {
    const [a, b, c, d] = mapped[2].split('.').map(Number);
    text = `${mapped[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** A v2 header: PROXY for a client (IPv4 or IPv6), LOCAL, or PROXY with no address (UNSPEC). */
export function proxyV2Header(options: { address?: string; port?: number; local?: boolean; unspec?: boolean; extensions?: Buffer }): Buffer {
  const extensions = options.extensions ?? Buffer.alloc(0);
  let family = 0x00;
  let addresses = Buffer.alloc(0);
  if (options.address !== undefined) {
    const v6 = isIP(options.address) === 6;
    family = v6 ? 0x21 : 0x11;
    const source = v6 ? ipv6Bytes(options.address) : Buffer.from(options.address.split('.').map(Number));
    const destination = v6 ? ipv6Bytes('::1') : Buffer.from([127, 0, 0, 1]);
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(options.port ?? 0, 0);
    ports.writeUInt16BE(443, 2);
    addresses = Buffer.concat([source, destination, ports]);
  }
  const fixed = Buffer.alloc(4);
  fixed[0] = options.local ? 0x20 : 0x21;
  fixed[1] = options.local || options.unspec ? 0x00 : family;
  fixed.writeUInt16BE(addresses.length + extensions.length, 2);
  return Buffer.concat([SIGNATURE, fixed, addresses, extensions]);
}

/** A v1 line naming an IPv4 or IPv6 client. */
export function proxyV1Header(address: string, port: number): Buffer {
  const v6 = isIP(address) === 6;
  return Buffer.from(`PROXY ${v6 ? 'TCP6' : 'TCP4'} ${address} ${v6 ? '::1' : '127.0.0.1'} ${port} 443\r\n`);
}

/**
 * A `createConnection` for ws and node:http: a TCP connection to the port
 * asked for that begins with `header`, under TLS when `tls` is given (the
 * header goes before the handshake, as a balancer sends it).
 */
export function connectingWith(header: Buffer, tls?: ConnectionOptions): (options: { port?: number | string }) => Socket {
  return (options) => {
    const socket = netConnect(Number(options.port), '127.0.0.1');
    socket.write(header);
    return tls ? tlsConnect({ ...tls, socket }) : socket;
  };
}

/** haproxy in tcp mode in front of the relay: one port sends v1 headers, one v2; stopped with the test. */
export async function startHaproxy(t: Pick<TestContext, 'after'>, relayPort: number): Promise<{ v1: number; v2: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-haproxy-'));
  cleanupFor(t).after(() => rmSync(dir, { recursive: true, force: true }));
  const [v1, v2] = [await freePort(), await freePort()];
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(
    file,
    `defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen v1
  bind 127.0.0.1:${v1}
  server relay 127.0.0.1:${relayPort} send-proxy
listen v2
  bind 127.0.0.1:${v2}
  server relay 127.0.0.1:${relayPort} send-proxy-v2
`,
  );
  const child = tracked(spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  // Not installed (.ci/run installs it): said plainly, not an unhandled 'error'.
  child.on('error', (err) => (stderr += `haproxy: ${err.message}`));
  cleanupFor(t).after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await withTimeout(once(child, 'exit'), 5000, 'haproxy to exit').catch(() => undefined);
    }
  });
  for (const port of [v1, v2]) await untilListening(port, () => child.exitCode === null, () => stderr);
  return { v1, v2 };

  async function untilListening(port: number, alive: () => boolean, why: () => string): Promise<void> {
    const deadline = Date.now() + 10000;
    for (;;) {
      if (!alive()) throw new Error(`haproxy exited: ${why().trim()}`);
      const socket = netConnect(port, '127.0.0.1');
      const ok = await new Promise<boolean>((resolve) => {
        socket.once('connect', () => resolve(true));
        socket.once('error', () => resolve(false));
      });
      socket.destroy();
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`haproxy did not listen on ${port}: ${why().trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
