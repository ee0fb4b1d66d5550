// Peers that write and never read (issue 18, defect 2): every frame the relay
// writes in answer to one (a pong, an ack, a `pong` message) is bounded like
// data is, so a flood of pings or requests from a socket that does not read
// its answers makes the relay stop reading it, and the relay's memory stays
// within its configured buffers. Each case drives a real relay process with
// raw sockets, measures its resident memory from /proc, and checks that the
// relay still answers and that another client is unaffected.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { RawPubSubClient, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { floodWithoutReading, maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { startRelayProcess, tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';

/** What each flood writes: twice the growth the unbounded relay showed for it. */
const FLOOD_BYTES = 64 << 20;
/** The relay's buffers in these tests (64 KiB each), and the bound on its growth. */
const BUFFER_BYTES = 65536;
const MAX_GROWTH = 40 << 20;
/** The flood counts as refused once the relay has taken nothing for this long. */
const STALL_MS = 1500;

const OP_TEXT = 0x1;
const OP_PING = 0x9;

async function hostileRelay(t: TestContext): Promise<RelayProcess> {
  return startRelayProcess(
    t,
    pubsubOverrides({
      hybridConnections: [{ name: 'open', requiresClientAuthorization: false }],
      limits: { spliceBufferBytes: BUFFER_BYTES, outboundBufferBytes: BUFFER_BYTES },
    }),
  );
}

/** Floods `frame` down `socket` without reading; checks the relay's memory, that it still answers, and that another pub/sub client works. */
async function floodAndCheck(t: TestContext, relay: RelayProcess, socket: import('node:net').Socket, frame: Buffer): Promise<void> {
  const before = relay.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, relay.rss())), 25);
  t.after(() => clearInterval(sampler));
  const result = await floodWithoutReading(socket, frame, FLOOD_BYTES, STALL_MS);
  peak = Math.max(peak, relay.rss());
  clearInterval(sampler);
  const growth = peak - before;
  t.diagnostic(`wrote ${(result.written / 2 ** 20).toFixed(1)} MiB (${result.stalled ? 'relay stopped reading' : result.closed ? 'closed' : 'all taken'}), RSS +${(growth / 2 ** 20).toFixed(1)} MiB`);
  assert.ok(result.stalled || result.closed, `the relay took all ${FLOOD_BYTES >> 20} MiB from a peer that does not read`);
  assert.ok(growth < MAX_GROWTH, `RSS grew ${(growth / 2 ** 20).toFixed(1)} MiB`);
  assert.equal(relay.child.exitCode, null, 'the relay is still running');
  assert.equal((await httpRequest(`${relay.url}/$relay/health`)).status, 200);
  const other = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
  assert.equal((await other.request({ type: 'joinGroup', group: 'bystanders' })).success, true, 'another client is served');
}

async function pubsubSocket(t: TestContext, relay: RelayProcess) {
  const url = new URL(accessUrl(relay.url));
  const up = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
  assert.equal(up.status, 101);
  return up.socket;
}

describe('a peer that writes and never reads', () => {
  it('sending pings on a relayed WebSocket is stopped at spliceBufferBytes', async (t) => {
    const relay = await hostileRelay(t);
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const upgrading = rawUpgrade(t, relay.port, '/$hc/open?sb-hc-action=connect');
    const { accept } = await listener.next();
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await upgrading;
    assert.equal(sender.status, 101);
    await floodAndCheck(t, relay, sender.socket, maskedFrame(OP_PING, Buffer.alloc(125, 0x61)));
  });

  it('sending pings on a pub/sub socket is stopped at outboundBufferBytes', async (t) => {
    const relay = await hostileRelay(t);
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), maskedFrame(OP_PING, Buffer.alloc(125, 0x61)));
  });

  it('sending {"type":"ping"} messages is stopped at outboundBufferBytes', async (t) => {
    const relay = await hostileRelay(t);
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), maskedFrame(OP_TEXT, '{"type":"ping"}'));
  });

  it('sending acked sendToGroup requests is stopped at outboundBufferBytes', async (t) => {
    const relay = await hostileRelay(t);
    // One frame repeated: the same ackId is answered Duplicate every time after the first.
    const frame = maskedFrame(OP_TEXT, JSON.stringify({ type: 'sendToGroup', group: 'nobody', ackId: 1, data: 'x' }));
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), frame);
  });

  it('a listener pinging its HTTP-mode rendezvous leg without reading is stopped at spliceBufferBytes', async (t) => {
    const relay = await hostileRelay(t);
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const pending = httpRequest(`${relay.url}/open/x`, { timeoutMs: 60000 }).catch(() => undefined);
    const { request } = await listener.next();
    const path = new URL(request.address);
    const leg = await rawUpgrade(t, relay.port, `${path.pathname}${path.search}`);
    assert.equal(leg.status, 101);
    await floodAndCheck(t, relay, leg.socket, maskedFrame(OP_PING, Buffer.alloc(125, 0x61)));
    leg.socket.destroy();
    await pending;
  });
});
