// One structured line per connection event, correlated by sb-hc-id, and
// never a token or key, even at debug level.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cleanup } from '../helpers/cleanup.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener, openWebSocket } from '../helpers/raw-listener.ts';
import { ROOT_KEY, startRelayProcess, tokenFor, wsUrl, type RelayProcess } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

describe('connection event logs', () => {
  const cleanup = new Cleanup();
  let relay: RelayProcess;
  before(async () => {
    relay = await startRelayProcess(cleanup, { log: { level: 'debug' } });
  });
  after(() => cleanup.run());

  it('carry the tracking id and no credential', async (t) => {
    const listenUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=listen&sb-hc-id=trk-listen-1');
    const listenToken = tokenFor(listenUrl);
    const listener = await RawListener.connect(listenUrl, listenToken);
    t.after(() => listener.close());
    const senderUrl = wsUrl(relay.url, '/$hc/echo?sb-hc-action=connect&sb-hc-id=trk-send-1');
    const senderToken = tokenFor(senderUrl);
    const opening = openWebSocket(`${senderUrl}&sb-hc-token=${encodeURIComponent(senderToken)}`);
    const { accept } = await listener.next();
    const leg = await openWebSocket(accept.address);
    const sender = await opening;
    sender.close(1000);
    const httpUrl = `${relay.url}/echo/x?sb-hc-id=trk-http-1`;
    const pending = httpRequest(httpUrl, { headers: { ServiceBusAuthorization: tokenFor(httpUrl) } });
    const { request } = await listener.next();
    listener.ws.send(JSON.stringify({ response: { requestId: request.id, statusCode: 204 } }));
    assert.equal((await pending).status, 204);
    leg.terminate();

    await until(() => relay.stderr().includes('"connect.closed"') && relay.stderr().includes('"http.response"'), 5000, 'log lines');
    const lines = relay.stderr().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const events = (trackingId: string) => lines.filter((l) => l.trackingId === trackingId).map((l) => l.event);
    assert.ok(events('trk-listen-1').includes('listener.connected'));
    assert.deepEqual(
      events('trk-send-1').filter((e) => String(e).startsWith('connect.')),
      ['connect.accept_sent', 'connect.spliced', 'connect.closed'],
    );
    assert.ok(events('trk-http-1').includes('http.response'));
    for (const l of lines) assert.equal(l.node !== undefined, true, 'every line names the node');
    const all = relay.stderr();
    for (const secret of [ROOT_KEY, 'SharedAccessSignature', listenToken.split('sig=')[1].split('&')[0]]) {
      assert.ok(!all.includes(secret), `logs must not contain ${secret.slice(0, 12)}…`);
    }
  });
});
