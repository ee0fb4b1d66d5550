// A reliable recipient's copy of a message (src/pubsub/downstream.ts,
// sequencedParts): the shared head and tail around its sequence id make the
// same JSON object as the plain frame plus `sequenceId`, whatever the body.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SharedMessage, sequencedParts } from '../../src/pubsub/downstream.ts';

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
});
