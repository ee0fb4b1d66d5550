// What a stream follower remembers of the messages it handed on, and how it
// reads them again with a new consumer (src/bus/stream-resume.ts): the same
// message is skipped whatever the stream's state said meanwhile (a leader
// answering from behind after a failure), another one in its place is a
// rewrite. Before: a stream info or message lookup answered from a lagging
// state was taken for a rewrite, and a chaos soak lost and repeated
// acknowledged events on single NATS failures.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecentlyHandedOn, readAgain, type HandedOnMessage } from '../../src/bus/stream-resume.ts';

const msg = (seq: number, id?: string, ms = 1000 + seq): HandedOnMessage => ({ seq, id, ms });

describe('a follower reading its last messages again', () => {
  it('remembers the last N handed on, oldest first, and where a new consumer starts reading again', () => {
    const memory = new RecentlyHandedOn(4);
    assert.equal(memory.empty, true);
    assert.equal(memory.oldestFrom(1), undefined);
    for (let seq = 1; seq <= 6; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(memory.oldestFrom(1), 3, 'the ring keeps 3 to 6');
    assert.equal(memory.oldestFrom(5), 5, 'those the stream no longer holds are not read again');
    assert.equal(memory.oldestFrom(7), undefined);
    assert.equal(memory.latestMs, 1006);
    assert.equal(memory.compare(msg(2, 'id-2')), 'unknown', 'forgotten');
    assert.equal(memory.compare(msg(4, 'id-4')), 'same');
    assert.equal(memory.compare(msg(4, 'another')), 'other');
  });

  it('skips every message read again that it handed on, matched by id, whatever its order of arrival', () => {
    // A consumer made on a leader that has not applied everything yet delivers the same messages, later.
    const memory = new RecentlyHandedOn(64);
    for (let seq = 10; seq <= 20; seq++) memory.add(msg(seq, `id-${seq}`));
    let matched = false;
    for (let seq = 10; seq <= 20; seq++) {
      const verdict = readAgain(memory, msg(seq, `id-${seq}`, 5000), matched);
      assert.equal(verdict, 'handedOn', `seq ${seq}: the store time differs, the id is the message`);
      matched = true;
    }
    assert.equal(readAgain(memory, msg(5, 'id-5'), matched), 'notRemembered', 'older than remembered: skipped, not handed on twice');
  });

  it('tells a rewrite from where it begins: after a match, or before what it remembers', () => {
    const memory = new RecentlyHandedOn(64);
    for (let seq = 1; seq <= 5; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(readAgain(memory, msg(4, 'new-a'), true), 'rewritten');
    assert.equal(readAgain(memory, msg(1, 'new-a'), false), 'rewrittenBefore');
    // Handing on a message under a sequence remembered drops it and every later one.
    memory.add(msg(4, 'new-a', 9000));
    assert.equal(memory.compare(msg(5, 'id-5')), 'unknown');
    assert.equal(memory.compare(msg(4, 'new-a', 9000)), 'same');
    assert.equal(memory.latestMs, 9000);
    assert.equal(memory.oldestFrom(1), 1);
  });

  it('drops only what the ring still holds when a rewrite comes after it wrapped', () => {
    // Found by review: the first version counted back past what the ring had written over, so it "remembered"
    // sequences it had dropped and read nothing again at the next consumer.
    const memory = new RecentlyHandedOn(64);
    for (let seq = 1; seq <= 100; seq++) memory.add(msg(seq, `id-${seq}`));
    memory.add(msg(95, 'new-95'));
    assert.equal(memory.oldestFrom(1), 37);
    assert.equal(memory.compare(msg(94, 'id-94')), 'same');
    assert.equal(memory.compare(msg(95, 'new-95')), 'same');
    assert.equal(memory.compare(msg(96, 'id-96')), 'unknown');
    assert.equal(memory.compare(msg(36, 'id-36')), 'unknown');
  });

  it('takes a message it does not remember, stored after everything it remembers, for a new one', () => {
    // A stream that lost more than is remembered, read again from its end: its new messages are below what is remembered.
    const memory = new RecentlyHandedOn(4);
    for (let seq = 10; seq <= 13; seq++) memory.add(msg(seq, `id-${seq}`));
    assert.equal(memory.latestMs, 1013);
    assert.equal(readAgain(memory, msg(5, 'old-5', 1005), false), 'notRemembered');
    assert.equal(readAgain(memory, msg(4, 'new-4', 2000), false), 'rewrittenBefore');
    assert.equal(readAgain(new RecentlyHandedOn(4), msg(4, 'x', 2000), false), 'notRemembered', 'nothing remembered: nothing to tell');
  });

  it('compares store times when a message has no id (1 ms apart is the same message)', () => {
    const memory = new RecentlyHandedOn(8);
    memory.add(msg(1, undefined, 1000));
    assert.equal(memory.compare(msg(1, undefined, 1001)), 'same');
    assert.equal(memory.compare(msg(1, undefined, 1003)), 'other');
    assert.equal(memory.compare(msg(1, 'id-1', 1000)), 'same');
  });
});
