// The fan-out scenario over each system: our relay with the in-process bus,
// our relay with NATS (publisher on one edge, subscribers on another, so
// every event crosses the bus), nats-server's WebSocket listener, and
// Mosquitto's WebSocket listener.
import { mqttClients, natsClients, relayClients } from '../lib/fanout-clients.ts';
import type { Ratio, ScenarioResult } from '../lib/report.ts';
import { startMosquitto, startNatsServer, startRelay } from '../lib/systems.ts';
import { runFanout, type FanoutFigures, type FanoutPlan } from './fanout.ts';
import type { Mode, Outcome } from './index.ts';

const OURS_MEMORY = 'edge-relay, memory bus';
const OURS_NATS = 'edge-relay, NATS bus (2 edges)';
const NATS = 'nats-server websocket';
const MOSQUITTO = 'mosquitto websocket';

async function measure(system: string, plan: FanoutPlan): Promise<FanoutFigures> {
  switch (system) {
    case OURS_MEMORY: {
      const relay = await startRelay();
      try {
        return await runFanout(relayClients(relay.port, relay.port), [relay.pid], plan);
      } finally {
        await relay.stop();
      }
    }
    case OURS_NATS: {
      const nats = await startNatsServer();
      const url = `nats://127.0.0.1:${nats.port}`;
      const publisherEdge = await startRelay({ nodeId: 'bench-pub', natsUrl: url });
      const subscriberEdge = await startRelay({ nodeId: 'bench-sub', natsUrl: url });
      try {
        return await runFanout(relayClients(subscriberEdge.port, publisherEdge.port), [nats.pid, publisherEdge.pid, subscriberEdge.pid], plan);
      } finally {
        await subscriberEdge.stop();
        await publisherEdge.stop();
        await nats.stop();
      }
    }
    case NATS: {
      const nats = await startNatsServer();
      try {
        return await runFanout(natsClients(nats.wsPort), [nats.pid], plan);
      } finally {
        await nats.stop();
      }
    }
    case MOSQUITTO: {
      const mosquitto = await startMosquitto();
      try {
        return await runFanout(mqttClients(mosquitto.wsPort), [mosquitto.pid], plan);
      } finally {
        await mosquitto.stop();
      }
    }
  }
  throw new Error(`unknown system ${system}`);
}

export async function fanoutScenario(mode: Mode): Promise<Outcome> {
  const sizes = mode === 'quick' ? [200] : [1000, 10000];
  const results: ScenarioResult[] = [];
  const ratios: Ratio[] = [];
  for (const subscribers of sizes) {
    const scenario = `fan-out ${subscribers}`;
    const plan: FanoutPlan = {
      subscribers,
      seconds: mode === 'quick' ? 1 : 4,
      window: subscribers >= 10000 ? 20 : 100,
      latencySeconds: mode === 'quick' ? 1 : 3,
      latencyShares: mode === 'quick' ? [0.5] : [0.1, 0.25, 0.5],
    };
    const byName = new Map<string, FanoutFigures>();
    for (const system of [OURS_MEMORY, OURS_NATS, NATS, MOSQUITTO]) {
      process.stderr.write(`  ${scenario}: ${system}\n`);
      const f = await measure(system, plan);
      byName.set(system, f);
      results.push({
        scenario,
        system,
        ours: system === OURS_MEMORY || system === OURS_NATS,
        value: f.deliveriesPerSec,
        unit: 'deliveries/s',
        figures: { ...f },
      });
    }
    const ratio = (ours: string, peer: string, target?: number) =>
      ratios.push({ scenario, ours, peer, ratio: byName.get(ours)!.deliveriesPerSec / byName.get(peer)!.deliveriesPerSec, target });
    ratio(OURS_NATS, NATS, 1);
    ratio(OURS_NATS, MOSQUITTO, 2);
    ratio(OURS_MEMORY, NATS);
    ratio(OURS_MEMORY, MOSQUITTO);
  }
  return { results, ratios };
}
