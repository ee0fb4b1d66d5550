// GET /$relay/stats (Manage): every edge's counters and state, what the
// dashboard draws (docs/dashboard.md). Gathered over the bus like
// /$relay/status (ops.stats, answered by each edge with ops.edge), but with
// the traffic: requests, connects, bytes and failures of hybrid connections,
// events published, received and delivered per hub, its largest groups.
// Counters run from each edge's start; the viewer turns two snapshots into
// rates with the edge's own clock (`at`). Answers stay bounded: the busiest
// `top` entities (at most MAX_TOP), at most MAX_HUBS hubs, each with its
// GROUPS_PER_HUB largest groups. This edge remembers the edges that answered
// (EdgesSeen in other-edges.ts: bounded, for 10 minutes), so one that stops answering is
// listed under `silent` rather than silently gone.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Bus, BusMessage, BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type EdgeStats, type HubStats } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { RelayConfig } from '../config/types.ts';
import { failEdgeRequest } from '../http/edge-errors.ts';
import { sendJson } from '../http/respond.ts';
import type { HybridService } from '../hybrid/hybrid-service.ts';
import type { PubSubService } from '../pubsub/pubsub-service.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { RelayMetrics } from '../telemetry/metrics.ts';
import type { ManageAuth } from './manage-auth.ts';
import { EdgesSeen, answerEdge, answerLimit, askOtherEdges } from './other-edges.ts';

export const DEFAULT_TOP = 20;
export const MAX_TOP = 50;
export const MAX_HUBS = 100;
export const GROUPS_PER_HUB = 10;

export interface StatsSources {
  config: RelayConfig;
  bus: Bus;
  subjects: Subjects;
  hybrid: HybridService;
  pubsub: PubSubService;
  metrics: RelayMetrics;
  publicUrl: string;
  shuttingDown(): boolean;
  log: Logger;
}

/** An edge that answered before and not this time. */
export interface SilentEdge {
  nodeId: string;
  publicUrl: string;
  /** When it last answered, ms since the epoch (this edge's clock). */
  lastSeen: number;
}

export interface ClusterSnapshot {
  nodes: EdgeStats[];
  silent: SilentEdge[];
  complete: boolean;
  problem?: string;
}

async function total(counter: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await counter.get()).values.reduce((n, v) => n + v.value, 0);
}

/**
 * An edge's stats within `limit` bytes on the bus: whole when they fit; else without the hubs' largest groups, then
 * with the busiest half of the hubs and of the entities, and half again, until they fit (`trimmed` says so). Group
 * names are the clients' choice (300 characters, each up to 6 bytes in JSON), and 100 hubs of them made an answer
 * over NATS's default 1 MiB, which the edge could not send at all (found by review).
 */
export function fittedStats(stats: EdgeStats, limit: number): Uint8Array {
  const whole = encodeEdgeMessage({ op: 'ops.edge', ...stats });
  if (whole.length <= limit) return whole;
  const hubs = stats.hubs.map((hub) => ({ ...hub, topGroups: [] }));
  let keepHubs = hubs.length;
  let keepEntities = stats.hybrid.entities.length;
  for (;;) {
    const data = encodeEdgeMessage({
      op: 'ops.edge',
      ...stats,
      hybrid: { ...stats.hybrid, entities: stats.hybrid.entities.slice(0, keepEntities) },
      hubs: hubs.slice(0, keepHubs),
      trimmed: true,
    });
    if (data.length <= limit || (keepHubs === 0 && keepEntities === 0)) return data;
    keepHubs = Math.floor(keepHubs / 2);
    keepEntities = Math.floor(keepEntities / 2);
  }
}

export class ClusterStats {
  private readonly startedAt = new Date().toISOString();
  private readonly subscription: BusSubscription;
  /** The edges that answered lately: whom a question waits for, and those listed under `silent` (other-edges.ts). */
  private readonly seen = new EdgesSeen<EdgeStats, string>((answer) => answer.publicUrl);

  constructor(private readonly s: StatsSources) {
    this.subscription = s.bus.subscribe(s.subjects.stats(), (m) => this.onBus(m));
  }

  /** This edge's counters, as it would answer another. */
  async local(top = DEFAULT_TOP): Promise<EdgeStats> {
    const { hybrid, pubsub, metrics } = this.s;
    const { entityCount, entities } = hybrid.traffic.snapshot(hybrid.listeners.counts(), top);
    const hubs: HubStats[] = [];
    for (const hub of pubsub.hubs.values()) {
      let plain = 0;
      let reliable = 0;
      let retained = 0;
      for (const c of hub.local.connections.values()) {
        if (c.ended) continue;
        if (c.socket) {
          if (c.session) reliable++;
          else plain++;
        } else if (c.session) retained++;
      }
      // Each hub's 10 largest, whatever `top` is (it counts hybrid connections; before, top=3 cut these to 3 too).
      const topGroups = hub.local.largestGroups(GROUPS_PER_HUB).map((g) => ({ name: g.name.slice(0, 300), members: g.members }));
      hubs.push({ name: hub.name, plain, reliable, retained, groups: hub.local.groupCount, topGroups, ...hub.traffic });
    }
    hubs.sort((a, b) => b.plain + b.reliable + b.retained - (a.plain + a.reliable + a.retained) || a.name.localeCompare(b.name));
    return {
      ...this.identity(),
      rss: process.memoryUsage.rss(),
      connections: { ...hybrid.openConnections(), pubsub: pubsub.openCounts().attached },
      hybrid: {
        requests: hybrid.traffic.requests,
        connects: hybrid.traffic.connects,
        bytes: hybrid.traffic.bytes,
        failures: Object.fromEntries(hybrid.traffic.failures),
        entityCount,
        entities,
      },
      hubs: hubs.slice(0, MAX_HUBS),
      limitRefusals: await total(metrics.limitRefusals),
      traceDropped: await total(metrics.traceDropped),
    };
  }

  private onBus(message: BusMessage): void {
    const asked = decodeEdgeMessage(message.data, 'ops.stats')?.message;
    if (!asked) return;
    // Its own question too, at once and small (other-edges.ts: a lone edge otherwise waits bus.requestTimeoutMs).
    if (asked.origin === this.s.config.nodeId) return answerEdge(this.s, message, () => encodeEdgeMessage({ op: 'ops.edge', ...this.selfAnswer() }), 'ops.edge');
    // (Before, a reply the bus refused, one over max_payload, was thrown inside this promise: the edge ended, exit 70.)
    void this.local(asked.top).then(
      (stats) => answerEdge(this.s, message, () => fittedStats(stats, answerLimit(this.s.bus)), 'ops.edge'),
      (err: Error) => this.s.log.warn({ event: 'stats.failed', err: err.message }),
    );
  }

  /** Which edge this is, and in what state, as each answer begins. */
  private identity(): Pick<EdgeStats, 'nodeId' | 'publicUrl' | 'startedAt' | 'at' | 'shuttingDown' | 'bus'> {
    const { config, bus } = this.s;
    return { nodeId: config.nodeId, publicUrl: this.s.publicUrl, startedAt: this.startedAt, at: Date.now(), shuttingDown: this.s.shuttingDown(), bus: { kind: bus.kind, connected: bus.connected } };
  }

  /** What this edge answers its own question with: dropped by the asker, only there to end the wait. */
  private selfAnswer(): EdgeStats {
    const none = { listener: 0, relayed_websocket: 0, http_request: 0, pubsub: 0 };
    return {
      ...this.identity(),
      rss: 0,
      connections: none,
      hybrid: { requests: 0, connects: 0, bytes: 0, failures: {}, entityCount: 0, entities: [] },
      hubs: [],
      limitRefusals: 0,
      traceDropped: 0,
    };
  }

  /** Every edge that answered, this one first; edges that answered before and not now under `silent`. */
  async cluster(top = DEFAULT_TOP): Promise<ClusterSnapshot> {
    const here = await this.local(top);
    const { bus, config, subjects } = this.s;
    const nodes = [here];
    let problem: string | undefined;
    if (bus.reachesOtherNodes) {
      const asked = await askOtherEdges<EdgeStats>(this.s, subjects.stats(), { op: 'ops.stats', origin: config.nodeId, top }, 'ops.edge', here.nodeId, this.seen);
      nodes.push(...asked.answers);
      problem = asked.problem;
    }
    const silent: SilentEdge[] = this.seen.missing(new Set(nodes.map((n) => n.nodeId))).map(({ nodeId, lastSeen, info }) => ({ nodeId, publicUrl: info, lastSeen }));
    return { nodes, silent, complete: problem === undefined, ...(problem ? { problem } : {}) };
  }

  async serve(req: IncomingMessage, res: ServerResponse, auth: ManageAuth): Promise<void> {
    if (auth.refuseUnlessManageGet(req, res)) return;
    const given = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('top') ?? '';
    // Before: `top=2.5` or `top=ten` was taken as the default, so a mistyped query drew another figure unsaid.
    if (given !== '' && !/^\d+$/.test(given)) return failEdgeRequest(res, 'BadRequest', 'top must be a whole number (taken as the nearer of 1 and 50 outside them)');
    const top = given === '' ? DEFAULT_TOP : Math.min(MAX_TOP, Math.max(1, Number(given)));
    const snapshot = await this.cluster(top);
    if (res.destroyed) return;
    sendJson(res, 200, { node: this.s.config.nodeId, at: Date.now(), top, ...snapshot }, { 'cache-control': 'no-store' });
  }

  close(): void {
    this.subscription.unsubscribe();
  }
}
