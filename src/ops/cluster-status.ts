// GET /$relay/status (Manage): this node's status and, through the bus, every
// other edge's: nodes, hybrid connections with their listener counts, hubs
// with their connection and group counts. Each edge answers ops.status on a
// subject all edges subscribe to; answers are schema-checked like any bus
// message. When the bus is away the answer says so and lists this node only.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Bus, BusMessage, BusSubscription } from '../bus/bus.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type NodeStatus } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { RelayConfig } from '../config/types.ts';
import type { HybridService } from '../hybrid/hybrid-service.ts';
import type { PubSubService } from '../pubsub/pubsub-service.ts';
import { sendJson } from '../http/respond.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ManageAuth } from './manage-auth.ts';
import { EdgesSeen, answerEdge, answerLimit, askOtherEdges } from './other-edges.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';

export type { NodeStatus };

/** How long one gather of the edges' listener counts answers runtime information requests. */
const LISTENER_COUNT_REUSE_MS = 1000;
/** Entities whose recent gathers are kept at most (the oldest go first). */
const MAX_RECENT_COUNTS = 1000;

export interface StatusSources {
  config: RelayConfig;
  bus: Bus;
  subjects: Subjects;
  hybrid: HybridService;
  pubsub: PubSubService;
  shuttingDown(): boolean;
  log: Logger;
}

export class ClusterStatus {
  private readonly startedAt = new Date().toISOString();
  private readonly subscription: BusSubscription;

  constructor(private readonly s: StatusSources) {
    this.subscription = s.bus.subscribe(s.subjects.status(), (m) => this.onBus(m));
  }

  /** This node, as it would answer another; with `entityKey`, only that entity's listeners (named by its key). */
  local(entityKey?: string): NodeStatus {
    const { hybrid, pubsub } = this.s;
    if (entityKey !== undefined) {
      const listeners = hybrid.listeners.count(entityKey);
      return { ...this.identity(), entities: listeners > 0 ? [{ name: entityKey, listeners }] : [], hubs: [] };
    }
    const entities = [...hybrid.listeners.counts()].map(([name, listeners]) => ({ name, listeners })).sort((a, b) => a.name.localeCompare(b.name));
    const hubs = [...pubsub.hubs.values()].map((hub) => {
      const { attached, retained } = pubsub.openCounts(hub);
      return { name: hub.name, connections: attached, groups: hub.local.groupCount, sessionsRetained: retained };
    });
    return { ...this.identity(), entities, hubs };
  }

  /** Which edge this is, and in what state, as each answer begins. */
  private identity(): Pick<NodeStatus, 'nodeId' | 'startedAt' | 'shuttingDown' | 'bus'> {
    const { config, bus } = this.s;
    return { nodeId: config.nodeId, startedAt: this.startedAt, shuttingDown: this.s.shuttingDown(), bus: { kind: bus.kind as 'memory' | 'nats', connected: bus.connected } };
  }

  private onBus(message: BusMessage): void {
    const asked = decodeEdgeMessage(message.data, 'ops.status')?.message;
    if (!asked) return;
    // Its own question too, at once and small (other-edges.ts: a lone edge otherwise waits bus.requestTimeoutMs).
    if (asked.origin === this.s.config.nodeId) return answerEdge(this.s, message, () => encodeEdgeMessage({ op: 'ops.node', ...this.identity(), entities: [], hubs: [] }), 'ops.node');
    answerEdge(this.s, message, () => this.fitted(this.local(asked.entity)), 'ops.node');
  }

  /**
   * An answer within NATS's max_payload: past it, the entities with the fewest listeners are left out and counted
   * (entitiesOmitted). Before, an edge holding thousands of listeners failed to answer at all (TooLarge, logged on
   * that edge only), and the asking edge listed the cluster without it as complete.
   */
  private fitted(status: NodeStatus): Uint8Array {
    const limit = answerLimit(this.s.bus);
    const whole = encodeEdgeMessage({ op: 'ops.node', ...status });
    if (whole.length <= limit) return whole;
    const busiest = [...status.entities].sort((a, b) => b.listeners - a.listeners || a.name.localeCompare(b.name));
    let keep = Math.floor((busiest.length * limit) / whole.length);
    for (;;) {
      const entities = busiest.slice(0, keep).sort((a, b) => a.name.localeCompare(b.name));
      const data = encodeEdgeMessage({ op: 'ops.node', ...status, entities, entitiesOmitted: busiest.length - keep });
      if (data.length <= limit || keep === 0) return data;
      keep = Math.floor(keep * 0.9);
    }
  }

  /**
   * Every node that answered, this one first; `complete` is false when the bus could not be asked; `missing`,
   * the edges that answered within the last 10 minutes and not now.
   */
  async cluster(): Promise<{ nodes: NodeStatus[]; complete: boolean; missing: string[]; problem?: string }> {
    const here = this.local();
    if (!this.s.bus.reachesOtherNodes) return { nodes: [here], complete: true, missing: [] };
    const { answers, missing, problem } = await this.askOthers();
    // The edges that answered lately could not be asked: named, as /$relay/stats lists them under `silent` (before: none).
    if (problem) return { nodes: [here], complete: false, missing: this.seen.missing(new Set()).map((edge) => edge.nodeId), problem };
    return { nodes: [here, ...answers], complete: true, missing };
  }

  /** The edges that answered lately: a question waits for each (up to bus.requestTimeoutMs), not for the stall alone. */
  private readonly seen = new EdgesSeen<NodeStatus>();

  /** Every other edge's status, over the bus (ops.status); with `entityKey`, only that entity's listeners. */
  private async askOthers(entityKey?: string): Promise<{ answers: NodeStatus[]; missing: string[]; problem?: string }> {
    const { config, subjects } = this.s;
    const question = { op: 'ops.status' as const, origin: config.nodeId, ...(entityKey !== undefined ? { entity: entityKey } : {}) };
    const asked = await askOtherEdges<NodeStatus>(this.s, subjects.status(), question, 'ops.node', config.nodeId, this.seen);
    if (asked.problem) return { ...asked, missing: [] };
    return { ...asked, missing: this.seen.missing(new Set(asked.answers.map((a) => a.nodeId))).map((edge) => edge.nodeId) };
  }

  /** The other edges' answers for listenersOf, per entity key, shared by the questions of one moment (bounded). */
  private readonly recentOthers = new Map<string, { at: number; answer: Promise<{ answers: NodeStatus[]; missing: string[]; problem?: string }> }>();

  /**
   * An entity's listeners on every edge (a hybrid connection's runtime information), or why they cannot be counted.
   * This edge's are counted at each question; any sender may ask, so the other edges' answers to one gather serve
   * every question of the next LISTENER_COUNT_REUSE_MS (a sender asking in a loop does not have every edge answer
   * each time), at the price of a count up to that old for listeners on other edges.
   */
  async listenersOf(entityKey: string): Promise<{ listeners: number } | { problem: string }> {
    let others: NodeStatus[] = [];
    if (this.s.bus.reachesOtherNodes) {
      const now = Date.now();
      let recent = this.recentOthers.get(entityKey);
      if (!recent || now - recent.at > LISTENER_COUNT_REUSE_MS) {
        // Only that entity's listeners (before: every edge's whole status, which failed past max_payload).
        recent = { at: now, answer: this.askOthers(entityKey) };
        this.recentOthers.delete(entityKey);
        this.recentOthers.set(entityKey, recent);
        for (const [key, { at }] of this.recentOthers) {
          if (this.recentOthers.size <= MAX_RECENT_COUNTS && now - at <= LISTENER_COUNT_REUSE_MS) break;
          this.recentOthers.delete(key);
        }
      }
      const { answers, problem } = await recent.answer;
      if (problem) return { problem };
      others = answers;
    }
    let listeners = this.s.hybrid.listeners.count(entityKey);
    for (const node of others) for (const e of node.entities) if (asciiLowerCase(e.name) === entityKey) listeners += e.listeners;
    return { listeners };
  }

  async serve(req: IncomingMessage, res: ServerResponse, auth: ManageAuth): Promise<void> {
    if (auth.refuseUnlessManageGet(req, res)) return;
    const { nodes, complete, missing, problem } = await this.cluster();
    // Totals across nodes: listeners and connections add up; a group with
    // members on two nodes counts on each, so groups stay per node.
    const entities = new Map<string, { name: string; listeners: number; nodes: string[] }>();
    const hubs = new Map<string, { name: string; connections: number; sessionsRetained: number }>();
    for (const node of nodes) {
      for (const e of node.entities) {
        const key = asciiLowerCase(e.name);
        const total = entities.get(key) ?? { name: e.name, listeners: 0, nodes: [] };
        total.listeners += e.listeners;
        total.nodes.push(node.nodeId);
        entities.set(key, total);
      }
      for (const h of node.hubs) {
        // Hubs are one by their lower-case name, as entities are (edges may spell a hub differently in their config).
        const key = asciiLowerCase(h.name);
        const total = hubs.get(key) ?? { name: h.name, connections: 0, sessionsRetained: 0 };
        total.connections += h.connections;
        total.sessionsRetained += h.sessionsRetained;
        hubs.set(key, total);
      }
    }
    sendJson(
      res,
      200,
      {
        node: nodes[0].nodeId,
        complete,
        ...(problem ? { problem } : {}),
        missing,
        cluster: { entities: [...entities.values()], hubs: [...hubs.values()] },
        nodes,
      },
      { 'cache-control': 'no-store' },
    );
  }

  close(): void {
    this.subscription.unsubscribe();
  }
}
