// Answers are bounded like data (issue 18, defect 2): the pongs, acks and
// `pong` messages the relay writes in answer to a peer queue towards that
// peer, so a peer that keeps asking without reading would grow the relay
// without bound. The relay stops reading such a peer once its configured
// buffer (spliceBufferBytes for relayed legs, outboundBufferBytes for pub/sub
// sockets) is queued to it; TCP then stops the peer. Here the peer is a raw
// socket that never reads: the relay must stop taking its bytes long before
// the flood ends. (test/hostile/floods.test.ts measures the memory of a relay
// process under the same floods.)
import assert from 'node:assert/strict';
import { getDefaultHighWaterMark, setDefaultHighWaterMark } from 'node:stream';
import { describe, it } from 'node:test';
import { accessUrl, pubsubOverrides, RawPubSubClient } from '../helpers/pubsub.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { floodWithoutReading, maskedFrame, rawUpgrade, readUntil } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

const FLOOD_BYTES = 24 << 20;
const STALL_MS = 1000;
const PING = maskedFrame(0x9, Buffer.alloc(125, 0x61));

async function relay(t: Parameters<typeof startTestRelay>[0]) {
  return startTestRelay(
    t,
    pubsubOverrides({
      hybridConnections: [{ name: 'open', requiresClientAuthorization: false }],
      limits: { spliceBufferBytes: 65536, outboundBufferBytes: 65536 },
    }),
  );
}

describe('answers to a peer that does not read', () => {
  it('a relayed leg flooding pings is not read once spliceBufferBytes of pongs wait for it', async (t) => {
    const r = await relay(t);
    const listenUrl = wsUrl(r.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const upgrading = rawUpgrade(t, r.port, '/$hc/open?sb-hc-action=connect');
    const { accept } = await listener.next();
    const leg = await openWebSocket(accept.address);
    t.after(() => leg.terminate());
    const sender = await upgrading;
    const flood = await floodWithoutReading(sender.socket, PING, FLOOD_BYTES, STALL_MS);
    assert.ok(flood.stalled, `the relay took all ${FLOOD_BYTES >> 20} MiB of pings from a sender that reads no pongs`);
    assert.ok(flood.written < FLOOD_BYTES / 2);
  });

  // Sockets' own high-water mark: 16 KiB on Node 20, 64 KiB on Node 22 (set here for the relay in this process).
  for (const socketMark of [16384, 65536]) {
    it(`a pub/sub socket whose answers to one read pass outboundBufferBytes is read again once the kernel took them (sockets' mark ${socketMark >> 10} KiB)`, async (t) => {
      const before = getDefaultHighWaterMark(false);
      setDefaultHighWaterMark(false, socketMark);
      t.after(() => setDefaultHighWaterMark(false, before));
      // The pongs to one 64 KiB read (about 53 KB) pass the 16 KiB cap, so the
      // relay stops reading; the client reads everything, so the kernel takes
      // them in one write, for which Node emits no 'drain'. Reading must resume
      // all the same (before: the socket was never read again).
      const r = await startTestRelay(t, pubsubOverrides({ limits: { outboundBufferBytes: 16384 } }));
      const url = new URL(accessUrl(r.url));
      const client = await rawUpgrade(t, r.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
      assert.equal(client.status, 101);
      const ping = maskedFrame(0x1, '{"type":"ping"}');
      client.socket.write(Buffer.concat(Array.from({ length: 6000 }, () => ping)));
      const pong = Buffer.from('{"type":"pong"}');
      const count = (bytes: Buffer) => {
        let n = 0;
        for (let at = bytes.indexOf(pong); at >= 0; at = bytes.indexOf(pong, at + pong.length)) n++;
        return n;
      };
      await readUntil(client.socket, (bytes) => count(bytes) === 6000, 10000, 'the 6,000 pongs');
      client.socket.write(maskedFrame(0x1, '{"type":"joinGroup","group":"g","ackId":1}'));
      await readUntil(client.socket, (bytes) => bytes.includes('"ackId":1,"success":true'), 5000, 'the ack of a request sent after the pongs');
    });
  }

  for (const [what, frame] of [
    ['WebSocket pings', PING],
    ['{"type":"ping"} messages', maskedFrame(0x1, '{"type":"ping"}')],
    ['acked requests', maskedFrame(0x1, '{"type":"joinGroup","group":"g","ackId":7}')],
  ] as const) {
    it(`a pub/sub socket flooding ${what} is not read once outboundBufferBytes of answers wait for it`, async (t) => {
      const r = await relay(t);
      const url = new URL(accessUrl(r.url));
      const client = await rawUpgrade(t, r.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
      assert.equal(client.status, 101);
      const flood = await floodWithoutReading(client.socket, frame, FLOOD_BYTES, STALL_MS);
      assert.ok(flood.stalled, `the relay took all ${FLOOD_BYTES >> 20} MiB from a client that reads no answers`);
      assert.ok(flood.written < FLOOD_BYTES / 2);
      // Others are served meanwhile.
      const other = await RawPubSubClient.connect(accessUrl(r.url), undefined, t);
      assert.equal((await other.request({ type: 'joinGroup', group: 'g' })).success, true);
    });
  }
});
