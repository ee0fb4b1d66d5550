// Takes the screenshots in docs/images/ (one per view of the dashboard, and
// the overview at a phone's width) against a two-edge cluster under a small,
// varying load: HTTP listeners and WebSocket listeners on both edges, relayed
// requests (some to a hybrid connection nobody listens on), relayed
// WebSockets streaming, pub/sub clients in a few groups and a publisher.
//
//   node --import tsx test/browser/screenshots.ts [--seconds 150] [--out docs/images]
//
// Not a test (its name does not end in .test.ts): run it when the page changes.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { openBrowser } from '../helpers/browser.ts';
import { Cleanup } from '../helpers/cleanup.ts';
import { startCluster } from '../helpers/cluster.ts';
import { httpRequest } from '../helpers/http.ts';
import { startHycoHttpsListener, startHycoWsListener } from '../helpers/hyco.ts';
import { RawPubSubClient, RELIABLE, accessUrl } from '../helpers/pubsub.ts';
import { ROOT_KEY, ROOT_KEY_NAME, wsUrl } from '../helpers/relay.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '150' }, out: { type: 'string', default: 'docs/images' } } });
const seconds = Number(values.seconds);
const out = values.out!;
mkdirSync(out, { recursive: true });

const cleanup = new Cleanup();
const t = { after: (fn: () => unknown) => cleanup.after(fn) };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const open = (name: string) => ({ name, requiresClientAuthorization: false });

async function main(): Promise<void> {
  const { edges } = await startCluster(t, 2, {
    log: { level: 'warn' },
    hybridConnections: ['orders', 'inventory', 'billing', 'telemetry', 'archive'].map(open),
  });
  const [a, b] = edges;
  const answer = (_req: unknown, res: { end(body: string): void }) => setTimeout(() => res.end('{"ok":true}'), Math.random() * 20);
  await startHycoHttpsListener(t, a.url, answer, 'orders');
  await startHycoHttpsListener(t, b.url, answer, 'orders');
  await startHycoHttpsListener(t, b.url, answer, 'inventory');
  await startHycoHttpsListener(t, a.url, answer, 'billing');
  await startHycoWsListener(t, b.url, (ws) => ws.on('message', (m: Buffer) => ws.send(m)), 'telemetry');
  await startHycoWsListener(t, a.url, (ws) => ws.on('message', (m: Buffer) => ws.send(m)), 'telemetry');

  // Pub/sub: clients on both edges in a few groups; two reliable ones.
  const groups: [string, number][] = [['room-1', 14], ['lobby', 9], ['alerts', 5], ['ops', 3]];
  const subscribers: RawPubSubClient[] = [];
  let n = 0;
  for (const [group, members] of groups) {
    for (let i = 0; i < members; i++, n++) {
      const edge = n % 2 === 0 ? a : b;
      // Reliable clients where few events go: these ones never acknowledge, and a busy group would fill their sessions.
      const client = await RawPubSubClient.connect(accessUrl(edge.url, { userId: `user-${n}` }), group === 'ops' ? RELIABLE : undefined, t);
      await client.request({ type: 'joinGroup', group });
      subscribers.push(client);
    }
  }
  const publisher = await RawPubSubClient.connect(accessUrl(a.url, { userId: 'publisher' }), undefined, t);

  // Relayed WebSockets streaming through edge-a to the listeners.
  const senders: WebSocket[] = [];
  for (let i = 0; i < 3; i++) {
    const ws = new WebSocket(wsUrl(a.url, '/$hc/telemetry?sb-hc-action=connect'));
    ws.on('error', () => {});
    await new Promise((resolve) => ws.once('open', resolve));
    senders.push(ws);
  }
  t.after(() => senders.forEach((ws) => ws.terminate()));

  let running = true;
  const started = Date.now();
  const wave = () => 1 + Math.sin((Date.now() - started) / 20000);
  const load = (async () => {
    const chunk = Buffer.alloc(4096, 1);
    while (running) {
      const w = wave();
      const jobs: Promise<unknown>[] = [];
      for (let i = 0; i < Math.round(3 * w) + 1; i++) jobs.push(httpRequest(`${b.url}/orders/items/${i}?page=1`).catch(() => undefined));
      if (Math.random() < 0.6) jobs.push(httpRequest(`${a.url}/inventory/stock`).catch(() => undefined));
      if (Math.random() < 0.3) jobs.push(httpRequest(`${a.url}/billing/invoices`, { method: 'POST', body: Buffer.from('{}') }).catch(() => undefined));
      if (Math.random() < 0.1) jobs.push(httpRequest(`${b.url}/archive/2024`).catch(() => undefined));
      for (let i = 0; i < Math.round(6 * w); i++) publisher.send({ type: 'sendToGroup', group: i % 3 === 0 ? 'lobby' : 'room-1', data: { n: i } });
      if (Math.random() < 0.2) publisher.send({ type: 'sendToGroup', group: 'alerts', data: 'check' });
      for (const ws of senders) for (let i = 0; i < Math.round(4 * w); i++) ws.send(chunk);
      if (Math.random() < 0.4) {
        // A short relayed WebSocket: connect, one message, close.
        const brief = new WebSocket(wsUrl(b.url, '/$hc/telemetry?sb-hc-action=connect'));
        brief.on('error', () => {});
        brief.once('open', () => brief.send(chunk));
        brief.once('message', () => brief.close());
      }
      await Promise.all(jobs);
      await sleep(200);
    }
  })();

  const { page } = await openBrowser(t);
  await page.goto(`${a.url}/$relay/dashboard`);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#key-name', ROOT_KEY_NAME);
  await page.screenshot({ path: join(out, 'dashboard-login.png') });
  await page.fill('#key', ROOT_KEY);
  await page.click('#sign-in');
  await page.waitForSelector('#tabs:not([hidden])');
  process.stderr.write(`screenshots: collecting ${seconds} s of samples...\n`);
  await sleep(seconds * 1000);
  await page.screenshot({ path: join(out, 'dashboard-overview.png') });
  await page.click('#tab-hybrid');
  await sleep(1500);
  await page.screenshot({ path: join(out, 'dashboard-hybrid.png') });
  await page.click('#tab-hubs');
  await sleep(1500);
  await page.screenshot({ path: join(out, 'dashboard-hubs.png') });
  await page.click('#tab-trace');
  await page.fill('#trace-filters input[name=hub]', '');
  await sleep(4000);
  await page.click('#trace-pause');
  await page.screenshot({ path: join(out, 'dashboard-trace.png') });
  await page.click('#trace-pause');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('#tab-overview');
  await sleep(2000);
  await page.screenshot({ path: join(out, 'dashboard-phone.png') });
  running = false;
  await load;
  process.stderr.write(`screenshots: written to ${out}\n`);
}

main()
  .then(
    () => 0,
    (err) => {
      process.stderr.write(`screenshots failed: ${err instanceof Error ? err.stack : err}\n`);
      return 1;
    },
  )
  .then(async (code) => {
    await cleanup.run();
    process.exit(code);
  });
