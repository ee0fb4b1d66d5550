// The frames a message's live recipients without sequence ids take (src/pubsub/downstream.ts): a plain JSON
// client's, a simple client's, a plain protobuf client's. A message a reliable session holds lets go of them, and
// of its data's JSON text, once its fan-out is over (SharedMessage.dropLiveFrames); one asked for again after
// that is made again from the body, byte for byte what it was.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SharedMessage, type DataMessage } from '../../src/pubsub/downstream.ts';
import { protobufDataFrame } from '../../src/pubsub/protobuf-protocol.ts';

const cases: [string, DataMessage, number?][] = [
  ['json, a group and a user of many-byte characters, a sequence', { from: 'group', group: 'salle été ☃', fromUserId: 'ユーザー', dataType: 'json', dataJson: '{"data":"}","n":[1,2]}' }, 7],
  ['text with characters outside Latin-1 and escapes', { from: 'server', fromUserId: null, dataType: 'text', dataJson: '"héllo \\"😀\\" \\u0000"' }],
  ['binary', { from: 'group', group: 'g', fromUserId: 'u', dataType: 'binary', dataJson: JSON.stringify(Buffer.from([0, 1, 254, 255]).toString('base64')) }],
  ['protobuf', { from: 'server', fromUserId: null, dataType: 'protobuf', dataJson: JSON.stringify(Buffer.from([8, 1]).toString('base64')) }],
  ['an empty JSON string', { from: 'server', fromUserId: null, dataType: 'json', dataJson: '""' }],
];

describe('a message\'s frames for live recipients without sequence ids', () => {
  for (const [name, data, sequence] of cases) {
    it(`are made again from its body once let go, as they were: ${name}`, () => {
      const fresh = new SharedMessage(data, 'edge-1:1', 0, sequence);
      const expected = [fresh.plainFrame(), fresh.rawFrame(), protobufDataFrame(fresh)];
      const held = new SharedMessage(data, 'edge-1:1', 0, sequence);
      held.keepOwnBytes();
      held.dropLiveFrames();
      assert.deepEqual([held.plainFrame(), held.rawFrame(), protobufDataFrame(held)], expected);
      // And once more, built then let go again (a message delivered twice).
      held.dropLiveFrames();
      assert.deepEqual(held.rawFrame(), expected[1]);
    });
  }
});
