import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newRendezvousId, workerOfRendezvousId } from '../../src/hybrid/rendezvous-table.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('rendezvous ids', () => {
  it('are version 4 UUIDs whose last four hex digits name the worker, unique across refills of the random pool', () => {
    const seen = new Set<string>();
    // 20,000 ids: the pool of random bytes (256 ids' worth) is refilled ~80 times.
    for (let i = 0; i < 20_000; i++) {
      const worker = (i * 7919) % 0x10000;
      const id = newRendezvousId(worker);
      assert.match(id, UUID_V4);
      assert.equal(workerOfRendezvousId(id), worker);
      seen.add(id);
    }
    assert.equal(seen.size, 20_000);
    // A worker number past four hex digits keeps its low 16 bits, as before.
    assert.equal(workerOfRendezvousId(newRendezvousId(0x1_0005)), 5);
  });

  it('spread their random digits evenly (no digit stuck, the version and variant apart)', () => {
    const counts = Array.from({ length: 36 }, () => new Array<number>(16).fill(0));
    const n = 16_000;
    for (let i = 0; i < n; i++) {
      const id = newRendezvousId(0);
      for (let p = 0; p < 32; p++) if (id[p] !== '-') counts[p][parseInt(id[p], 16)]++;
    }
    for (let p = 0; p < 32; p++) {
      if (p === 8 || p === 13 || p === 18 || p === 23 || p === 14) continue;
      // Each digit about n/16 = 1,000 times (n/4 at the variant's); a stuck or missing digit is far off.
      const digits = p === 19 ? [8, 9, 10, 11] : Array.from({ length: 16 }, (_, d) => d);
      const expected = n / digits.length;
      for (const d of digits) assert.ok(Math.abs(counts[p][d] - expected) < expected * 0.25, `position ${p} digit ${d}: ${counts[p][d]}`);
    }
  });

  it('are strings of their own: an id kept is not changed by the next', () => {
    const first = newRendezvousId(1);
    const copy = `${first}`;
    for (let i = 0; i < 1000; i++) newRendezvousId(2);
    assert.equal(first, copy);
  });
});
