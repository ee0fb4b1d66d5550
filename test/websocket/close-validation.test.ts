// What a peer's close frame may carry (RFC 6455 5.5.1, 7.1.5, 7.4.1), checked
// by the frame parser every relay-terminated leg shares: a 1-byte payload or
// a code that may not appear on the wire (1005, 1006, 1015, unassigned) is a
// protocol error (1002), a reason that is not UTF-8 is 1007, and neither is
// passed to the other side of a splice. And a peer that ends its TCP stream
// without a close frame ends its connection at once (issue 18, "Also fix").
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrameParser, type FrameHandler } from '../../src/websocket/frame-parser.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, accessUrl, pubsubOverrides } from '../helpers/pubsub.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade, readFrames, readToClose } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until, withTimeout } from '../helpers/wait.ts';

const OP_CLOSE = 0x8;
const closePayload = (code: number, reason: Buffer | string = '') => Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);

const BAD_CLOSES: [string, Buffer, number][] = [
  ['a 1-byte payload', Buffer.from([0x03]), 1002],
  ['code 1005 on the wire', closePayload(1005), 1002],
  ['code 1006 on the wire', closePayload(1006), 1002],
  ['code 1015 on the wire', closePayload(1015), 1002],
  ['code 999', closePayload(999), 1002],
  ['code 1004', closePayload(1004), 1002],
  ['code 2999', closePayload(2999), 1002],
  ['code 5000', closePayload(5000), 1002],
  ['a reason that is not UTF-8', closePayload(1000, Buffer.from([0x6f, 0x6b, 0xff, 0xfe])), 1007],
];

function parse(frame: Buffer): string[] {
  const events: string[] = [];
  const handler: FrameHandler = {
    onDataFrame: () => events.push('data'),
    onDataPayload: () => {},
    onDataFrameEnd: () => {},
    onControlFrame: (op, p) => events.push(`control ${op} ${p.length}`),
    onFrameError: (code) => events.push(`error ${code}`),
  };
  new FrameParser(handler, { masked: true, maxFrameBytes: 0 }).push(frame);
  return events;
}

/** The close code in the first close frame among `frames`. */
const closeCodeOf = (frames: { opcode: number; payload: Buffer }[]) => frames.find((f) => f.opcode === OP_CLOSE)?.payload.readUInt16BE(0);

describe('close frames the relay will not take', () => {
  for (const [what, payload, code] of BAD_CLOSES) {
    it(`the parser fails a close with ${what} with ${code}`, () => {
      assert.deepEqual(parse(maskedFrame(OP_CLOSE, payload)), [`error ${code}`]);
    });
  }

  it('the parser passes valid close frames: empty, a code, a code with a UTF-8 reason', () => {
    for (const payload of [Buffer.alloc(0), closePayload(1000), closePayload(4999, 'ünïcode'), closePayload(1014)]) {
      assert.deepEqual(parse(maskedFrame(OP_CLOSE, payload)), [`control 8 ${payload.length}`]);
    }
  });

  it('a pub/sub socket answers each with its protocol error', async (t) => {
    const relay = await startTestRelay(t, pubsubOverrides());
    const url = new URL(accessUrl(relay.url));
    for (const [what, payload, code] of BAD_CLOSES) {
      const client = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
      client.socket.write(maskedFrame(OP_CLOSE, payload));
      const frames = await readFrames(client.socket, (f) => f.some((x) => x.opcode === OP_CLOSE), 5000, `close after ${what}`, client.rest);
      assert.equal(closeCodeOf(frames), code, what);
    }
  });

  it('a spliced leg is closed with the protocol error, and the other leg is told only that its peer broke the protocol', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }] });
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    for (const [what, payload, code] of [BAD_CLOSES[0], BAD_CLOSES[2], BAD_CLOSES[8]]) {
      const upgrading = rawUpgrade(t, relay.port, '/$hc/open?sb-hc-action=connect');
      const { accept } = await listener.next();
      const address = new URL(accept.address);
      const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
      const sender = await upgrading;
      sender.socket.write(maskedFrame(OP_CLOSE, payload));
      const toSender = await readFrames(sender.socket, (f) => f.some((x) => x.opcode === OP_CLOSE), 5000, `sender close after ${what}`, sender.rest);
      const toListener = await readFrames(leg.socket, (f) => f.some((x) => x.opcode === OP_CLOSE), 5000, `listener close after ${what}`, leg.rest);
      assert.equal(closeCodeOf(toSender), code, what);
      assert.equal(closeCodeOf(toListener), code, what);
      assert.equal(toListener.find((f) => f.opcode === OP_CLOSE)!.payload.subarray(2).toString(), 'peer protocol error', what);
    }
  });
});

describe('a peer that ends its stream without a close frame', () => {
  it('ends a pub/sub connection at once, not at the keep-alive', async (t) => {
    const relay = await startTestRelay(t, pubsubOverrides());
    const url = new URL(accessUrl(relay.url));
    const client = await rawUpgrade(t, relay.port, `${url.pathname}${url.search}`, { 'Sec-WebSocket-Protocol': 'json.webpubsub.azure.v1' });
    await until(() => relay.pubsub.hub(HUB)!.local.connections.size === 1, 5000, 'the connection open');
    client.socket.end();
    // The keep-alive (idleMs, 70 s by default) would end it too: it must end well before.
    await readToClose(client.socket, 3000, 'the relay to close the connection');
    await until(() => relay.pubsub.hub(HUB)!.local.connections.size === 0, 3000, 'the connection forgotten');
  });

  it('fails an HTTP request whose listener ends its rendezvous leg without a close frame with 502', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'open', requiresClientAuthorization: false }], timeouts: { httpResponseMs: 30000 } });
    const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const pending = httpRequest(`${relay.url}/open/x`, { timeoutMs: 5000 });
    const { request } = await listener.next();
    const address = new URL(request.address);
    const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
    leg.socket.end();
    assert.equal((await withTimeout(pending, 5000, 'the answer')).status, 502);
  });
});
