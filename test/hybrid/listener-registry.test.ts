// Which listener of an entity gets the next connect or request: each in turn
// (src/hybrid/listener-registry.ts), also when one leaves.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ControlChannel } from '../../src/hybrid/control-channel.ts';
import { ListenerRegistry } from '../../src/hybrid/listener-registry.ts';

/** What the registry reads of a control channel: its entity and whether it is open. */
const listener = (name: string, entity = 'e') => ({ name, entity: { key: entity, name: entity }, isOpen: true }) as unknown as ControlChannel & { name: string };

describe('listener registry', () => {
  it('takes the listeners of an entity in turn', () => {
    const registry = new ListenerRegistry();
    const [a, b, c] = ['a', 'b', 'c'].map((n) => listener(n));
    for (const l of [a, b, c]) registry.add(l);
    const picks = Array.from({ length: 6 }, () => (registry.pick('e') as ReturnType<typeof listener>).name);
    assert.deepEqual(picks, ['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('gives the next turn to the listener that had it when one before it leaves (it was skipped once)', () => {
    const registry = new ListenerRegistry();
    const [a, b, c] = ['a', 'b', 'c'].map((n) => listener(n));
    for (const l of [a, b, c]) registry.add(l);
    assert.equal((registry.pick('e') as ReturnType<typeof listener>).name, 'a');
    assert.equal(registry.remove(a), 2);
    const picks = Array.from({ length: 4 }, () => (registry.pick('e') as ReturnType<typeof listener>).name);
    assert.deepEqual(picks, ['b', 'c', 'b', 'c']);
  });

  it('keeps the turn when the listener that leaves comes after it, and skips closing listeners', () => {
    const registry = new ListenerRegistry();
    const [a, b, c] = ['a', 'b', 'c'].map((n) => listener(n));
    for (const l of [a, b, c]) registry.add(l);
    assert.equal((registry.pick('e') as ReturnType<typeof listener>).name, 'a');
    registry.remove(c);
    (b as { isOpen: boolean }).isOpen = false;
    const picks = Array.from({ length: 3 }, () => (registry.pick('e') as ReturnType<typeof listener>)?.name);
    assert.deepEqual(picks, ['a', 'a', 'a']);
    assert.equal(registry.openCount('e'), 1);
  });
});
