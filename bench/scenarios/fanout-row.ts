// One row of the fan-out scenario in a process of its own, the load generator
// for that row alone (fanout-systems.ts starts it): `node --import tsx
// bench/scenarios/fanout-row.ts '{"system": ..., "plan": ...}'` prints the
// row's figures as one JSON line. In one generator process for every row,
// what ran before counted: the reliable NATS-bus row at 10,000 read 0.58x to
// 1.14x nats-server over four runs of one hour, with the same relay.
import { measure } from './fanout-systems.ts';
import type { FanoutPlan } from './fanout.ts';

const { system, plan } = JSON.parse(process.argv[2] ?? '{}') as { system: string; plan: FanoutPlan };
const figures = await measure(system, plan);
process.stdout.write(`${JSON.stringify(figures)}\n`);
// Whatever a client library left behind (a timer, a socket closing) does not hold the row's end.
process.exit(0);
