// What the rendezvous table remembers of HTTP requests that ended before
// their listener answered (src/hybrid/rendezvous-table.ts): a late answer's
// leg is recognised once, for its own entity, within its time, and a sender
// hanging up in a loop grows the memory no further than 10,000 of them.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import type { HybridEntity } from '../../src/hybrid/entity-catalog.ts';
import { RendezvousTable } from '../../src/hybrid/rendezvous-table.ts';
import { httpRequest } from '../helpers/http.ts';
import { RawListener } from '../helpers/raw-listener.ts';
import { tcp } from '../helpers/raw-socket.ts';
import { startTestRelay, tokenFor, wsUrl } from '../helpers/relay.ts';
import { until } from '../helpers/wait.ts';

const entity = (name: string) => ({ name, key: name.toLowerCase(), requiresClientAuthorization: false }) as HybridEntity;

describe('abandoned HTTP requests in the rendezvous table', () => {
  it('are recognised once, for their own entity only, until their time is up', (t) => {
    mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    t.after(() => mock.timers.reset());
    const table = new RendezvousTable<{ id: string; entity: HybridEntity }>();
    table.abandon({ id: 'a', entity: entity('Web') }, 1000);
    table.abandon({ id: 'b', entity: entity('web') }, 1000);
    table.abandon({ id: 'c', entity: entity('web') }, 1000);
    assert.equal(table.takeAbandoned('a', 'web'), true);
    assert.equal(table.takeAbandoned('a', 'web'), false, 'once');
    assert.equal(table.takeAbandoned('b', 'other'), false, 'another entity');
    assert.equal(table.takeAbandoned('b', 'web'), false, 'forgotten when asked, whatever the answer');
    mock.timers.tick(1001);
    assert.equal(table.takeAbandoned('c', 'web'), false, 'past its time');
  });

  it('are forgotten when their time is up on an edge gone quiet, not only at the next abandoned request (found by a memory soak: up to 10,000, ~2 MB, were kept for good)', (t) => {
    mock.timers.enable({ apis: ['Date', 'setTimeout'], now: 1_000_000 });
    t.after(() => mock.timers.reset());
    const table = new RendezvousTable<{ id: string; entity: HybridEntity }>();
    for (let i = 0; i < 100; i++) table.abandon({ id: `r${i}`, entity: entity('web') }, 60_000);
    mock.timers.tick(30_000);
    table.abandon({ id: 'late', entity: entity('web') }, 60_000);
    mock.timers.tick(31_100);
    assert.equal(table.abandonedCount, 1, 'the first hundred forgotten with no abandon() after them');
    mock.timers.tick(30_000);
    assert.equal(table.abandonedCount, 0);
  });

  it('keeps the last 10,000 at most', () => {
    const table = new RendezvousTable<{ id: string; entity: HybridEntity }>();
    for (let i = 0; i <= 10_000; i++) table.abandon({ id: String(i), entity: entity('web') }, 600_000);
    assert.equal(table.takeAbandoned('0', 'web'), false, 'the oldest went');
    assert.equal(table.takeAbandoned('1', 'web'), true);
    assert.equal(table.takeAbandoned('10000', 'web'), true);
  });

  it("are not forgotten for another entity's: a flood of one hybrid connection's abandoned requests evicts its own oldest (found by review, test fails without: a sender on one entity evicted every other's, whose hyco-https listener's late answer was then refused 404 and ended its process)", () => {
    const table = new RendezvousTable<{ id: string; entity: HybridEntity }>();
    table.abandon({ id: 'quiet-1', entity: entity('quiet') }, 600_000);
    for (let i = 0; i < 20_000; i++) table.abandon({ id: `noisy-${i}`, entity: entity('noisy') }, 600_000);
    table.abandon({ id: 'quiet-2', entity: entity('quiet') }, 600_000);
    assert.equal(table.abandonedCount, 10_000, 'still 10,000 at most');
    assert.equal(table.takeAbandoned('quiet-1', 'quiet'), true, "the quiet entity's first");
    assert.equal(table.takeAbandoned('quiet-2', 'quiet'), true, "the quiet entity's second");
    assert.equal(table.takeAbandoned('noisy-0', 'noisy'), false, "the noisy entity's oldest went");
    assert.equal(table.takeAbandoned('noisy-19999', 'noisy'), true, "the noisy entity's newest stayed");
  });

  it('are only requests a listener was told of: a 404 NoListener is not remembered (found by review: each was, 10,000 at most)', async (t) => {
    const relay = await startTestRelay(t, { hybridConnections: [{ name: 'web', requiresClientAuthorization: false }] });
    const table = (relay.hybrid as unknown as { ctx: { rendezvous: RendezvousTable } }).ctx.rendezvous;
    for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${relay.url}/web/x${i}`)).status, 404);
    assert.equal(table.abandonedCount, 0);
    // One a listener was told of, whose sender hung up before the answer: remembered, for a late answer.
    const listenUrl = wsUrl(relay.url, '/$hc/web?sb-hc-action=listen');
    const listener = await RawListener.connect(listenUrl, tokenFor(listenUrl));
    t.after(() => listener.close());
    const sender = await tcp(t, relay.port);
    sender.write(`GET /web/late HTTP/1.1\r\nHost: 127.0.0.1:${relay.port}\r\n\r\n`);
    await listener.next<{ request: unknown }>();
    sender.destroy();
    await until(() => table.abandonedCount === 1, 5000, 'the request to be remembered');
  });
});
