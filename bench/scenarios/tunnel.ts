// Tunnel throughput: one bulk transfer, sender -> relay -> listener through a
// relayed WebSocket, against the same bytes over a plain loopback TCP
// connection (the ceiling) and through socat (a userspace relay with no
// framing). The sender writes pre-masked 64 KiB frames as fast as its socket
// takes them; the figure is payload bytes the receiving end counted per second,
// the median of three transfers (one in quick mode).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { LeanWs, OP_BINARY } from '../lib/lean-ws.ts';
import { openLeanListener } from '../lib/lean-listener.ts';
import { CpuMeter } from '../lib/processes.ts';
import type { ScenarioResult } from '../lib/report.ts';
import { ENTITY, startRelay, startSocat } from '../lib/systems.ts';
import type { Mode, Outcome } from './index.ts';

const CHUNK = 64 * 1024;

/** `count` copies of one masked 64 KiB binary frame, as one buffer (masked once, sent many times). */
function premaskedFrames(count: number): Buffer {
  const mask = randomBytes(4);
  const payload = randomBytes(CHUNK);
  const header = Buffer.from([0x80 | OP_BINARY, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, ...mask]);
  header.writeUInt32BE(CHUNK, 6);
  for (let i = 0; i < CHUNK; i++) payload[i] ^= mask[i & 3];
  const frame = Buffer.concat([header, payload]);
  return Buffer.concat(Array.from({ length: count }, () => frame));
}

interface Transfer {
  bytesPerSec: number;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

/** Writes `total` bytes (as `unit` buffers) to `socket` with backpressure; resolves when `received()` reaches `expected`. */
function pump(write: (b: Buffer) => boolean, socket: Socket, unit: Buffer, rounds: number): void {
  let left = rounds;
  const go = () => {
    while (left > 0) {
      left--;
      if (!write(unit)) return void socket.once('drain', go);
    }
  };
  go();
}

function timed(expected: number, received: () => number, pids: number[], start: () => void, timeoutMs: number): Promise<Transfer> {
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

async function tcpSink(): Promise<{ server: Server; port: number; received: () => number; sockets: Set<Socket> }> {
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

async function overTcp(port: number, sinkReceived: () => number, total: number, pids: number[]): Promise<Transfer> {
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

async function overRelay(relayPort: number, relayPid: number, total: number): Promise<Transfer> {
  let received = 0;
  let receiver: LeanWs | undefined;
  const listener = await openLeanListener({
    port: relayPort,
    onAccept: () => ({ onPayloadBytes: (n) => (received += n), onOpen: (ws) => (receiver = ws) }),
  });
  const sender = await LeanWs.open({ port: relayPort, path: `/$hc/${ENTITY}?sb-hc-action=connect` });
  const unit = premaskedFrames(16);
  try {
    return await timed(total, () => received, [relayPid], () => pump((b) => sender.sendRaw(b), sender.socket, unit, total / (CHUNK * 16)), 120000);
  } finally {
    sender.destroy();
    receiver?.destroy();
    listener.destroy();
  }
}

/** The run with the median rate of `runs` transfers (loopback throughput swings between runs on a shared machine). */
async function median(runs: number, transfer: () => Promise<Transfer>): Promise<Transfer> {
  const all: Transfer[] = [];
  for (let i = 0; i < runs; i++) all.push(await transfer());
  if (process.env.BENCH_VERBOSE) process.stderr.write(`  runs: ${all.map((t) => (t.bytesPerSec / 1048576).toFixed(0)).join(", ")} MiB/s\n`);
  return all.sort((a, b) => a.bytesPerSec - b.bytesPerSec)[Math.floor(runs / 2)];
}

export async function tunnelScenario(mode: Mode): Promise<Outcome> {
  const total = (mode === 'quick' ? 64 : 1024) * 1024 * 1024;
  const runs = mode === 'quick' ? 1 : 3;
  const scenario = `tunnel ${total / 1024 / 1024} MiB`;
  const sink = await tcpSink();
  const rows: [string, boolean, Transfer][] = [];
  try {
    const relay = await startRelay();
    try {
      rows.push(['edge-relay (relayed websocket)', true, await median(runs, () => overRelay(relay.port, relay.pid, total))]);
    } finally {
      await relay.stop();
    }
    rows.push(['plain TCP over loopback', false, await median(runs, () => overTcp(sink.port, sink.received, total, []))]);
    rows.push([
      'socat',
      false,
      await median(runs, async () => {
        // socat serves one connection and exits, so each run gets its own.
        const socat = await startSocat(sink.port);
        try {
          return await overTcp(socat.port, sink.received, total, [socat.pid]);
        } finally {
          await socat.stop();
        }
      }),
    ]);
  } finally {
    for (const s of sink.sockets) s.destroy();
    sink.server.close();
  }
  const results: ScenarioResult[] = rows.map(([system, ours, t]) => ({
    scenario,
    system,
    ours,
    value: t.bytesPerSec / 1024 / 1024,
    unit: 'MiB/s',
    figures: { bytesPerSec: t.bytesPerSec, bytes: total, generatorCpu: t.generatorCpu, serverCpu: t.serverCpu, serverKernelCpu: t.serverKernelCpu },
  }));
  const ours = results[0];
  return {
    results,
    ratios: [
      { scenario, ours: ours.system, peer: results[1].system, ratio: ours.value / results[1].value, target: 0.5 },
      { scenario, ours: ours.system, peer: results[2].system, ratio: ours.value / results[2].value, target: 1 },
    ],
  };
}
