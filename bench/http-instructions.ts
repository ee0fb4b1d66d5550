// Instructions the relay's main thread executes per relayed HTTP request,
// counted by valgrind's callgrind: unlike CPU time on this shared machine
// (42-88 us per request for one commit between runs), the count moves by
// about 1 % between runs, so a change to the request path can be judged
// alone. The relay runs under callgrind with counting off; our lean listener
// answers on its control channel, and keep-alive connections of our own
// generator send GETs, each one in flight: first a warm-up (V8 compiles the
// hot path), then the counted requests. The garbage collector's part is
// shown apart: where its runs fall in the window moves the total more than
// anything else.
//
//   node --import tsx bench/http-instructions.ts [--requests N] [--warmup N] [--connections N] [--keep DIR] [--out FILE]
//
// `--keep DIR` writes there the callgrind dump (`callgrind.http.out`), node's
// perf map of the relay's JIT-compiled code (`perf.http.map`; the relay runs
// with `--perf-basic-prof` then) and `top.http.txt`: the 40 functions that ran
// the most instructions themselves, JavaScript named from that map.
//
// Needs valgrind (Debian: apt-get install valgrind); takes a few minutes.
import { parseArgs } from 'node:util';
import { countInstructions, dumpCounts, keepProfile, mainThreadCount, profilingFlags, requireCallgrind, startRelayUnderCallgrind, writeCounts } from './lib/callgrind.ts';
import { LeanHttpConnection } from './lib/lean-http.ts';
import { openLeanListener } from './lib/lean-listener.ts';
import { tempDir } from './lib/processes.ts';
import { ENTITY, relayConfigFile } from './lib/systems.ts';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '10000' },
    warmup: { type: 'string', default: '40000' },
    connections: { type: 'string', default: '16' },
    keep: { type: 'string' },
    out: { type: 'string' },
  },
});
const requests = Number(values.requests);
const warmup = Number(values.warmup);
const connections = Number(values.connections);
requireCallgrind('http-instructions');

const dir = tempDir();
const relay = await startRelayUnderCallgrind(dir, relayConfigFile(), values.keep ? profilingFlags(dir) : []);
let listener: Awaited<ReturnType<typeof openLeanListener>> | undefined;
try {
  const port = relay.port;
  listener = await openLeanListener({ port, httpBody: Buffer.from('ok') });
  const clients = await Promise.all(Array.from({ length: connections }, () => LeanHttpConnection.open(port, `/${ENTITY}/hello`)));
  /** `count` requests over every connection, each with one in flight. */
  const send = async (count: number) => {
    let left = count;
    await Promise.all(clients.map(async (c) => {
      while (left-- > 0) await c.get();
    }));
  };
  process.stderr.write(`warm-up: ${warmup} requests under valgrind...\n`);
  await send(warmup);
  countInstructions(relay.pid, true);
  await send(requests);
  countInstructions(relay.pid, false);
  dumpCounts(relay.pid);
  for (const c of clients) c.close();
} finally {
  listener?.close();
  await relay.stop();
}

const { dump, total, gc } = mainThreadCount(dir);
if (values.keep) keepProfile(values.keep, 'http', dump, relay.pid);
const perRequest = (n: number) => Math.round(n / requests);
const result = { requests, warmup, connections, instructionsPerRequest: perRequest(total), gcPerRequest: perRequest(gc), withoutGcPerRequest: perRequest(total - gc) };
process.stdout.write(
  [
    '| relayed GETs counted | instructions per request (main thread) | of it garbage collection | without it |',
    '|---|---|---|---|',
    `| ${requests} | ${result.instructionsPerRequest.toLocaleString('en')} | ${result.gcPerRequest.toLocaleString('en')} | ${result.withoutGcPerRequest.toLocaleString('en')} |`,
    '',
  ].join('\n'),
);
writeCounts('http-instructions', values.out, result);
