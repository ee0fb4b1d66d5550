// The bench's scenarios by name (`npm run bench -- NAME`).
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { bridgeScenario } from './bridge.ts';
import { durableScenario } from './durable.ts';
import { dashboardScenario } from './dashboard.ts';
import { fanoutScenario } from './fanout-systems.ts';
import { httpScenario } from './http.ts';
import { memoryScenario } from './memory.ts';
import { rendezvousScenario } from './rendezvous.ts';
import { tunnelScenario } from './tunnel.ts';

export type Mode = 'quick' | 'full';

export interface Outcome {
  /** Each result's group is filled in by run.ts. */
  results: ScenarioResult[];
  ratios: Ratio[];
}

/** Commands each scenario starts besides node (Debian packages of the same names). */
export const NEEDS: Record<string, string[]> = {
  fanout: ['nats-server', 'mosquitto'],
  tunnel: ['socat', 'haproxy'],
  http: ['nginx', 'wrk'],
  bridge: ['socat', 'haproxy', 'iperf3'],
  rendezvous: [],
  memory: ['nats-server'],
  durable: ['nats-server'],
  dashboard: ['nats-server'],
};

export const SCENARIOS: Record<string, (mode: Mode) => Promise<Outcome>> = {
  fanout: fanoutScenario,
  tunnel: tunnelScenario,
  bridge: bridgeScenario,
  http: httpScenario,
  rendezvous: rendezvousScenario,
  memory: memoryScenario,
  durable: durableScenario,
  dashboard: dashboardScenario,
};
