// What the rendezvous table remembers of HTTP requests that ended before
// their listener answered (src/hybrid/rendezvous-table.ts): a late answer's
// leg is recognised once, for its own entity, within its time, and a sender
// hanging up in a loop grows the memory no further than 10,000 of them.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import type { HybridEntity } from '../../src/hybrid/entity-catalog.ts';
import { RendezvousTable } from '../../src/hybrid/rendezvous-table.ts';

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

  it('keeps the last 10,000 at most', () => {
    const table = new RendezvousTable<{ id: string; entity: HybridEntity }>();
    for (let i = 0; i <= 10_000; i++) table.abandon({ id: String(i), entity: entity('web') }, 600_000);
    assert.equal(table.takeAbandoned('0', 'web'), false, 'the oldest went');
    assert.equal(table.takeAbandoned('1', 'web'), true);
    assert.equal(table.takeAbandoned('10000', 'web'), true);
  });
});
