// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function,
// highest first, as shares of the time the process was busy (a relay is idle
// while the bench loads another system, so shares of the whole run say
// little). `node --import tsx bench/profile-summary.ts FILE [TOP]`.
// Node processes started by the bench (relays, bridges) write one when
// BENCH_PROFILE_DIR is set.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

const [file, topText] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: profile-summary.ts FILE.cpuprofile [TOP]\n');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
let total = 0;
let idle = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  const frame = byId.get(id)!.callFrame;
  if (frame.functionName === '(idle)') {
    idle += dt;
    return;
  }
  const where = frame.url ? `${frame.url.replace(/^.*\/(node_modules|src|bench)\//, '$1/')}:${frame.lineNumber + 1}` : '';
  const key = `${frame.functionName || '(anonymous)'} ${where}`.trim();
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
});
process.stdout.write(`busy ${((total / 1e6) || 0).toFixed(1)} s of ${((total + idle) / 1e6).toFixed(1)} s; shares of busy time:\n`);
const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(topText ?? 30));
for (const [key, micros] of top) process.stdout.write(`${((100 * micros) / total).toFixed(1).padStart(5)}%  ${key}\n`);
