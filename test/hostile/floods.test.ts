// Peers that write and never read (issue 18, defect 2): every frame the relay
// writes in answer to one (a pong, an ack, a `pong` message) is bounded like
// data is, so a flood of pings or requests from a socket that does not read
// its answers makes the relay stop reading it, and the relay's memory stays
// within its configured buffers. Each case drives a real relay process with
// raw sockets, measures its resident memory from /proc, and checks that the
// relay still answers and that other clients are unaffected.
// (Unbounded, 64 MiB of pings grew the relay by 159 MiB.)
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { MAX_RSS_GROWTH, assertStillServing, measuringRss, mib, startHostileRelay } from '../helpers/hostile.ts';
import { httpRequest } from '../helpers/http.ts';
import { accessUrl } from '../helpers/pubsub.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { floodWithoutReading, maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';

const FLOOD_BYTES = 64 << 20;
/** The flood counts as refused once the relay has taken nothing for this long. */
const STALL_MS = 1500;

const OP_TEXT = 0x1;
const OP_PING = 0x9;
const PING = maskedFrame(OP_PING, Buffer.alloc(125, 0x61));

/** Floods `frame` down `socket` without reading; checks the relay's memory, and that it still serves others. */
async function floodAndCheck(t: TestContext, relay: RelayProcess, socket: Socket, frame: Buffer): Promise<void> {
  const { result, growth } = await measuringRss(relay, () => floodWithoutReading(socket, frame, FLOOD_BYTES, STALL_MS));
  t.diagnostic(`wrote ${mib(result.written)} (${result.stalled ? 'relay stopped reading' : result.closed ? 'closed' : 'all taken'}), RSS +${mib(growth)}`);
  assert.ok(result.stalled || result.closed, `the relay took all ${mib(FLOOD_BYTES)} from a peer that does not read`);
  assert.ok(growth < MAX_RSS_GROWTH, `RSS grew ${mib(growth)}`);
  await assertStillServing(t, relay);
}

async function pubsubSocket(t: TestContext, relay: RelayProcess): Promise<Socket> {
  const url = new URL(accessUrl(relay.url));
  const up = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
  assert.equal(up.status, 101);
  return up.socket;
}

describe('a peer that writes and never reads', () => {
  it('sending pings on a relayed WebSocket is stopped at spliceBufferBytes', async (t) => {
    const relay = await startHostileRelay(t);
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const upgrading = rawUpgrade(t, relay.port, '/$hc/open?sb-hc-action=connect');
    const { accept } = await listener.next();
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await upgrading;
    assert.equal(sender.status, 101);
    await floodAndCheck(t, relay, sender.socket, PING);
  });

  it('sending pings on a pub/sub socket is stopped at outboundBufferBytes', async (t) => {
    const relay = await startHostileRelay(t);
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), PING);
  });

  it('sending {"type":"ping"} messages is stopped at outboundBufferBytes', async (t) => {
    const relay = await startHostileRelay(t);
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), maskedFrame(OP_TEXT, '{"type":"ping"}'));
  });

  it('sending acked sendToGroup requests is stopped at outboundBufferBytes', async (t) => {
    const relay = await startHostileRelay(t);
    // One frame repeated: the same ackId is answered Duplicate every time after the first.
    const frame = maskedFrame(OP_TEXT, JSON.stringify({ type: 'sendToGroup', group: 'nobody', ackId: 1, data: 'x' }));
    await floodAndCheck(t, relay, await pubsubSocket(t, relay), frame);
  });

  it('a listener pinging its HTTP-mode rendezvous leg without reading is stopped at spliceBufferBytes', async (t) => {
    const relay = await startHostileRelay(t);
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const pending = httpRequest(`${relay.url}/open/x`, { timeoutMs: 60000 }).catch(() => undefined);
    const { request } = await listener.next();
    const path = new URL(request.address);
    const leg = await rawUpgrade(t, relay.port, `${path.pathname}${path.search}`);
    assert.equal(leg.status, 101);
    await floodAndCheck(t, relay, leg.socket, PING);
    leg.socket.destroy();
    await pending;
  });

  it('a listener pinging its control channel without reading is dropped (ws bounds its pongs)', async (t) => {
    const relay = await startHostileRelay(t);
    const path = '/$hc/open?sb-hc-action=listen';
    const channel = await rawUpgrade(t, relay.port, path, { ServiceBusAuthorization: tokenFor(wsUrl(relay.url, path)) });
    assert.equal(channel.status, 101);
    await floodAndCheck(t, relay, channel.socket, PING);
  });
});
