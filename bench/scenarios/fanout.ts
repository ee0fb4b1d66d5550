// Fan-out: one publisher, one group of N subscribers, 100-byte events.
// Saturation: the publisher keeps a window of events in flight (sent but not
// yet delivered to every subscriber) and the generator counts deliveries.
// Latency: the publisher sends at half the saturated rate, open loop, and
// every delivery's time from when its event was due to be sent goes into an
// HDR histogram; likewise at lower shares and at rates given by the caller
// (a peer's half load).
import { Histogram } from '../lib/histogram.ts';
import { CpuMeter, treeWriteCalls } from '../lib/processes.ts';
import { eventPayload, seqAt, type FanoutClients, type Publisher } from '../lib/fanout-clients.ts';
import type { LeanWs } from '../lib/lean-ws.ts';

export interface FanoutFigures {
  subscribers: number;
  /** Events delivered to subscribers per second at saturation (one event to N subscribers counts N). */
  deliveriesPerSec: number;
  eventsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** CPU of the load generator and of the system's processes, percent of one core, during saturation. */
  generatorCpu: number;
  serverCpu: number;
  /** The part of serverCpu spent in the kernel. */
  serverKernelCpu: number;
  /** The same during the latency run at half the saturated rate. */
  generatorCpuAtHalf: number;
  serverCpuAtHalf: number;
  /**
   * Also, when the servers' write calls can be read (processes.ts treeWriteCalls), deliveriesPerWrite:
   * deliveries at saturation per write/writev call of the server processes, how many events a server
   * puts into one socket write (a sender, a generator or a NATS route write counts as well).
   * And p99 at lower shares of the saturated rate (p99At10PctMs, ...).
   */
  [sweep: string]: number;
}

export interface FanoutPlan {
  subscribers: number;
  seconds: number;
  /** Events in flight at saturation. */
  window: number;
  latencySeconds: number;
  /** Shares of the saturated rate to measure latency at; 0.5 is always measured (the p50/p99/p99.9 figures). */
  latencyShares: number[];
  /**
   * Event rates (events/s) to measure latency at as well, whatever this system's
   * saturated rate: a peer's half load, so that systems are also compared at the
   * same offered load. Each gives the figure `p99At<name>Ms`.
   */
  latencyRates?: { name: string; eventsPerSec: number }[];
}

const RING = 1 << 20;

/** Write calls of every server process tree so far; undefined when one cannot be read. */
function writeCalls(pids: number[]): number | undefined {
  let total = 0;
  for (const pid of pids) {
    const calls = treeWriteCalls(pid);
    if (calls === undefined) return undefined;
    total += calls;
  }
  return total;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inBatches<T>(count: number, batch: number, open: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i += batch) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(batch, count - i) }, (_, k) => open(i + k)))));
  }
  return out;
}

export async function runFanout(clients: FanoutClients, serverPids: number[], plan: FanoutPlan): Promise<FanoutFigures> {
  const n = plan.subscribers;
  const sentAt = new Float64Array(RING);
  const perSubscriber = new Uint32Array(n);
  let delivered = 0;
  let measuring: Histogram | undefined;
  let onDelivered: () => void = () => {};
  // A subscriber the server closes (slow consumer, session buffer full) ends the run: its figures would not hold.
  let closedByServer = 0;
  let firstClose = '';
  let tearingDown = false;
  const check = () => {
    if (closedByServer > 0) throw new Error(`fan-out: the server closed ${closedByServer} of ${n} subscribers (first: ${firstClose})`);
  };
  const drain = async (timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!caughtUp()) {
      check();
      if (Date.now() > deadline) throw new Error('fan-out: deliveries did not catch up in time');
      await sleep(10);
    }
  };
  let caughtUp = () => true;
  let sockets: LeanWs[] = [];
  let publisher: Publisher | undefined;
  try {
    sockets = await inBatches(n, 200, (i) =>
      clients.subscribe(
        (buf, at) => {
          delivered++;
          perSubscriber[i]++;
          if (measuring) measuring.record((performance.now() - sentAt[seqAt(buf, at) & (RING - 1)]) * 1000);
          onDelivered();
        },
        (why) => {
          if (tearingDown) return;
          closedByServer++;
          firstClose ||= why;
        },
      ),
    );
    const pub = (publisher = await clients.publisher());
    let seq = 0;
    /** Publishes `count` events, each stamped `intendedAt(i)` (open loop) or now. */
    const publish = (count: number, intendedAt?: (i: number) => number) => {
      const payloads: string[] = [];
      const now = performance.now();
      for (let i = 0; i < count; i++) {
        seq++;
        sentAt[seq & (RING - 1)] = intendedAt ? intendedAt(i) : now;
        payloads.push(eventPayload(seq));
      }
      pub.publish(payloads);
    };
    // Prime: an event at a time until every subscriber has had one (subscriptions
    // can take a moment to take effect); each waits for the slowest so no backlog builds.
    const primeDeadline = Date.now() + 60000;
    while (perSubscriber.some((c) => c === 0)) {
      check();
      if (Date.now() > primeDeadline) throw new Error(`fan-out: ${perSubscriber.filter((c) => c === 0).length} of ${n} subscribers never got an event`);
      const before = delivered;
      publish(1);
      const waitUntil = Date.now() + 1000;
      while (delivered - before < n && Date.now() < waitUntil) await sleep(5);
    }
    // Settling pauses are a quarter of the measuring time, capped (quick mode measures for 0.5 s and only checks that a row runs).
    const settle = (capMs: number, measuringSeconds: number) => sleep(Math.min(capMs, (measuringSeconds * 1000) / 4));
    await settle(200, plan.seconds);

    // Saturation, closed loop on the in-flight window.
    // Prime events that reached only some subscribers stay out of the books.
    const baseSeq = seq;
    const baseDelivered = delivered;
    caughtUp = () => delivered - baseDelivered >= (seq - baseSeq) * n;
    let pumpQueued = false;
    const pump = () => {
      pumpQueued = false;
      const inFlight = seq - baseSeq - (delivered - baseDelivered) / n;
      if (inFlight < plan.window) publish(Math.min(32, Math.ceil(plan.window - inFlight)));
    };
    onDelivered = () => {
      if (!pumpQueued) {
        pumpQueued = true;
        setImmediate(pump);
      }
    };
    pump();
    await settle(500, plan.seconds);
    const startDelivered = delivered;
    const meter = new CpuMeter(serverPids);
    const writesBefore = writeCalls(serverPids);
    const t0 = performance.now();
    await sleep(plan.seconds * 1000);
    // A slow system (Mosquitto at 10,000) may take longer than that to fan one
    // window out: measure on, a second at a time (bounded), until it delivers.
    for (let extra = 0; delivered === startDelivered && extra < 30; extra++) await sleep(1000);
    const elapsed = (performance.now() - t0) / 1000;
    const deliveriesPerSec = (delivered - startDelivered) / elapsed;
    const cpu = meter.read();
    const writesAfter = writeCalls(serverPids);
    const writes = writesBefore !== undefined && writesAfter !== undefined ? writesAfter - writesBefore : 0;
    const perWrite: Record<string, number> = writes > 0 ? { deliveriesPerWrite: (delivered - startDelivered) / writes } : {};
    if (process.env.BENCH_VERBOSE) process.stderr.write(`  saturated: ${Math.round(deliveriesPerSec)} deliveries/s; CPU % generator ${cpu.generator.toFixed(0)}, each server process ${cpu.perServer.map((c) => c.toFixed(0)).join(' / ')}; deliveries per write call ${perWrite.deliveriesPerWrite?.toFixed(1) ?? 'not counted (no write or writev calls)'}\n`);
    onDelivered = () => {};
    check();
    await drain(10000);

    if (deliveriesPerSec === 0) throw new Error('fan-out: nothing was delivered at saturation');

    // Latency at a share of the saturated event rate, open loop.
    const eventsPerSec = deliveriesPerSec / n;
    const latencyAt = async (rate: number) => {
      const histogram = new Histogram();
      // Event k is due at start + k / rate. A late timer (the generator busy
      // reading deliveries) sends what fell due at once, each stamped with
      // the time it was due, so the wait counts as latency (no coordinated omission).
      const start = performance.now();
      let sent = 0;
      const timer = setInterval(() => {
        const due = Math.floor(((performance.now() - start) / 1000) * rate);
        if (due <= sent) return;
        const first = sent;
        publish(due - first, (i) => start + ((first + i + 1) / rate) * 1000);
        sent = due;
      }, 1);
      await settle(300, plan.latencySeconds);
      const meter = new CpuMeter(serverPids);
      measuring = histogram;
      await sleep(plan.latencySeconds * 1000);
      const cpu = meter.read();
      clearInterval(timer);
      await drain(30000);
      measuring = undefined;
      return { histogram, cpu };
    };
    // The lower shares of this system's own rate, then the rates the caller gave (0.5 comes last, below).
    const sweepRates = [
      ...plan.latencyShares.filter((share) => share !== 0.5).map((share) => ({ name: `${share * 100}Pct`, eventsPerSec: eventsPerSec * share })),
      ...(plan.latencyRates ?? []),
    ];
    const sweep: Record<string, number> = {};
    for (const { name, eventsPerSec: rate } of sweepRates) {
      const { histogram } = await latencyAt(rate);
      sweep[`p99At${name}Ms`] = histogram.quantile(0.99) / 1000;
      if (process.env.BENCH_VERBOSE) process.stderr.write(`  at ${name} (${Math.round(rate)} events/s): p50 ${histogram.quantile(0.5) / 1000} ms, p99 ${histogram.quantile(0.99) / 1000} ms\n`);
    }
    const half = await latencyAt(eventsPerSec * 0.5);
    const histogram = half.histogram;
    return {
      subscribers: n,
      deliveriesPerSec,
      eventsPerSec,
      ...histogram.figuresMs(),
      generatorCpu: cpu.generator,
      serverCpu: cpu.servers,
      serverKernelCpu: cpu.serversKernel,
      generatorCpuAtHalf: half.cpu.generator,
      serverCpuAtHalf: half.cpu.servers,
      ...perWrite,
      ...sweep,
    };
  } finally {
    tearingDown = true;
    clients.close?.();
    publisher?.close();
    for (const ws of sockets) ws.destroy();
  }
}
