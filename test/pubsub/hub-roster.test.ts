// The roster of edges serving a hub (src/pubsub/hub-roster.ts): an edge
// announces itself only while it can answer, greets with hello (again after it
// could not answer for a while) and is answered at once, and others drop it
// when it leaves or falls silent. Expiry runs on a clock the test moves.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HubRoster, type HereState } from '../../src/pubsub/hub-roster.ts';
import { blockEventLoop } from '../helpers/busy-pause.ts';
import { until } from '../helpers/wait.ts';

/**
 * A roster for `nodeId` announcing every 20 ms (or `announceEveryMs`), whose announcements and changes are recorded.
 * A test that moves the clock by more than two announcements at once without ticks between looks like a pause to
 * it, which suspends judging, so those take announcements further apart than the clock moves.
 */
function roster(nodeId: string, able = { on: true }, announceEveryMs = 20) {
  const said: HereState[] = [];
  const changes: string[] = [];
  const clock = { ms: 0 };
  const r = new HubRoster(nodeId, (state) => said.push(state), () => able.on, (edge, how) => changes.push(`${edge} ${how}`), {
    announceEveryMs,
    ttlMs: 300,
    now: () => clock.ms,
  });
  return { r, said, able, changes, clock };
}

/** A roster for `a` on the wall clock, as in the relay (announcing every 50 ms, 175 ms to live), whose changes are recorded. */
function wallClockRoster() {
  const changes: string[] = [];
  const r = new HubRoster('a', () => undefined, () => true, (edge, how) => changes.push(`${edge} ${how}`), { announceEveryMs: 50, ttlMs: 175, now: Date.now });
  return { r, changes };
}

describe('HubRoster', () => {
  it('says hello once the edge can answer, then here, hello again after a spell unable; leaving only after it announced', async () => {
    const { r, said, able } = roster('a', { on: false });
    try {
      await new Promise((res) => setTimeout(res, 60));
      assert.deepEqual(said, [], 'nothing before it can answer');
      able.on = true;
      await until(() => said.length >= 3, 2000, 'announcements');
      assert.equal(said[0], 'hello');
      assert.ok(said.slice(1).every((s) => s === 'here'), said.join(','));
      able.on = false;
      await new Promise((res) => setTimeout(res, 60));
      const before = said.length;
      able.on = true;
      await until(() => said.length > before, 2000, 'announcing again');
      assert.equal(said[before], 'hello', 'greets anew');
    } finally {
      r.leave();
    }
    assert.equal(said.at(-1), 'leaving');
    const count = said.length;
    await new Promise((res) => setTimeout(res, 60));
    assert.equal(said.length, count, 'silent after leaving');

    const { r: quiet, said: quietSaid } = roster('q', { on: false });
    quiet.leave();
    assert.deepEqual(quietSaid, [], 'an edge that never announced does not say it leaves');
  });

  it('knows the others it heard, answers a hello at once, and ignores its own', async () => {
    const { r, said, changes } = roster('a');
    try {
      await until(() => said.length >= 1, 2000, 'greeted');
      const before = said.length;
      r.heard('a', 'here');
      assert.deepEqual(r.others(), [], 'its own announcement');
      r.heard('b', 'hello');
      assert.equal(said.length, before + 1, 'a hello is answered');
      assert.equal(said.at(-1), 'here');
      r.heard('c', 'here');
      assert.equal(said.length, before + 1, 'a here is not');
      assert.deepEqual(r.others().sort(), ['b', 'c']);
      r.heard('b', 'leaving');
      assert.deepEqual(r.others(), ['c'], 'gone once it says so');
      r.heard('b', 'leaving');
      assert.deepEqual(changes, ['b joined', 'c joined', 'b left'], 'each change heard once');
    } finally {
      r.leave();
    }
  });

  it('drops an edge not heard from for its time to live, and takes it back when it speaks again', () => {
    const { r, changes, clock } = roster('a', { on: false }, 1000);
    try {
      r.heard('b', 'here');
      r.heard('c', 'here');
      clock.ms = 200;
      r.heard('c', 'here');
      assert.deepEqual(r.others().sort(), ['b', 'c'], 'both within 300 ms');
      clock.ms = 350;
      assert.deepEqual(r.others(), ['c'], 'b silent for 350 ms, c for 150');
      r.heard('b', 'here');
      assert.deepEqual(r.others().sort(), ['b', 'c']);
      assert.deepEqual(changes, ['b joined', 'c joined', 'b silent', 'b joined']);
    } finally {
      r.leave();
    }
  });

  it('tells an edge process from its successor under the same node id, and lets a leaving process take only itself off', () => {
    const { r, changes } = roster('a', { on: false });
    try {
      r.heard('b', 'hello', 'boot-1');
      assert.equal(r.holds('b', 'boot-1'), true);
      assert.equal(r.holds('b'), true, 'no process named: the node is enough');
      // b killed and started again at once: its successor greets before the old entry expires.
      r.heard('b', 'hello', 'boot-2');
      assert.equal(r.holds('b', 'boot-1'), false, 'the killed process is gone');
      assert.equal(r.holds('b', 'boot-2'), true);
      // A late `leaving` of the old process does not take the new one off.
      r.heard('b', 'leaving', 'boot-1');
      assert.deepEqual(r.others(), ['b']);
      r.heard('b', 'leaving', 'boot-2');
      assert.deepEqual(r.others(), []);
      // An edge that names no process (an older version) is taken at its node id.
      r.heard('c', 'here');
      assert.equal(r.holds('c', 'boot-9'), true);
      assert.equal(r.holds('d', 'boot-1'), false, 'never heard');
      assert.deepEqual(changes, ['b joined', 'b restarted', 'b left', 'c joined']);
    } finally {
      r.leave();
    }
  });

  it('keeps the edges it heard when its own process was paused past their time: the late tick drops nobody (before: every edge dropped, then joined again)', async () => {
    // On the wall clock, as in the relay: the pause is a busy loop, and b's next announcement is read only after the
    // timers that ran late, as a message that came meanwhile would be.
    const { r, changes } = wallClockRoster();
    try {
      // Heard, then paused, in one turn of the event loop; heard again in the next turn's check phase, after its
      // timers (where the late tick runs).
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          r.heard('b', 'here');
          blockEventLoop(500);
          setImmediate(() => (r.heard('b', 'here'), resolve()));
        }),
      );
      await new Promise((res) => setTimeout(res, 120));
      assert.deepEqual(changes, ['b joined']);
      // Silence after that is judged again.
      await until(() => changes.includes('b silent'), 2000, 'b dropped once silent');
    } finally {
      r.leave();
    }
  });

  it('keeps the edges it heard when asked right after its process was paused past their time, before their announcements are read (before: dropped, silent, then joined again)', async () => {
    const { r, changes } = wallClockRoster();
    try {
      const asked: string[][] = [];
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          r.heard('b', 'here');
          blockEventLoop(500);
          // A question in the same turn (a REST call read in the poll phase before the NATS socket, after a
          // SIGSTOP), and one in the next turn's check phase, after the late tick.
          asked.push(r.others());
          setImmediate(() => {
            asked.push(r.others());
            r.heard('b', 'here');
            resolve();
          });
        }),
      );
      assert.deepEqual(asked, [['b'], ['b']]);
      await new Promise((res) => setTimeout(res, 120));
      assert.deepEqual(changes, ['b joined']);
      assert.equal(r.holds('b'), true);
      // Once a tick ran on time again, silence counts, on demand too.
      await until(() => r.others().length === 0, 2000, 'b dropped once silent');
      assert.deepEqual(r.others(), []);
      assert.ok(changes.includes('b silent'), changes.join(', '));
    } finally {
      r.leave();
    }
  });
});
