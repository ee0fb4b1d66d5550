// A listener trying to split responses at a relay process (issue 18, defect
// 1): on the control channel and on the rendezvous, with Content-Lengths that
// run short, run long, disagree or are not numbers, and bodies that carry a
// forged response. The sender, reading its kept-alive connection off the
// wire, never reads more than one response per request and never waits past
// the answer; a well-behaved listener on the same relay is served normally
// throughout.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_RSS_GROWTH, assertStillServing, measuringRss, mib, startHostileRelay } from '../helpers/hostile.ts';
import { startHycoHttpsListener } from '../helpers/hyco.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade, tcp } from '../helpers/raw-socket.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const FORGED = 'HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-injected: yes\r\n\r\ninjected';
/** Well under the keep-alive timeout (5 s) a sender would otherwise wait out. */
const ANSWERED_WITHIN_MS = 3000;

const ATTEMPTS: { headers: Record<string, unknown>; body: string; via: 'control' | 'rendezvous' }[] = [
  { headers: { 'content-length': '2' }, body: `ok${FORGED}`, via: 'control' },
  { headers: { 'content-length': '2' }, body: `ok${FORGED}`, via: 'rendezvous' },
  { headers: { 'content-length': ['2', '50'] }, body: `ok${FORGED}`, via: 'control' },
  { headers: { 'Content-Length': '2', 'content-length': '91' }, body: `ok${FORGED}`, via: 'rendezvous' },
  { headers: { 'content-length': '1000' }, body: 'short', via: 'control' },
  { headers: { 'content-length': '1000' }, body: 'short', via: 'rendezvous' },
  { headers: { 'content-length': '0x10', 'transfer-encoding': 'identity' }, body: FORGED, via: 'control' },
  { headers: { 'content-length': ' 2 ' }, body: `ok${FORGED}`, via: 'control' },
];

/** True once `bytes` hold a response head and the body its Content-Length names. */
function wholeResponse(bytes: string): boolean {
  const end = bytes.indexOf('\r\n\r\n');
  const length = end < 0 ? null : /\r\ncontent-length: (\d+)/i.exec(bytes.slice(0, end));
  return length !== null && bytes.length - end - 4 >= Number(length[1]);
}

describe('response splitting by a listener, against a relay process', () => {
  it('never lets a sender read a forged response or wait for a body that will not come', async (t) => {
    const relay = await startHostileRelay(t);
    await startHycoHttpsListener(t, relay.url, (req, res) => res.end(`fine ${req.url}`), 'echo');
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const { growth } = await measuringRss(relay, async () => {
      for (const attempt of ATTEMPTS) {
        const what = `${JSON.stringify(attempt.headers)} via ${attempt.via}`;
        const sender = await tcp(t, relay.port);
        let received = '';
        let closed = false;
        sender.on('data', (d: Buffer) => (received += d.toString('latin1')));
        sender.on('close', () => (closed = true));
        sender.write('GET /open/split HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        const { request } = await listener.next();
        const head = { response: { requestId: request.id, statusCode: 200, responseHeaders: attempt.headers, body: true } };
        if (attempt.via === 'control') {
          listener.ws.send(JSON.stringify(head));
          listener.ws.send(Buffer.from(attempt.body));
        } else {
          const address = new URL(request.address);
          const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
          leg.socket.write(maskedFrame(0x1, JSON.stringify(head)));
          leg.socket.write(maskedFrame(0x2, attempt.body));
        }
        const started = Date.now();
        // The connection is cut, or a whole response (the relay's 502) arrives: either way no waiting.
        await until(() => closed || wholeResponse(received), ANSWERED_WITHIN_MS + 2000, what);
        // Anything forged would follow at once.
        await new Promise((r) => setTimeout(r, 200));
        const text = received;
        assert.ok((text.match(/HTTP\/1\.1 \d{3}/g) ?? []).length <= 1, `${what}: ${JSON.stringify(text)}`);
        assert.ok(!/^x-injected:/im.test(text), what);
        assert.ok(Date.now() - started < ANSWERED_WITHIN_MS, `${what}: answered after ${Date.now() - started} ms`);
        // A well-behaved listener meanwhile.
        const fine = await httpRequest(`${relay.url}/echo/x`, { headers: { ServiceBusAuthorization: tokenFor(`${relay.url}/echo/x`) } });
        assert.deepEqual([fine.status, String(fine.body)], [200, 'fine /echo/x']);
      }
    });
    t.diagnostic(`${ATTEMPTS.length} splitting attempts: RSS +${mib(growth)}`);
    assert.ok(growth < MAX_RSS_GROWTH);
    await assertStillServing(t, relay);
  });
});
