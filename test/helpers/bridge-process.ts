// `edge-relay bridge` as a test starts it: a process with the relay's root key, ready once it printed what it
// forwards, and how a socket through it ends.
import { connect, type Socket } from 'node:net';
import { cleanupFor } from './cleanup.ts';
import type { TestContext } from 'node:test';
import { runCli, type CliProcess } from './cli-process.ts';
import { ROOT_KEY, ROOT_KEY_NAME } from './relay.ts';
import { until, withTimeout } from './wait.ts';

export type BridgeProcess = CliProcess;

/** Starts `edge-relay bridge ARGS`; resolves once it printed `ready` lines matching each pattern. */
export async function startBridge(t: TestContext, relayUrl: string, args: string[], ready: RegExp[]): Promise<BridgeProcess> {
  const bridge = runCli(t, ['bridge', '--relay', relayUrl, '--key-name', ROOT_KEY_NAME, '--key', ROOT_KEY, ...args]);
  await until(() => ready.every((r) => bridge.lines.some((l) => r.test(l))), 10000, `bridge ready: ${ready.join(', ')}`);
  return bridge;
}

/** The local port a `-L` bridge listens on (its `forwarding` line). */
export function localPort(bridge: BridgeProcess): number {
  const line = bridge.lines.find((l) => l.startsWith('forwarding '))!;
  return Number(/:(\d+) -> /.exec(line)![1]);
}

/** How a socket ends, its data read and dropped: 'end' (a clean end: FIN) or 'reset' (ECONNRESET, or another error). */
export function howItEnds(socket: Socket, timeoutMs = 10000): Promise<'end' | 'reset'> {
  return withTimeout(
    new Promise<'end' | 'reset'>((resolve) => {
      socket.on('data', () => {});
      // A reset can surface on the writing side first: Linux hands a socket's error to the first call that meets it,
      // and a read after that sees only the end. An end followed at once by an error is a reset.
      socket.once('end', () => setTimeout(() => resolve(socket.errored ? 'reset' : 'end'), 300));
      socket.once('error', () => resolve('reset'));
    }),
    timeoutMs,
    'the socket to end',
  );
}

/** A connection to a `-L` bridge's local port, destroyed with the test; its errors are the test's to observe (howItEnds). */
export function dialThrough(t: TestContext, bridge: BridgeProcess): Socket {
  const socket = connect({ host: '127.0.0.1', port: localPort(bridge) });
  cleanupFor(t).after(() => socket.destroy());
  socket.on('error', () => {});
  return socket;
}
