// nats-server's own JetStream, without the relay: the time from a publish to
// its delivery through a pull consumer, for a stream on file storage and one
// on memory storage, on one server, at one open-loop rate. What the file
// store costs by itself is a floor under how close a durable hub on file
// storage can come to the core NATS path (scenarios/durable.ts), whatever
// the relay does. The client does what an edge does: each publish carries a
// `Nats-Msg-Id` and a reply subject for its PubAck (one wildcard
// subscription takes them all), and the consumer is a pull consumer with
// no acks asking for 1,000 messages at a time (src/bus/stream-reader.ts).
import { AckPolicy, DeliverPolicy, StorageType, connect, createInbox, headers, type NatsConnection } from 'nats';
import { Histogram } from '../lib/histogram.ts';
import { startNatsServer } from '../lib/systems.ts';

export type Storage = 'file' | 'memory';

export interface StoreLatency {
  storage: Storage;
  /** The open-loop publish rate, messages per second. */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
}

const PAYLOAD_BYTES = 200;
const RING = 1 << 20;
const CONSUME_BATCH = 1000;
/** How long the deliveries of the last publishes may take to arrive once publishing stops. */
const CATCH_UP_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Spans so far: each one's message ids are its own (a repeated `Nats-Msg-Id` within the duplicate window is dropped). */
let spans = 0;

/** One span on one stream: messages published at `rate` for `seconds` after `warmSeconds`; every delivery in the span recorded. */
async function span(nc: NatsConnection, stream: string, rate: number, warmSeconds: number, seconds: number): Promise<Histogram> {
  const jsm = await nc.jetstreamManager();
  const ci = await jsm.consumers.add(stream, { deliver_policy: DeliverPolicy.New, ack_policy: AckPolicy.None, inactive_threshold: 30e9 });
  const messages = await nc.jetstream().consumers.getPullConsumerFor(ci).consume({ max_messages: CONSUME_BATCH, expires: 5000 });
  const histogram = new Histogram();
  const dueAt = new Float64Array(RING);
  let measureFrom = Infinity;
  let measureTo = Infinity;
  let sent = 0;
  let received = 0;
  const reading = (async () => {
    for await (const m of messages) {
      const d = m.data;
      const n = ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) >>> 0;
      received = n;
      if (n >= measureFrom && n <= measureTo) histogram.record((performance.now() - dueAt[n & (RING - 1)]) * 1000);
    }
  })();
  const replies = createInbox();
  const acks = nc.subscribe(`${replies}.*`, { callback: () => {} });
  const payload = Buffer.alloc(PAYLOAD_BYTES, 0x78);
  const subject = `${stream}.events`;
  const idPrefix = `${stream}-${++spans}-`;
  // Message k is due at start + k / rate; a late timer sends what fell due at once, each stamped when it was due.
  const start = performance.now();
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * rate);
    for (; sent < due; ) {
      sent++;
      dueAt[sent & (RING - 1)] = start + (sent / rate) * 1000;
      const data = Buffer.from(payload);
      data.writeUInt32BE(sent, 0);
      const h = headers();
      h.set('Nats-Msg-Id', idPrefix + sent);
      nc.publish(subject, data, { reply: `${replies}.${sent}`, headers: h });
    }
  }, 1);
  try {
    await sleep(warmSeconds * 1000);
    measureFrom = sent + 1;
    await sleep(seconds * 1000);
    measureTo = sent;
    clearInterval(timer);
    const deadline = Date.now() + CATCH_UP_MS;
    while (received < measureTo) {
      if (Date.now() > deadline) throw new Error(`JetStream store (${stream}): ${measureTo - received} messages not delivered ${CATCH_UP_MS} ms after the last publish`);
      await sleep(10);
    }
  } finally {
    clearInterval(timer);
    messages.stop();
    await reading.catch(() => undefined);
    acks.unsubscribe();
    await jsm.consumers.delete(stream, ci.name).catch(() => undefined);
  }
  return histogram;
}

/**
 * `rounds` pairs of spans, file and memory storage in turn (which goes first
 * alternates), on one nats-server with JetStream (one copy of each stream);
 * each pair is [file, memory].
 */
export async function storeLatencies(rate: number, seconds: number, rounds: number): Promise<StoreLatency[][]> {
  const nats = await startNatsServer({ jetstream: true });
  try {
    const nc = await connect({ servers: `127.0.0.1:${nats.port}`, timeout: 10_000 });
    try {
      const jsm = await nc.jetstreamManager();
      const streams: Record<Storage, string> = { file: 'STORE_FILE', memory: 'STORE_MEMORY' };
      for (const storage of ['file', 'memory'] as const) {
        await jsm.streams.add({ name: streams[storage], subjects: [`${streams[storage]}.>`], storage: storage === 'file' ? StorageType.File : StorageType.Memory, num_replicas: 1 });
      }
      const warm = Math.min(1, seconds / 2);
      const out: StoreLatency[][] = [];
      for (let round = 0; round < rounds; round++) {
        const order: Storage[] = round % 2 === 0 ? ['file', 'memory'] : ['memory', 'file'];
        const pair: StoreLatency[] = [];
        for (const storage of order) {
          const h = await span(nc, streams[storage], rate, warm, seconds);
          pair[storage === 'file' ? 0 : 1] = { storage, rate, p50Ms: h.quantile(0.5) / 1000, p99Ms: h.quantile(0.99) / 1000, p999Ms: h.quantile(0.999) / 1000 };
        }
        out.push(pair);
      }
      return out;
    } finally {
      await nc.close();
    }
  } finally {
    await nats.stop();
  }
}
