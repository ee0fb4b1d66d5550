// Deeply nested JSON at a relay process (issue 18, defect 3): 10,000 levels
// of `[` in a pub/sub frame, a REST body, a control-channel message and a
// rendezvous response head are each refused on their own path, and the
// process stays up with every other client served. (Unbounded, one such
// sendToGroup ended the process: RangeError in JSON.stringify, exit 1.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signJwt } from '../../src/auth/jwt.ts';
import { MAX_RSS_GROWTH, assertStillServing, measuringRss, mib, startHostileRelay } from '../helpers/hostile.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, RawPubSubClient, accessUrl } from '../helpers/pubsub.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { maskedFrame, rawUpgrade } from '../helpers/raw-socket.ts';
import { tokenFor, wsUrl } from '../helpers/relay.ts';
import { withTimeout } from '../helpers/wait.ts';

const DEEP = '['.repeat(10000) + ']'.repeat(10000);

describe('deeply nested JSON against a relay process', () => {
  it('refuses it on every path that parses JSON, and keeps serving', async (t) => {
    const relay = await startHostileRelay(t);
    const { growth } = await measuringRss(relay, async () => {
      // Pub/sub frames: that client alone is closed.
      for (const type of ['sendToGroup', 'event', 'joinGroup']) {
        const hostile = await RawPubSubClient.connect(accessUrl(relay.url), undefined, t);
        hostile.send(`{"type":"${type}","group":"g","event":"e","ackId":1,"data":${DEEP}}`);
        assert.equal((await withTimeout(hostile.closed, 5000, `close after a deep ${type}`)).code, 1008, type);
      }
      // REST: 400.
      const url = `${relay.url}/api/hubs/${HUB}/groups/g/:send`;
      const rest = await httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` },
        body: Buffer.from(DEEP),
      });
      assert.equal(rest.status, 400);
      // A listener's control channel: 1008.
      const listenUrl = wsUrl(relay.url, '/$hc/open?sb-hc-action=listen');
      const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
      t.after(() => listener.close());
      const pending = httpRequest(`${relay.url}/open/deep`, { timeoutMs: 10000 });
      const { request } = await listener.next();
      // The same request answered on its rendezvous with a deep head: 502 to the sender.
      const address = new URL(request.address);
      const leg = await rawUpgrade(t, relay.port, `${address.pathname}${address.search}`);
      leg.socket.write(maskedFrame(0x1, `{"response":${DEEP}}`));
      assert.equal((await pending).status, 502);
      listener.ws.send(`{"response":${DEEP}}`);
      assert.equal((await withTimeout(listener.closed, 5000, 'the control channel closed')).code, 1008);
    });
    t.diagnostic(`RSS +${mib(growth)}`);
    assert.ok(growth < MAX_RSS_GROWTH, `RSS grew ${mib(growth)}`);
    await assertStillServing(t, relay);
  });
});
