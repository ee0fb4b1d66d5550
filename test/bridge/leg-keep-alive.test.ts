// Keep-alive on relayed legs (src/bridge/leg-keep-alive.ts): a path between
// the bridges and the relay that goes silent without a word (a NAT or
// firewall that dropped it, the relay's host gone) ends the connections open
// on it, at both ends, as resets. Two bridge processes reach a real relay
// through a TCP proxy the test can freeze: it stops forwarding bytes and
// closes nothing. The relay's publicUrl is the proxy, so -R's legs (dialed
// to the accept's address) go through it too.
import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { cleanupFor } from '../helpers/cleanup.ts';
import { runCli, type CliProcess } from '../helpers/cli-process.ts';
import { ROOT_KEY, ROOT_KEY_NAME, startTestRelay } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

/** The number a bridge's ping carries (masked, a 4-byte payload: 0x89, 0x84, the mask, the number), if the chunk is one. */
function pingNumber(chunk: Buffer): number | undefined {
  if (chunk.length !== 10 || chunk[0] !== 0x89 || chunk[1] !== 0x84) return undefined;
  const number = Buffer.from([0, 1, 2, 3].map((i) => chunk[6 + i] ^ chunk[2 + i]));
  return number.readUInt32BE(0);
}

/** The numbers the relay's pongs in a chunk echo (unmasked: 0x8a, 0x04, the number). */
function pongNumbers(chunk: Buffer): number[] {
  const numbers: number[] = [];
  for (let i = chunk.indexOf(0x8a); i >= 0 && i + 6 <= chunk.length; i = chunk.indexOf(0x8a, i + 1)) {
    if (chunk[i + 1] === 0x04) numbers.push(chunk.readUInt32BE(i + 2));
  }
  return numbers;
}

/**
 * A proxy to 127.0.0.1:`target()`; freeze() stops every connection open so far from forwarding, without closing it.
 * settled(): on every leg (-R's control channel aside), after the last bytes the bridge sent (other than a ping), a
 * pong came back from the relay to a ping sent after them, then another to a ping sent after that pong: the relay has read all of them and read on (a bridge waits
 * for TCP, not its keep-alive, on a leg whose relay may have stopped reading for a far end that does not).
 */
async function freezableProxy(t: Parameters<typeof cleanupFor>[0], target: () => number): Promise<{ url: string; freeze(): void; settled(): boolean }> {
  const pairs: [Socket, Socket][] = [];
  // Per connection, as the bridge keeps it (leg-keep-alive.ts): the latest ping's number, and the ping whose pong
  // is awaited after bytes were sent (stage 1), then after that pong (stage 2; one ping later than the bridge may
  // want, as a ping may pass the pong on its way: settled late, never early).
  const legs = new Map<Socket, { stage: 1 | 2; awaited: number }>();
  const latestPing = new Map<Socket, number>();
  const server = createServer((inbound) => {
    const outbound = connect(target(), '127.0.0.1');
    for (const s of [inbound, outbound]) s.on('error', () => {});
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    let controlChannel: boolean | undefined;
    inbound.on('data', (chunk: Buffer) => {
      // -R's control channel is no leg: its keep-alive is its own (remote-forwarder.ts).
      controlChannel ??= chunk.includes('sb-hc-action=listen');
      if (controlChannel) return;
      const number = pingNumber(chunk);
      if (number !== undefined) latestPing.set(inbound, number);
      else legs.set(inbound, { stage: 1, awaited: (latestPing.get(inbound) ?? 0) + 1 });
    });
    outbound.on('data', (chunk: Buffer) => {
      for (const answered of pongNumbers(chunk)) {
        const leg = legs.get(inbound);
        if (!leg || answered < leg.awaited) continue;
        if (leg.stage === 2) legs.delete(inbound);
        else legs.set(inbound, { stage: 2, awaited: (latestPing.get(inbound) ?? 0) + 2 });
      }
    });
    inbound.on('close', () => {
      legs.delete(inbound);
      latestPing.delete(inbound);
      outbound.destroy();
    });
    outbound.on('close', () => inbound.destroy());
    pairs.push([inbound, outbound]);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanupFor(t).after(() => {
    for (const pair of pairs) for (const s of pair) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    freeze() {
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
    settled: () => legs.size === 0,
  };
}

/** How a socket ended, once it has: 'reset' (an error), 'end' (a clean FIN) or 'close'. */
function outcomeOf(socket: Socket): () => string | undefined {
  let outcome: string | undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => (outcome ??= `reset (${err.code})`));
  socket.on('end', () => (outcome ??= 'end'));
  socket.on('close', () => (outcome ??= 'close'));
  return () => outcome;
}

async function startBridge(t: Parameters<typeof cleanupFor>[0], relayUrl: string, args: string[], ready: RegExp): Promise<CliProcess> {
  const bridge = runCli(t, ['bridge', '--relay', relayUrl, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, '--keepalive', '1', ...args]);
  await until(() => bridge.lines.some((l) => ready.test(l)), 15000, `bridge ready (stderr: ${bridge.stderr()})`);
  return bridge;
}

describe('bridge leg keep-alive', () => {
  it('a path that goes silent resets the open connection at both ends within a bounded time (before: both stayed open for good)', async (t) => {
    let relayPort = 0;
    const proxy = await freezableProxy(t, () => relayPort);
    const relay = await startTestRelay(t, { publicUrl: proxy.url, hybridConnections: [{ name: 'frozen', requiresClientAuthorization: true }] });
    relayPort = Number(new URL(relay.url).port);
    // The target echoes; how its side of the connection ends is kept.
    let targetOutcome: (() => string | undefined) | undefined;
    const targets = new Set<Socket>();
    const target = createServer((s) => {
      targets.add(s);
      targetOutcome = outcomeOf(s);
      s.pipe(s);
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    cleanupFor(t).after(() => {
      for (const s of targets) s.destroy();
      return new Promise<void>((r) => target.close(() => r()));
    });
    const port = (target.address() as { port: number }).port;
    await startBridge(t, proxy.url, ['-R', `frozen:127.0.0.1:${port}`], /^listening on frozen -> /);
    const dialer = await startBridge(t, proxy.url, ['-L', '0:frozen'], /^forwarding /);
    const localPort = Number(/:(\d+) -> /.exec(dialer.lines.find((l) => l.startsWith('forwarding '))!)![1]);

    const client = connect(localPort, '127.0.0.1');
    cleanupFor(t).after(() => client.destroy());
    const clientOutcome = outcomeOf(client);
    client.write('hello');
    await withTimeout(new Promise((r) => client.once('data', r)), 10000, 'the echo through the relay');
    assert.ok(targetOutcome);

    // Frozen once the relay has read all the bridges sent and read on (two pongs after it). Frozen before, a leg waits
    // for TCP: a far end that stops reading looks the same from here (test/bridge/pipe.test.ts).
    await until(() => proxy.settled(), 10000, 'two pongs after the last bytes on every connection');
    proxy.freeze();
    // --keepalive 1: silent for two periods, each leg is cut; 10 s leaves room for a loaded machine.
    await until(() => clientOutcome() !== undefined && targetOutcome!() !== undefined, 10000, 'both ends to hear');
    assert.equal(clientOutcome(), 'reset (ECONNRESET)');
    assert.equal(targetOutcome!(), 'reset (ECONNRESET)');
  });
});
