// ListenerPresence (src/server/listener-presence.ts): the order and the
// retries of presence notices, with a send whose answers the test controls
// (the relay's own seam: the real group send is tested with NATS and JetStream
// in test/cluster/jetstream.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ListenerPresenceNotice } from '../../src/hybrid/hybrid-service.ts';
import { ListenerPresence } from '../../src/server/listener-presence.ts';
import { captureLogger } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

function notice(type: ListenerPresenceNotice['type'], listeners: number, entity = 'echo'): ListenerPresenceNotice {
  return { type, entity, listeners, edge: 'edge-a', hub: 'ops', group: 'listeners' };
}

/** A send that records each call and answers when the test says. */
function controlledSend() {
  const calls: { data: any; resolve: () => void; reject: (err: Error) => void }[] = [];
  const send = (_hub: string, _group: string, data: unknown) =>
    new Promise<unknown>((resolve, reject) => calls.push({ data, resolve: () => resolve(true), reject }));
  return { calls, send };
}

describe('listener presence notices', () => {
  it('sends one notice per entity at a time, so an older one never lands after a newer one', async (t) => {
    const { calls, send } = controlledSend();
    const presence = new ListenerPresence(send, { onConnectionChange: () => {} }, captureLogger().log, 60000);
    t.after(() => presence.close());
    presence.announce(notice('listener.online', 1));
    presence.announce(notice('listener.offline', 0));
    presence.announce(notice('listener.online', 1, 'other'));
    // The second notice of `echo` waits for the first; the other entity goes at once.
    assert.deepEqual(calls.map((c) => [c.data.entity, c.data.type]), [['echo', 'listener.online'], ['other', 'listener.online']]);
    calls[0].resolve();
    await until(() => calls.length === 3, 1000, 'the newer notice sent after the older');
    assert.deepEqual([calls[2].data.type, calls[2].data.listeners], ['listener.offline', 0]);
  });

  it('keeps a refused notice, the newest of its entity, and sends it again when the bus connects and on its timer', async (t) => {
    const { calls, send } = controlledSend();
    const connected: ((up: boolean) => void)[] = [];
    const logged = captureLogger();
    const presence = new ListenerPresence(send, { onConnectionChange: (listener) => void connected.push(listener) }, logged.log, 200);
    t.after(() => presence.close());
    presence.announce(notice('listener.online', 1));
    calls[0].reject(new Error('not stored: the NATS bus is unreachable'));
    await until(() => logged.events().includes('presence.unsent'), 1000, 'the refusal logged');
    connected[0](true);
    assert.equal(calls.length, 2, 'sent again when the bus connects');
    calls[1].reject(new Error('not stored: the NATS bus is unreachable'));
    await until(() => calls.length === 3, 2000, 'sent again by the timer');
    assert.equal(logged.events().filter((e) => e === 'presence.unsent').length, 1, 'logged once');
    calls[2].resolve();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(calls.length, 3, 'nothing more once it went through');
  });
});
