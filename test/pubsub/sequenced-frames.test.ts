// A reliable recipient's copy of a message (src/pubsub/downstream.ts,
// sequencedParts): the shared head and tail around its sequence id make the
// same JSON object as the plain frame plus `sequenceId`, whatever the body.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SharedMessage, sequencedParts } from '../../src/pubsub/downstream.ts';
import { MessageLog } from '../../src/pubsub/message-log.ts';
import { arrayBuffersAfterGc, gc } from '../helpers/gc.ts';

const withId = (head: Buffer, id: number, tail: Buffer) => JSON.parse(Buffer.concat([head, Buffer.from(String(id)), tail]).toString());

describe('sequenced copies of a message', () => {
  it('put the sequence id last, around one shared copy of the body, built once per message', () => {
    const message = new SharedMessage({ from: 'group', group: 'g "quoted"', fromUserId: null, dataType: 'json', dataJson: '{"n":1,"s":"}"}' }, 'edge-1:7');
    const plain = JSON.parse(message.plainFrame().subarray(2).toString());
    const parts = sequencedParts(message);
    assert.deepEqual(withId(parts.head, 42, parts.tail), { ...plain, sequenceId: 42 });
    assert.equal(parts.tail.toString(), '}');
    assert.ok(parts.head.toString().endsWith(',"sequenceId":'));
    assert.equal(sequencedParts(message), parts);
  });

  it('put the id first when a body does not end with the closing brace (a copy from elsewhere)', () => {
    const parts = sequencedParts({ body: Buffer.from('"type":"message","data":1} '), mid: 'x', position: 0 });
    assert.equal(parts.head.toString(), '{"sequenceId":');
    assert.deepEqual(withId(parts.head, 7, parts.tail), { sequenceId: 7, type: 'message', data: 1 });
  });

  it('hold about their own bytes while sessions hold them, not the 8 KiB pool slabs Node cuts small buffers from', async (t) => {
    // A message a reliable session holds keeps its body, its shared parts and its plain frame: each cut from a
    // shared 8 KiB slab kept the slab (whatever else was cut from it and dropped since), and a session's
    // limits.sessionBufferBytes, counted by the messages' lengths, held many times that.
    const log = new MessageLog();
    gc();
    const before = process.memoryUsage().arrayBuffers;
    const held: SharedMessage[] = [];
    let bytes = 0;
    for (let i = 0; i < 2000; i++) {
      const message = new SharedMessage({ from: 'group', group: 'room', fromUserId: 'u', dataType: 'text', dataJson: `"event ${i}"` }, `edge-1:${i}`);
      // Plain members of the group get it before a reliable one, or after.
      if (i % 2 === 0) message.plainFrame();
      log.hold(message);
      const parts = sequencedParts(message);
      bytes += message.body.length + parts.head.length + parts.tail.length + message.plainFrame().length;
      held.push(message);
      // What else the edge cuts from the same slabs meanwhile (frames to plain clients, acks), let go at once.
      Buffer.allocUnsafe(3000);
    }
    const kept = (await arrayBuffersAfterGc()) - before;
    t.diagnostic(`${(kept / 1e6).toFixed(2)} MB held for ${(bytes / 1e6).toFixed(2)} MB of ${held.length} messages`);
    assert.ok(kept < 3 * bytes, `${(kept / 1e6).toFixed(2)} MB held for ${(bytes / 1e6).toFixed(2)} MB`);
  });
});
