// Instructions the relay's main thread executes per fan-out delivery, counted
// by valgrind's callgrind, for plain and for reliable subscribers (acking as
// @azure/web-pubsub-client does) in one group on the memory bus. CPU time
// cannot judge a change to the delivery path on this shared machine (paired
// rounds of the reliable row at 10,000 read 322k to 507k deliveries/s for one
// commit); an instruction count moves little between runs. The relay runs
// under callgrind with counting off; events go out in batches, each batch
// waited for at every subscriber (no subscriber falls behind, the relay's
// queues stay short, as under a load it keeps up with): first a warm-up (V8
// compiles the hot path), then the counted events. The garbage collector's
// part is shown apart, and so are the acknowledgements the reliable clients
// sent while counting (each client its highest id every --ack-every events,
// 200 unless given).
//
//   node --import tsx bench/fanout-instructions.ts [--subscribers N] [--events N] [--warmup N] [--batch N] [--ack-every N] [--kinds plain,reliable] [--keep DIR] [--out FILE]
//
// `--keep DIR` writes there, for each kind, its callgrind dump
// (`callgrind.KIND.out`, for `callgrind_annotate`), node's perf map of its
// JIT-compiled code (`perf.KIND.map`; the relay runs with `--perf-basic-prof`
// then) and `top.KIND.txt`: the 40 functions that ran the most instructions
// themselves, JavaScript named from that map.
//
// Needs valgrind (Debian: apt-get install valgrind); takes a few minutes.
import { parseArgs } from 'node:util';
import { countInstructions, dumpCounts, keepProfile, mainThreadCount, profilingFlags, requireCallgrind, startRelayUnderCallgrind, writeCounts } from './lib/callgrind.ts';
import { eventPayload, relayClients, reliableRelayClients, type FanoutClients } from './lib/fanout-clients.ts';
import type { LeanWs } from './lib/lean-ws.ts';
import { tempDir } from './lib/processes.ts';
import { relayConfigFile } from './lib/systems.ts';

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    events: { type: 'string', default: '400' },
    warmup: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '20' },
    'ack-every': { type: 'string', default: '200' },
    kinds: { type: 'string', default: 'plain,reliable' },
    keep: { type: 'string' },
    out: { type: 'string' },
  },
});
const subscribers = Number(values.subscribers);
const events = Number(values.events);
const warmup = Number(values.warmup);
const batch = Number(values.batch);
const ackEvery = Number(values['ack-every']);
const kinds = values.kinds.split(',');
for (const [name, n] of Object.entries({ subscribers, events, warmup, batch, 'ack-every': ackEvery })) {
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number of at least 1`);
}
for (const kind of kinds) if (kind !== 'plain' && kind !== 'reliable') throw new Error(`--kinds: unknown kind ${kind} (plain, reliable)`);
requireCallgrind('fanout-instructions');

/** Reliable rows keep as many unacknowledged messages per session as the fan-out scenario's relays do. */
const RELIABLE_LIMITS = { sessionBufferMessages: 200000, sessionBufferBytes: 64 * 1024 * 1024 };
const BATCH_WAIT_MS = 120_000;

interface Counted {
  kind: string;
  deliveries: number;
  instructionsPerDelivery: number;
  gcPerDelivery: number;
  withoutGcPerDelivery: number;
  acksCounted: number;
}

async function countKind(kind: string): Promise<Counted> {
  const dir = tempDir();
  const config = relayConfigFile(kind === 'reliable' ? { limits: RELIABLE_LIMITS } : {});
  const relay = await startRelayUnderCallgrind(dir, config, values.keep ? profilingFlags(dir) : []);
  const port = relay.port;
  const clients: FanoutClients = kind === 'reliable' ? reliableRelayClients(port, port) : relayClients(port, port);
  // Reliable clients acknowledge every --ack-every events, each its highest id, not on the SDK's one-second timer:
  // under valgrind's slowness the timer acknowledged every ~25 deliveries (at full speed about every 1,700), and
  // how many it sent moved the count by 5 % between runs.
  clients.close?.();
  const sockets: LeanWs[] = [];
  let received = 0;
  let acks = 0;
  let waiter: { target: number; resolve(): void } | undefined;
  const onEvent = () => {
    received++;
    if (waiter && received >= waiter.target) {
      waiter.resolve();
      waiter = undefined;
    }
  };
  let closedWhy: string | undefined;
  try {
    for (let i = 0; i < subscribers; i += 50) {
      sockets.push(...(await Promise.all(Array.from({ length: Math.min(50, subscribers - i) }, () => clients.subscribe(onEvent, (why) => (closedWhy ??= why))))));
    }
    for (const ws of sockets) {
      const send = ws.send.bind(ws);
      ws.send = (...args: Parameters<LeanWs['send']>) => {
        acks++;
        return send(...args);
      };
    }
    const publisher = await clients.publisher();
    let seq = 0;
    /** Publishes `count` events in batches, each waited for at every subscriber. */
    const publish = async (count: number) => {
      for (let sent = 0; sent < count; sent += batch) {
        const n = Math.min(batch, count - sent);
        const target = received + n * subscribers;
        const arrived = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${kind}: ${target - received} deliveries missing after ${BATCH_WAIT_MS} ms${closedWhy ? `; a subscriber was closed: ${closedWhy}` : ''}`)), BATCH_WAIT_MS);
          waiter = { target, resolve: () => (clearTimeout(timer), resolve()) };
        });
        publisher.publish(Array.from({ length: n }, () => eventPayload(seq++)));
        await arrived;
        if (Math.floor(seq / ackEvery) !== Math.floor((seq - n) / ackEvery)) clients.acknowledgeAll?.();
      }
    };
    process.stderr.write(`${kind}: warm-up, ${warmup} events to ${subscribers} subscribers under valgrind...\n`);
    await publish(warmup);
    const before = received;
    countInstructions(relay.pid, true);
    acks = 0;
    await publish(events);
    countInstructions(relay.pid, false);
    const acksCounted = acks;
    dumpCounts(relay.pid);
    const deliveries = received - before;
    publisher.close();
    const { dump, total, gc } = mainThreadCount(dir);
    const per = (n: number) => Math.round(n / deliveries);
    if (values.keep) keepProfile(values.keep, kind, dump, relay.pid);
    return { kind, deliveries, instructionsPerDelivery: per(total), gcPerDelivery: per(gc), withoutGcPerDelivery: per(total - gc), acksCounted };
  } finally {
    clients.close?.();
    for (const ws of sockets) ws.close();
    await relay.stop();
  }
}

const rows: Counted[] = [];
for (const kind of kinds) rows.push(await countKind(kind));
process.stdout.write(
  [
    `| subscribers | kind | deliveries counted | instructions per delivery (main thread) | of it garbage collection | without it | acknowledgements counted |`,
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${subscribers} | ${r.kind} | ${r.deliveries} | ${r.instructionsPerDelivery.toLocaleString('en')} | ${r.gcPerDelivery.toLocaleString('en')} | ${r.withoutGcPerDelivery.toLocaleString('en')} | ${r.acksCounted} |`),
    '',
  ].join('\n'),
);
writeCounts('fanout-instructions', values.out, { subscribers, events, warmup, batch, ackEvery, rows });
