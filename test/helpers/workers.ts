// Helpers of the `serve --workers` tests (test/cluster/workers*.test.ts,
// worker-restarts.test.ts): an echo listener and sender on entity echo, and
// the primary's worker processes read from /proc.
import { readFileSync, readdirSync } from 'node:fs';
import WebSocket from 'ws';
import { cleanupFor } from './cleanup.ts';
import { RawListener } from './raw-listener.ts';
import { tokenFor, wsUrl } from './relay.ts';
import { until, withTimeout } from './wait.ts';

export async function echoOnce(url: string, text: string): Promise<string> {
  const ws = new WebSocket(wsUrl(url, '/$hc/echo?sb-hc-action=connect'), { headers: { ServiceBusAuthorization: tokenFor(wsUrl(url, '/$hc/echo')) } });
  try {
    await withTimeout(new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject))), 10000, 'sender open');
    const reply = withTimeout(new Promise<string>((resolve) => ws.once('message', (m) => resolve(String(m)))), 10000, 'echo');
    ws.send(text);
    return await reply;
  } finally {
    ws.terminate();
  }
}

/** The worker processes of the primary `pid` (its children running the CLI, not tsx's esbuild service), from /proc. */
export function workerPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('edge-relay.js')) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/** Kills one of the primary's two workers (SIGKILL) and waits until the primary has forked its successor: the pid killed. */
export async function killWorkerUntilForkedAgain(primary: number): Promise<number> {
  const [killed] = workerPids(primary);
  process.kill(killed, 'SIGKILL');
  await until(() => {
    const pids = workerPids(primary);
    return pids.length === 2 && !pids.includes(killed);
  }, 10000, 'the new worker to be forked');
  return killed;
}

/** A raw listener on entity echo whose legs echo; closed with the test. */
export async function echoListener(t: Parameters<typeof cleanupFor>[0], url: string): Promise<RawListener> {
  const listener = await RawListener.connect(wsUrl(url, '/$hc/echo?sb-hc-action=listen'), tokenFor(wsUrl(url, '/$hc/echo')));
  cleanupFor(t).after(() => listener.ws.terminate());
  listener.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const accept = (JSON.parse(String(data)) as { accept?: { address: string } }).accept;
    if (!accept) return;
    const leg = new WebSocket(accept.address);
    leg.on('message', (m) => leg.send(String(m)));
    leg.on('error', () => leg.terminate());
    cleanupFor(t).after(() => leg.terminate());
  });
  return listener;
}
