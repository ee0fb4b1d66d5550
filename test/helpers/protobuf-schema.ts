// The Web PubSub protobuf messages as Azure documents them, read by protobufjs
// (an implementation of the format that is not ours): what tests encode for
// the relay and how they read what it sends (test/pubsub/protobuf-subprotocol.test.ts,
// test/fuzz/protobuf-*.test.ts). Reading is a message of the tests' own, to pack in an Any.
import protobuf from 'protobufjs';

const PROTO = `
syntax = "proto3";
package azure.webpubsub;
message UpstreamMessage {
  oneof message {
    SendToGroupMessage send_to_group_message = 1;
    EventMessage event_message = 5;
    JoinGroupMessage join_group_message = 6;
    LeaveGroupMessage leave_group_message = 7;
    SequenceAckMessage sequence_ack_message = 8;
    PingMessage ping_message = 9;
  }
  message PingMessage {}
  message SendToGroupMessage { string group = 1; optional uint64 ack_id = 2; MessageData data = 3; optional bool no_echo = 4; }
  message EventMessage { string event = 1; MessageData data = 2; optional uint64 ack_id = 3; }
  message JoinGroupMessage { string group = 1; optional uint64 ack_id = 2; }
  message LeaveGroupMessage { string group = 1; optional uint64 ack_id = 2; }
  message SequenceAckMessage { uint64 sequence_id = 1; }
}
message DownstreamMessage {
  oneof message { AckMessage ack_message = 1; DataMessage data_message = 2; SystemMessage system_message = 3; PongMessage pong_message = 4; }
  message PongMessage {}
  message AckMessage {
    uint64 ack_id = 1; bool success = 2; optional ErrorMessage error = 3;
    message ErrorMessage { string name = 1; string message = 2; }
  }
  message DataMessage { string from = 1; optional string group = 2; MessageData data = 3; optional uint64 sequence_id = 4; }
  message SystemMessage {
    oneof message { ConnectedMessage connected_message = 1; DisconnectedMessage disconnected_message = 2; }
    message ConnectedMessage { string connection_id = 1; string user_id = 2; string reconnection_token = 3; }
    message DisconnectedMessage { string reason = 2; }
  }
}
message MessageData {
  oneof data { string text_data = 1; bytes binary_data = 2; google.protobuf.Any protobuf_data = 3; string json_data = 4; }
}
message Reading { int32 value = 1; }
`;
const root = protobuf.parse('syntax = "proto3"; package google.protobuf; message Any { string type_url = 1; bytes value = 2; }', { keepCase: true }).root;
protobuf.parse(PROTO, root, { keepCase: true });
export const Upstream = root.lookupType('azure.webpubsub.UpstreamMessage');
export const Downstream = root.lookupType('azure.webpubsub.DownstreamMessage');
export const Any = root.lookupType('google.protobuf.Any');
export const Reading = root.lookupType('azure.webpubsub.Reading');

export function encodeUpstream(message: object): Buffer {
  return Buffer.from(Upstream.encode(Upstream.fromObject(message)).finish());
}

/** A DownstreamMessage as an object: uint64 as digits, bytes as Buffers, the oneof named. */
export function decodeDownstream(bytes: Uint8Array): any {
  return Downstream.toObject(Downstream.decode(bytes), { longs: String, bytes: Buffer, oneofs: true });
}
