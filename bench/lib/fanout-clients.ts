// Subscribers and publishers for the fan-out scenario, one pair per system,
// all on the lean WebSocket client. Every event's payload is 100 bytes that
// start with `@` and a 9-digit sequence number, which is all a subscriber
// reads: it finds the `@`, and the generator looks up when that event was sent.
import { LeanWs, OP_BINARY, OP_TEXT, maskedFrame } from './lean-ws.ts';
import { clientPath } from './systems.ts';

export const EVENT_BYTES = 100;
export const GROUP = 'g';

/** Called once per event a subscriber receives: `buf[at]` is the event's `@`. */
export type OnEvent = (buf: Buffer, at: number) => void;

export interface Publisher {
  /** Publishes these payloads in one write. */
  publish(payloads: string[]): void;
  close(): void;
}

export interface FanoutClients {
  /** Resolves once the subscriber is in the group. */
  subscribe(onEvent: OnEvent): Promise<LeanWs>;
  publisher(): Promise<Publisher>;
}

export function eventPayload(seq: number): string {
  return '@' + String(seq).padStart(9, '0') + 'x'.repeat(EVENT_BYTES - 10);
}

export function seqAt(buf: Buffer, at: number): number {
  let n = 0;
  for (let i = at + 1; i < at + 10; i++) n = n * 10 + (buf[i] - 48);
  return n;
}

/** A client of our relay's bench hub in `groups` (through its token); resolves once `connected` arrived. */
export function openPubSubClient(port: number, protocol: string, groups: string[], onEvent?: OnEvent): Promise<LeanWs> {
  return new Promise((resolve, reject) => {
    let ready: LeanWs | undefined;
    let connected = false;
    LeanWs.open({
      port,
      path: clientPath(port, { groups }),
      protocols: [protocol],
      onFrame(_op, payload) {
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
    subscribe(onEvent) {
      return openPubSubClient(subscriberPort, 'json.webpubsub.azure.v1', [GROUP], onEvent);
    },
    async publisher() {
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
