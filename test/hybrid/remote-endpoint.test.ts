// The sender's address a listener is told (remoteEndpoint of a request or an accept), when the relay listens on
// `::` (dual stack): an IPv4 sender is named as IPv4, as on a relay listening on 0.0.0.0, not as Node reports its
// peer (::ffff:127.0.0.1). Found by audit: a listener's allow list or log of IPv4 addresses saw another form.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { listenOn, openWebSocket } from '../helpers/raw-listener.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';

describe('the sender a listener is told of, on a relay listening on ::', () => {
  it('is an IPv4 address for an IPv4 sender, for a relayed request and a relayed WebSocket', async (t) => {
    const relay = await startTestRelay(t, { listen: { host: '::', port: 0 } });
    const base = `http://127.0.0.1:${relay.port}`;
    const listener = await listenOn(t, base, 'echo');

    const target = `${base}/echo/who`;
    let senderPort = 0;
    const sent = request(target, { headers: { ServiceBusAuthorization: tokenFor(target) }, agent: false });
    sent.on('socket', (s) => s.on('connect', () => (senderPort = s.localPort!)));
    sent.on('error', () => {});
    sent.end();
    const { request: notice } = await listener.next<{ request: { remoteEndpoint: { address: string; port: number } } }>();
    assert.deepEqual(notice.remoteEndpoint, { address: '127.0.0.1', port: senderPort });
    sent.destroy();

    const connectUrl = wsUrl(base, '/$hc/echo?sb-hc-action=connect');
    const sender = openWebSocket(connectUrl, { headers: { ServiceBusAuthorization: tokenFor(connectUrl) } });
    sender.catch(() => undefined);
    const { accept } = await listener.next<{ accept: { address: string; remoteEndpoint: { address: string; port: number } } }>();
    assert.equal(accept.remoteEndpoint.address, '127.0.0.1');
    (await openWebSocket(accept.address)).terminate();
    (await sender).terminate();
  });
});
