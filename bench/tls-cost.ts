// What TLS costs the relay (issue 14): `node --import tsx bench/tls-cost.ts [--mib N] [--requests N]`.
// Not one of npm run bench's scenarios: a standalone comparison of two relay
// processes on 127.0.0.1, one plain and one with listen.tls (an ECDSA P-256
// certificate from a throwaway CA made with openssl), measuring from this
// process: a new connection per request (TCP, plus the TLS handshake), requests
// on one kept-alive connection, and a relayed WebSocket carrying N MiB from a
// sender to a listener's rendezvous leg in 64 KiB frames. Figures depend on
// the machine and its load; compare the two columns, not the absolute values.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { createSasToken, resourceForUrl } from '../src/auth/sas-token.ts';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '256' }, requests: { type: 'string', default: '500' } } });
const MIB = Number(values.mib);
const REQUESTS = Number(values.requests);
const ROOT = new URL('..', import.meta.url).pathname;
const KEY = 'bench-key-0123456789abcdef0123456789';
const FRAME = 64 * 1024;

function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench CA']);
  writeFileSync(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'ext']);
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
}

async function startRelay(dir: string, name: string, tls?: { cert: string; key: string }): Promise<{ url: string; child: ChildProcess }> {
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listen: { host: '127.0.0.1', port: 0, ...(tls ? { tls: { certFile: tls.cert, keyFile: tls.key } } : {}) },
      log: { level: 'warn' },
      sas: [{ keyName: 'root', key: KEY, rights: ['Manage'] }],
      hybridConnections: [{ name: 'bench', requiresClientAuthorization: true }],
      limits: { connectRatePerAddress: 0, connectionsPerAddress: 0, httpConnectionsPerAddress: 0 },
    }),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`relay exited ${code}`)));
  });
  return { url, child };
}

const token = (url: string) => createSasToken(resourceForUrl(url), 'root', KEY, Math.floor(Date.now() / 1000) + 3600);

function get(url: string, agent: HttpAgent | HttpsAgent | false, ca: Buffer): Promise<void> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { agent, ca }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
}

async function requestsMs(url: string, ca: Buffer, keepAlive: boolean): Promise<{ mean: number; p50: number }> {
  const agent = keepAlive ? (url.startsWith('https:') ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ca }) : new HttpAgent({ keepAlive: true, maxSockets: 1 })) : false;
  const times: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const start = process.hrtime.bigint();
    await get(`${url}/$relay/health`, agent, ca);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  if (agent) agent.destroy();
  times.sort((a, b) => a - b);
  return { mean: times.reduce((a, b) => a + b, 0) / times.length, p50: times[Math.floor(times.length / 2)] };
}

async function relayedMiBps(url: string, ca: Buffer, mib = MIB): Promise<number> {
  const ws = url.replace(/^http/, 'ws');
  const listenUrl = `${ws}/$hc/bench?sb-hc-action=listen`;
  const control = new WebSocket(listenUrl, { ca, headers: { ServiceBusAuthorization: token(listenUrl) } });
  await new Promise((r, j) => (control.once('open', r), control.once('error', j)));
  const total = mib * 1024 * 1024;
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  control.on('message', (m) => {
    const accept = JSON.parse(String(m)).accept;
    if (!accept) return;
    const leg = new WebSocket(accept.address, { ca });
    leg.on('message', (data: Buffer) => {
      received += data.length;
      if (received >= total) done();
    });
  });
  const sendUrl = `${ws}/$hc/bench?sb-hc-action=connect`;
  const sender = new WebSocket(sendUrl, { ca, headers: { ServiceBusAuthorization: token(sendUrl) } });
  await new Promise((r, j) => (sender.once('open', r), sender.once('error', j)));
  const frame = Buffer.alloc(FRAME, 7);
  const start = process.hrtime.bigint();
  for (let sent = 0; sent < total; sent += FRAME) {
    // Keep about 4 MiB queued: the relay's backpressure decides the pace.
    if (sender.bufferedAmount > 4 * 1024 * 1024) await new Promise<void>((r) => sender.send(frame, () => r()));
    else sender.send(frame);
  }
  await finished;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  sender.terminate();
  control.terminate();
  return mib / seconds;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-relay-tls-cost-'));
  const relays: ChildProcess[] = [];
  try {
    const certs = makeCerts(dir);
    const ca = readFileSync(certs.ca);
    const plain = await startRelay(dir, 'plain');
    const secure = await startRelay(dir, 'tls', certs);
    relays.push(plain.child, secure.child);
    // Warm-up (JIT, buffers) on both, so that the first measured is not the slower for it.
    for (const relay of [plain, secure]) {
      await requestsMs(relay.url, ca, false);
      await relayedMiBps(relay.url, ca, Math.min(64, MIB));
    }
    const rows: [string, string, string][] = [];
    for (const [what, measure] of [
      ['new connection per request, mean / p50 ms', (u: string) => requestsMs(u, ca, false).then((r) => `${r.mean.toFixed(2)} / ${r.p50.toFixed(2)}`)],
      ['kept-alive connection, mean / p50 ms', (u: string) => requestsMs(u, ca, true).then((r) => `${r.mean.toFixed(2)} / ${r.p50.toFixed(2)}`)],
      [`relayed WebSocket, ${MIB} MiB, MiB/s`, (u: string) => relayedMiBps(u, ca).then((r) => r.toFixed(0))],
    ] as const) {
      rows.push([what, await measure(plain.url), await measure(secure.url)]);
    }
    console.log(`| ${REQUESTS} requests / ${MIB} MiB | plain | TLS |\n| --- | --- | --- |`);
    for (const [what, a, b] of rows) console.log(`| ${what} | ${a} | ${b} |`);
  } finally {
    for (const child of relays) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
