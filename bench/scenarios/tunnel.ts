// Tunnel throughput: one bulk transfer, sender -> relay -> listener through a
// relayed WebSocket, against the same bytes over a plain loopback TCP
// connection (the ceiling), through socat and through haproxy in tcp mode
// (userspace relays with no framing). The sender writes pre-masked 64 KiB
// frames as fast as its socket takes them; the figure is payload bytes the
// receiving end counted per second (every receiver reads through 'data'
// events, a fresh 64 KiB buffer per read). Three rounds (one in quick mode),
// each a transfer through every system one after the other; a ratio is the
// median of the ratios within a round, a row the median transfer. What a
// tunnel user runs end to end is the bridge scenario.
import { randomBytes } from 'node:crypto';
import { LeanWs, OP_BINARY } from '../lib/lean-ws.ts';
import { openLeanListener } from '../lib/lean-listener.ts';
import type { ScenarioResult } from '../lib/report.ts';
import { ENTITY, startHaproxy, startRelay, startSocat } from '../lib/systems.ts';
import { CHUNK, overTcp, pump, tcpSink, timed, type Transfer } from '../lib/transfer.ts';
import { medianBy, pairedMedian, runRounds, runsOf } from '../lib/rounds.ts';
import { startAll } from '../lib/processes.ts';
import type { Mode, Outcome } from './index.ts';

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

async function overRelay(relayPort: number, relayPid: number, total: number): Promise<Transfer> {
  let received = 0;
  let receiver: LeanWs | undefined;
  const listener = await openLeanListener({
    port: relayPort,
    // The receiver reads as the TCP sink of the other rows does, so the rows differ only in what is between.
    onAccept: () => ({ streamReads: true, onPayloadBytes: (n) => (received += n), onOpen: (ws) => (receiver = ws) }),
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

const RELAYED = 'edge-relay (relayed websocket)';
const DIRECT = 'plain TCP over loopback';
const SOCAT = 'socat';
const HAPROXY = 'haproxy (tcp mode)';

export async function tunnelScenario(mode: Mode): Promise<Outcome> {
  const total = (mode === 'quick' ? 32 : 1024) * 1024 * 1024;
  const roundCount = mode === 'quick' ? 1 : 3;
  const scenario = `tunnel ${total / 1024 / 1024} MiB`;
  const sink = await tcpSink();
  const started: { stop(): Promise<void> }[] = [];
  try {
    const [relay, haproxy] = await startAll(started, [startRelay(), startHaproxy(sink.port)] as const);
    const paths: { system: string; transfer: () => Promise<Transfer> }[] = [
      { system: RELAYED, transfer: () => overRelay(relay.port, relay.pid, total) },
      { system: DIRECT, transfer: () => overTcp(sink.port, sink.received, total, []) },
      {
        system: SOCAT,
        transfer: async () => {
          // socat serves one connection and exits, so each run gets its own.
          const socat = await startSocat(sink.port);
          try {
            return await overTcp(socat.port, sink.received, total, [socat.pid]);
          } finally {
            await socat.stop();
          }
        },
      },
      { system: HAPROXY, transfer: () => overTcp(haproxy.port, sink.received, total, [haproxy.pid]) },
    ];
    const rounds = await runRounds(roundCount, paths, (p) => p.transfer(), scenario);
    const results: ScenarioResult[] = paths.map(({ system }) => {
      const t = medianBy(runsOf(rounds, system), (r) => r.bytesPerSec);
      return {
        scenario,
        system,
        ours: system === RELAYED,
        value: t.bytesPerSec / 1024 / 1024,
        unit: 'MiB/s',
        figures: { bytesPerSec: t.bytesPerSec, bytes: total, generatorCpu: t.generatorCpu, serverCpu: t.serverCpu, serverKernelCpu: t.serverKernelCpu, rounds: roundCount },
      };
    });
    const paired = (peer: string) => pairedMedian(rounds, RELAYED, peer, (o, p) => o.bytesPerSec / p.bytesPerSec);
    const figure = roundCount > 1 ? { figure: `MiB/s, median of ${roundCount} rounds` } : {};
    return {
      results,
      ratios: [
        { scenario, ours: RELAYED, peer: DIRECT, ...figure, ratio: paired(DIRECT), target: 0.5 },
        { scenario, ours: RELAYED, peer: SOCAT, ...figure, ratio: paired(SOCAT), target: 1 },
        { scenario, ours: RELAYED, peer: HAPROXY, ...figure, ratio: paired(HAPROXY) },
      ],
    };
  } finally {
    for (const s of started.reverse()) await s.stop();
    for (const s of sink.sockets) s.destroy();
    sink.server.close();
  }
}
