// Rendezvous rate: relayed WebSocket connections opened and closed per second
// (each: sender connects, the listener accepts and writes one byte, the sender
// reads it and closes), and the time from connect to that first byte, against
// a WebSocket server reached directly that writes the byte on upgrade.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { Histogram } from '../lib/histogram.ts';
import { LeanWs, OP_BINARY, maskedFrame } from '../lib/lean-ws.ts';
import { openLeanListener } from '../lib/lean-listener.ts';
import { CpuMeter } from '../lib/processes.ts';
import { quotient, type ScenarioResult } from '../lib/report.ts';
import { ENTITY, startRelay } from '../lib/systems.ts';
import type { Mode, Outcome } from './index.ts';

interface Rate {
  perSec: number;
  histogram: Histogram;
  generatorCpu: number;
  serverCpu: number;
  serverKernelCpu: number;
}

const ONE_BYTE = maskedFrame(OP_BINARY, Buffer.from([1]));
const ONE_BYTE_SERVER = Buffer.from([0x80 | OP_BINARY, 1, 1]);

/** One connection: connect, wait for the first byte, close; resolves with connect-to-first-byte in µs. */
function once(port: number, path: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    let firstByte = 0;
    let opened: LeanWs | undefined;
    LeanWs.open({
      port,
      path,
      onFrame() {
        if (firstByte > 0) return;
        firstByte = performance.now();
        opened?.close();
      },
      onClose() {
        if (firstByte === 0) reject(new Error('closed before the first byte'));
        else resolve((firstByte - t0) * 1000);
      },
    }).then((ws) => {
      opened = ws;
      // The byte may have come with the handshake's answer, before this ran.
      if (firstByte > 0) ws.close();
    }, reject);
  });
}

async function rate(port: number, path: string, pids: number[], concurrency: number, seconds: number): Promise<Rate> {
  const run = async (untilMs: number, histogram?: Histogram) => {
    let count = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < untilMs) {
          const micros = await once(port, path);
          histogram?.record(micros);
          count++;
        }
      }),
    );
    return count;
  };
  await run(performance.now() + 300);
  const histogram = new Histogram();
  const meter = new CpuMeter(pids);
  const t0 = performance.now();
  const count = await run(t0 + seconds * 1000, histogram);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = meter.read();
  return { perSec: count / elapsed, histogram, generatorCpu: cpu.generator, serverCpu: cpu.servers, serverKernelCpu: cpu.serversKernel };
}

/** A WebSocket server that writes one byte on upgrade and ends on the client's close frame. */
async function directServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => res.writeHead(426).end());
  server.on('upgrade', (req, socket: Socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.setNoDelay(true);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.write(ONE_BYTE_SERVER);
    socket.on('data', () => socket.end(Buffer.from([0x88, 0])));
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

export async function rendezvousScenario(mode: Mode): Promise<Outcome> {
  const seconds = mode === 'quick' ? 0.75 : 5;
  const concurrency = 16;
  const scenario = `rendezvous, ${concurrency} at a time`;
  const rows: [string, boolean, Rate][] = [];
  const relay = await startRelay();
  const rendezvousSockets = new Set<LeanWs>();
  const listener = await openLeanListener({
    port: relay.port,
    onAccept: () => ({
      onOpen: (ws) => {
        rendezvousSockets.add(ws);
        ws.sendRaw(ONE_BYTE);
      },
      onClose: () => {},
    }),
  });
  try {
    rows.push(['edge-relay (connect, accept, first byte, close)', true, await rate(relay.port, `/$hc/${ENTITY}?sb-hc-action=connect`, [relay.pid], concurrency, seconds)]);
  } finally {
    listener.destroy();
    for (const ws of rendezvousSockets) ws.destroy();
    await relay.stop();
  }
  const direct = await directServer();
  try {
    rows.push(['direct websocket server (in generator)', false, await rate(direct.port, '/', [], concurrency, seconds)]);
  } finally {
    direct.server.closeAllConnections();
    direct.server.close();
  }
  const results: ScenarioResult[] = rows.map(([system, ours, r]) => ({
    scenario,
    system,
    ours,
    value: r.perSec,
    unit: 'connections/s',
    figures: {
      ...r.histogram.figuresMs(),
      generatorCpu: r.generatorCpu,
      serverCpu: r.serverCpu,
      serverKernelCpu: r.serverKernelCpu,
    },
  }));
  return { results, ratios: [{ scenario, ours: results[0].system, peer: results[1].system, ...quotient(results[0], results[1]) }] };
}
