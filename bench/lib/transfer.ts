// Bulk transfers for the tunnel and bridge scenarios: a sink that counts the
// bytes every connection sends it, a sender that writes the same buffer as
// fast as its socket takes it (with backpressure), timing from the first write
// to the last byte counted.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { CpuMeter } from './processes.ts';

export const CHUNK = 64 * 1024;

export interface Transfer {
  bytesPerSec: number;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

/** Writes `unit` `rounds` times through `write`, pausing for `socket`'s drain when it says to. */
export function pump(write: (b: Buffer) => boolean, socket: Socket, unit: Buffer, rounds: number): void {
  let left = rounds;
  const go = () => {
    while (left > 0) {
      left--;
      if (!write(unit)) return void socket.once('drain', go);
    }
  };
  go();
}

/** Starts a transfer and resolves when `received()` reaches `expected`, with its rate and the CPU it took (bounded by `timeoutMs`). */
export function timed(expected: number, received: () => number, pids: number[], start: () => void, timeoutMs: number): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const meter = new CpuMeter(pids);
    const t0 = performance.now();
    const deadline = setTimeout(() => reject(new Error(`tunnel: only ${received()} of ${expected} bytes arrived`)), timeoutMs);
    const check = setInterval(() => {
      if (received() < expected) return;
      clearInterval(check);
      clearTimeout(deadline);
      const seconds = (performance.now() - t0) / 1000;
      const cpu = meter.read();
      resolve({ bytesPerSec: expected / seconds, generatorCpu: cpu.generator, serverCpu: cpu.servers, serverKernelCpu: cpu.serversKernel });
    }, 2);
    start();
  });
}

export interface TcpSink {
  server: Server;
  port: number;
  received: () => number;
  sockets: Set<Socket>;
}

/** A TCP server on 127.0.0.1 that counts what every connection sends it. */
export async function tcpSink(): Promise<TcpSink> {
  let received = 0;
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, received: () => received, sockets };
}

/** One transfer of `total` bytes over a TCP connection to `port`, counted at the sink; `pids` are the system's processes between (CPU). */
export async function overTcp(port: number, sinkReceived: () => number, total: number, pids: number[]): Promise<Transfer> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise((r) => socket.once('connect', r));
  const unit = randomBytes(CHUNK * 16);
  try {
    const before = sinkReceived();
    return await timed(total, () => sinkReceived() - before, pids, () => pump((b) => socket.write(b), socket, unit, total / unit.length), 120000);
  } finally {
    socket.destroy();
  }
}
