// Subscribers and publishers for the fan-out scenario, one pair per system,
// all on the lean WebSocket client. Every event's payload is 100 bytes that
// start with `@` and a 9-digit sequence number, which is all a subscriber
// reads: it finds the `@`, and the generator looks up when that event was sent.
// Reliable subscribers (json.reliable.webpubsub.azure.v1) also read each
// delivery's sequence id and acknowledge as @azure/web-pubsub-client 1.0 does
// (see reliableRelayClients).
import { LeanWs, OP_BINARY, OP_TEXT, maskedFrame } from './lean-ws.ts';
import { clientPath } from './systems.ts';

export const EVENT_BYTES = 100;
export const GROUP = 'g';

/** Called once per event a subscriber receives: `buf[at]` is the event's `@`. */
export type OnEvent = (buf: Buffer, at: number) => void;

/** Called when the server closes a subscriber: its close code and reason, when it sent a close frame. */
export type OnClosed = (why: string) => void;

export interface Publisher {
  /** Publishes these payloads in one write. */
  publish(payloads: string[]): void;
  close(): void;
}

export interface FanoutClients {
  /** Resolves once the subscriber is in the group. */
  subscribe(onEvent: OnEvent, onClosed?: OnClosed): Promise<LeanWs>;
  publisher(): Promise<Publisher>;
  /** Stops whatever the clients run besides their sockets (the acknowledgement timer). */
  close?(): void;
  /** Reliable clients: each acknowledges the highest id it has now, as at a tick of the SDK's timer (bench/fanout-instructions.ts, after close()). */
  acknowledgeAll?(): void;
}

export function eventPayload(seq: number): string {
  return '@' + String(seq).padStart(9, '0') + 'x'.repeat(EVENT_BYTES - 10);
}

export function seqAt(buf: Buffer, at: number): number {
  let n = 0;
  for (let i = at + 1; i < at + 10; i++) n = n * 10 + (buf[i] - 48);
  return n;
}

const SEQUENCE_ID_KEY = Buffer.from('"sequenceId":');

/**
 * The sequence id of a reliable delivery, or -1. The relay writes it as the
 * last member (`..."sequenceId":N}`), so it is read backwards from the end:
 * a few bytes per delivery, as cheap as the id-first layout was to read.
 */
function sequenceIdOf(payload: Buffer): number {
  let i = payload.length - 1;
  if (i < 0 || payload[i] !== 0x7d) return -1;
  let n = 0;
  let scale = 1;
  for (i--; i >= 0 && payload[i] >= 48 && payload[i] <= 57; i--, scale *= 10) n += (payload[i] - 48) * scale;
  const key = i + 1 - SEQUENCE_ID_KEY.length;
  if (scale === 1 || key < 0) return -1;
  for (let k = 0; k < SEQUENCE_ID_KEY.length; k++) if (payload[key + k] !== SEQUENCE_ID_KEY[k]) return -1;
  return n;
}

/** Why a socket was closed, from its close frame's payload. */
function closeReason(payload: Buffer): string {
  return payload.length >= 2 ? `${payload.readUInt16BE(0)} ${payload.subarray(2).toString()}` : 'close frame without a code';
}

export interface PubSubClientOptions {
  onEvent?: OnEvent;
  /** Each delivery's sequence id (reliable subprotocol). */
  onSequenceId?(id: number): void;
  onClosed?: OnClosed;
}

/** A client of our relay's bench hub in `groups` (through its token); resolves once `connected` arrived. */
export function openPubSubClient(port: number, protocol: string, groups: string[], options: PubSubClientOptions = {}): Promise<LeanWs> {
  const { onEvent, onSequenceId, onClosed } = options;
  return new Promise((resolve, reject) => {
    let ready: LeanWs | undefined;
    let connected = false;
    let why: string | undefined;
    LeanWs.open({
      port,
      path: clientPath(port, { groups }),
      protocols: [protocol],
      onCloseFrame: (payload) => (why = closeReason(payload)),
      onClose: () => onClosed?.(why ?? 'connection closed without a close frame'),
      onFrame(_op, payload) {
        if (onSequenceId) {
          const id = sequenceIdOf(payload);
          if (id >= 0) onSequenceId(id);
        }
        const at = onEvent ? payload.indexOf(64) : -1;
        if (at >= 0) return onEvent!(payload, at);
        if (!connected && payload.includes('"connected"')) {
          connected = true;
          if (ready) resolve(ready);
        }
      },
    }).then((ws) => {
      ready = ws;
      if (connected) resolve(ws);
    }, reject);
  });
}

/** Our relay's pub/sub hub, json.webpubsub.azure.v1: subscribers join through their token's group claim. */
export function relayClients(subscriberPort: number, publisherPort: number): FanoutClients {
  return {
    subscribe(onEvent, onClosed) {
      return openPubSubClient(subscriberPort, 'json.webpubsub.azure.v1', [GROUP], { onEvent, onClosed });
    },
    publisher: () => relayPublisher(publisherPort),
  };
}

/** A publisher on our relay (plain subprotocol, sendToGroup with noEcho). */
async function relayPublisher(publisherPort: number): Promise<Publisher> {
  const ws = await LeanWs.open({
    port: publisherPort,
    path: clientPath(publisherPort, { roles: ['webpubsub.sendToGroup'] }),
    protocols: ['json.webpubsub.azure.v1'],
  });
  return {
    publish(payloads) {
      const frames = payloads.map((p) =>
        maskedFrame(OP_TEXT, Buffer.from(`{"type":"sendToGroup","group":"${GROUP}","dataType":"text","data":"${p}","noEcho":true}`)),
      );
      ws.sendRaw(frames.length === 1 ? frames[0] : Buffer.concat(frames));
    },
    close: () => ws.close(),
  };
}

/** @azure/web-pubsub-client's SequenceId: the highest id seen, and whether it moved since the last acknowledgement. */
interface AckState {
  ws?: LeanWs;
  highest: number;
  updated: boolean;
}

/** The SDK acknowledges at once when a delivery's id jumps past the last by more than this (`_quickSequenceAckDiff`). */
const QUICK_ACK_DIFF = 300;
/** The SDK's acknowledgement loop runs every second per client (an AbortableTask of 1000 ms). */
const ACK_INTERVAL_MS = 1000;
const ACK_SLOTS = 10;

/**
 * Our relay with reliable subscribers (json.reliable.webpubsub.azure.v1)
 * acknowledging as @azure/web-pubsub-client 1.0 does: a cumulative
 * `sequenceAck` of the highest id seen, once a second per client when it
 * moved, and at once when an id jumps by more than 300. One shared timer
 * spreads the clients over ten slots of a second (each client in its slot
 * once a second, as the SDK's per-client loops fall at different phases).
 */
export function reliableRelayClients(subscriberPort: number, publisherPort: number): FanoutClients {
  const states: AckState[] = [];
  const ack = (s: AckState) => {
    s.updated = false;
    s.ws?.send(OP_TEXT, `{"type":"sequenceAck","sequenceId":${s.highest}}`);
  };
  let slot = 0;
  const timer = setInterval(() => {
    for (let i = slot; i < states.length; i += ACK_SLOTS) if (states[i].updated && !states[i].ws?.closed) ack(states[i]);
    slot = (slot + 1) % ACK_SLOTS;
  }, ACK_INTERVAL_MS / ACK_SLOTS);
  return {
    async subscribe(onEvent, onClosed) {
      const state: AckState = { highest: 0, updated: false };
      states.push(state);
      state.ws = await openPubSubClient(subscriberPort, 'json.reliable.webpubsub.azure.v1', [GROUP], {
        onEvent,
        onClosed,
        onSequenceId(id) {
          if (id <= state.highest) return;
          const diff = id - state.highest;
          state.highest = id;
          state.updated = true;
          if (diff > QUICK_ACK_DIFF && state.ws) ack(state);
        },
      });
      return state.ws;
    },
    publisher: () => relayPublisher(publisherPort),
    close: () => clearInterval(timer),
    acknowledgeAll() {
      for (const s of states) if (s.updated && !s.ws?.closed) ack(s);
    },
  };
}

/**
 * NATS over WebSocket (nats-server's websocket listener): the client protocol
 * is text lines; MSG lines carry a byte count, and lines may be split across
 * WebSocket frames, so each subscriber keeps what it has not parsed yet.
 */
export function natsClients(wsPort: number): FanoutClients {
  const CRLF = Buffer.from('\r\n');
  return {
    subscribe(onEvent) {
      return new Promise((resolve, reject) => {
        let rest: Buffer | undefined;
        let ws: LeanWs | undefined;
        let subscribed = false;
        const parse = (buf: Buffer) => {
          let at = 0;
          while (at < buf.length) {
            const eol = buf.indexOf(CRLF, at);
            if (eol < 0) break;
            const c0 = buf[at];
            if (c0 === 0x4d /* M */) {
              // MSG <subject> <sid> <bytes>
              let bytes = 0;
              let i = eol - 1;
              let scale = 1;
              while (buf[i] !== 0x20) {
                bytes += (buf[i] - 48) * scale;
                scale *= 10;
                i--;
              }
              if (eol + 2 + bytes + 2 > buf.length) break;
              onEvent(buf, eol + 2);
              at = eol + 2 + bytes + 2;
              continue;
            }
            if (c0 === 0x50 && buf[at + 1] === 0x49 /* PING */) ws!.send(OP_TEXT, 'PONG\r\n');
            else if (c0 === 0x50 && buf[at + 1] === 0x4f /* PONG */ && !subscribed) {
              subscribed = true;
              resolve(ws!);
            } else if (c0 === 0x2d /* -ERR */) reject(new Error(buf.subarray(at, eol).toString()));
            at = eol + 2;
          }
          rest = at < buf.length ? Buffer.from(buf.subarray(at)) : undefined;
        };
        LeanWs.open({
          port: wsPort,
          path: '/',
          onFrame(_op, payload) {
            parse(rest ? Buffer.concat([rest, payload]) : payload);
          },
        }).then((opened) => {
          ws = opened;
          ws.send(OP_TEXT, `CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nSUB ${GROUP} 1\r\nPING\r\n`);
        }, reject);
      });
    },
    async publisher() {
      const ws = await LeanWs.open({
        port: wsPort,
        path: '/',
        onFrame(_op, payload) {
          if (payload.includes('PING\r\n')) ws.send(OP_TEXT, 'PONG\r\n');
        },
      });
      ws.send(OP_TEXT, 'CONNECT {"verbose":false,"pedantic":false}\r\n');
      return {
        publish(payloads) {
          ws.send(OP_TEXT, payloads.map((p) => `PUB ${GROUP} ${EVENT_BYTES}\r\n${p}\r\n`).join(''));
        },
        close: () => ws.close(),
      };
    },
  };
}

/** MQTT 3.1.1 over WebSocket (Mosquitto's websockets listener), QoS 0. */
export function mqttClients(wsPort: number): FanoutClients {
  let clientCount = 0;
  const connectPacket = () => {
    const id = Buffer.from(`bench-${process.pid}-${clientCount++}`);
    const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c]);
    const body = Buffer.concat([variable, Buffer.from([id.length >> 8, id.length & 0xff]), id]);
    return Buffer.concat([Buffer.from([0x10, body.length]), body]);
  };
  const topic = Buffer.from(GROUP);
  return {
    subscribe(onEvent) {
      return new Promise((resolve, reject) => {
        let rest: Buffer | undefined;
        let ws: LeanWs | undefined;
        const parse = (buf: Buffer) => {
          let at = 0;
          while (at + 2 <= buf.length) {
            const type = buf[at] >> 4;
            let length = 0;
            let scale = 1;
            let i = at + 1;
            let complete = false;
            while (i < buf.length) {
              const b = buf[i++];
              length += (b & 0x7f) * scale;
              scale *= 128;
              if ((b & 0x80) === 0) {
                complete = true;
                break;
              }
            }
            if (!complete || i + length > buf.length) break;
            if (type === 3) {
              const topicLength = buf.readUInt16BE(i);
              onEvent(buf, i + 2 + topicLength);
            } else if (type === 9) resolve(ws!);
            else if (type === 2 && buf[i + 1] !== 0) reject(new Error(`CONNACK ${buf[i + 1]}`));
            at = i + length;
          }
          rest = at < buf.length ? Buffer.from(buf.subarray(at)) : undefined;
        };
        LeanWs.open({
          port: wsPort,
          path: '/',
          protocols: ['mqtt'],
          onFrame(_op, payload) {
            parse(rest ? Buffer.concat([rest, payload]) : payload);
          },
        }).then((opened) => {
          ws = opened;
          const subscribe = Buffer.concat([
            Buffer.from([0x82, 2 + 2 + topic.length + 1, 0x00, 0x01, topic.length >> 8, topic.length & 0xff]),
            topic,
            Buffer.from([0x00]),
          ]);
          ws.send(OP_BINARY, Buffer.concat([connectPacket(), subscribe]));
        }, reject);
      });
    },
    async publisher() {
      const ws = await LeanWs.open({ port: wsPort, path: '/', protocols: ['mqtt'] });
      ws.send(OP_BINARY, connectPacket());
      const head = Buffer.from([0x30, 2 + topic.length + EVENT_BYTES, topic.length >> 8, topic.length & 0xff]);
      return {
        publish(payloads) {
          const parts: Buffer[] = [];
          for (const p of payloads) parts.push(head, topic, Buffer.from(p));
          ws.send(OP_BINARY, Buffer.concat(parts));
        },
        close: () => ws.close(),
      };
    },
  };
}
