// How a hub's cluster-wide operation (a REST close, membership change,
// exists, group list or permission; hub-cluster.ts) reaches the other edges
// and gathers their ps.done answers: one about a connection from the edge
// holding it, the others from every edge of the hub's roster (hub-roster.ts),
// however late each answers; on a durable hub, a question about a group is
// asked at a stream position. Apart from the hub because asking is its own
// job: whom to wait for, how long, and when a lost bus voids the answers.
import { BusError, type Bus } from '../bus/bus.ts';
import { StoreError } from '../bus/jetstream-errors.ts';
import { decodeEdgeMessage, encodeEdgeMessage, type EdgeMessage, type PsDone, type Target } from '../bus/messages.ts';
import type { Subjects } from '../bus/subjects.ts';
import type { Logger } from '../telemetry/logger.ts';

export interface ClusterCallsDeps {
  bus: Bus;
  /** How often the bus has lost its connection so far (a call it lost it during reached only some edges). */
  busLosses(): number;
  subjects: Subjects;
  log: Logger;
  requestTimeoutMs: number;
  gatherStallMs: number;
}

/** What the calls need of the hub they ask for (hub-cluster.ts). */
export interface CallingHub {
  readonly name: string;
  readonly key: string;
  /** The hub's connections on this edge. */
  readonly local: { readonly connections: { get(connectionId: string): { readonly handover?: { readonly taking?: unknown } } | undefined } };
  subjectOf(target: Target): string;
  /** The other edges on the hub's roster (node ids). */
  otherEdges(): string[];
  /** Set on a durable hub (stream-events.ts): a question about a group is asked at a stream position. */
  readonly durable: { catchUp(): Promise<StreamPosition> } | undefined;
}

/** Where a question about a group is asked in a durable hub's stream; `reached`: this edge applied that far in time. */
export interface StreamPosition {
  at: number;
  reached: boolean;
}

/** Whether this edge is taking the connection from another (its session-handover take under way). */
function isTaking(connection: { readonly handover?: { readonly taking?: unknown } } | undefined): boolean {
  return connection?.handover?.taking !== undefined;
}

export class ClusterCalls {
  constructor(
    private readonly hub: CallingHub,
    private readonly deps: ClusterCallsDeps,
  ) {}

  /**
   * On a durable hub, who is in a group is what the stream says, and each
   * edge applies a change when it reads it (a moment after the ack). A
   * question about a group's members is therefore asked at a stream
   * position: the stream's end when asked, which this edge reaches first and
   * every answering edge before it answers. So a change acknowledged before
   * the question, through any edge, is in its answer. Undefined otherwise
   * (there a change is applied everywhere before it is acknowledged).
   */
  async membershipPosition(target: Target): Promise<StreamPosition | undefined> {
    if (!this.hub.durable || target.kind !== 'group' || !this.deps.bus.reachesOtherNodes) return undefined;
    return this.hub.durable.catchUp();
  }

  /**
   * Asks the other nodes: one node for a connection held elsewhere (nobody
   * holding it answers [] at once); otherwise every edge on the roster
   * (askEveryEdge), or, while the roster is empty, the edges with interest
   * in the target (nobody answers at once when none has it). A question at a
   * stream position (`at`) always goes to every edge: one behind it has not
   * joined the group's subject yet.
   * `encoded` is `request` as the bus carries it, where the caller has it already.
   * Throws BusError('Unavailable') when the bus is away.
   */
  async call(target: Target, localCount: number, request: EdgeMessage & { at?: number }, encoded?: Uint8Array): Promise<PsDone[]> {
    if (!this.deps.bus.reachesOtherNodes) return [];
    const lossesBefore = this.deps.busLosses();
    const answers = await this.askOtherEdges(target, localCount, request, encoded ?? encodeEdgeMessage(request));
    // NATS lost meanwhile: the edges that had not answered may never have heard it (before: answered as if they had).
    if (this.deps.busLosses() !== lossesBefore || !this.deps.bus.connected) {
      throw new BusError('Unavailable', 'the NATS bus was lost during the call: it acted on this edge and those that answered before');
    }
    return answers;
  }

  /**
   * Refuses (StoreError: 503 StoreUnavailable, which the SDK tries again) an
   * answer about a group's members that could miss a change acknowledged
   * before the question: this edge (`position`) or an answering edge (`behind`)
   * had not applied the stream up to it in time (a follower stalled, a burst
   * still being read). Before, each answered with what it held: a member
   * added a moment before was missing, one removed still counted.
   */
  refuseIfBehind(position: StreamPosition | undefined, answers: readonly PsDone[] = []): void {
    if (!position) return;
    const behind = answers.filter((a) => a.behind).map((a) => a.edge ?? 'an edge');
    if (!position.reached) behind.unshift('this edge');
    if (behind.length === 0) return;
    throw new StoreError(
      `not answered: ${behind.join(', ')} had not read the hub's stream up to the question (sequence ${position.at}) within bus.requestTimeoutMs, ` +
        'and a change acknowledged before it could be missing from the answer',
    );
  }

  /**
   * True when the target is a connection this edge is taking from another (session-handover.ts): that edge holds it
   * too until it lets go (commit), and an operation on it is sent there as well (found by review: a close here before
   * the commit ended this copy only, the take was given up, and the session lived on there for its client to recover).
   * Asked before the operation is applied here (a close takes the connection out).
   */
  takingHere(target: Target): boolean {
    return target.kind === 'connection' && isTaking(this.hub.local.connections.get(target.name));
  }

  /** `data` is `request` encoded for the bus. */
  private async askOtherEdges(target: Target, localCount: number, request: EdgeMessage & { at?: number }, data: Uint8Array): Promise<PsDone[]> {
    const bus = this.deps.bus;
    if (target.kind === 'connection') {
      const here = this.hub.local.connections.get(target.name);
      if (isTaking(here)) {
        try {
          await bus.request(this.hub.subjectOf(target), data, this.deps.requestTimeoutMs);
        } catch {
          // no other edge holds it (any more), or it did not answer: this edge's own copy was acted on
        }
        return [];
      }
      if (localCount > 0 || here) return [];
      try {
        return doneOf([await bus.request(this.hub.subjectOf(target), data, this.deps.requestTimeoutMs)]);
      } catch (err) {
        if (err instanceof BusError && err.code === 'NoResponders') return [];
        throw err;
      }
    }
    const expected = this.hub.otherEdges();
    if (expected.length > 0 || request.at !== undefined) return this.askEveryEdge(request.op, data, expected);
    return doneOf(await bus.gather(this.hub.subjectOf(target), data, { maxWaitMs: this.deps.requestTimeoutMs, stallMs: this.deps.gatherStallMs }));
  }

  /**
   * A question or change for every edge of the hub: waits for an answer from
   * each edge in `expected` (the roster; bounded by requestTimeoutMs, one that
   * stays silent is logged), then gatherStallMs for edges it does not know
   * yet. So an edge that answers late (busy, paused) still counts, and a
   * change is applied on every edge on the roster before it is acknowledged.
   */
  private async askEveryEdge(op: string, data: Uint8Array, expected: string[]): Promise<PsDone[]> {
    const waitingFor = new Set(expected);
    const answers: PsDone[] = [];
    const awaiting = (raw: readonly Uint8Array[]) => {
      const done = decodeEdgeMessage(raw[raw.length - 1], 'ps.done')?.message;
      if (done) {
        answers.push(done);
        if (done.edge !== undefined) waitingFor.delete(done.edge);
      }
      return waitingFor.size > 0;
    };
    await this.deps.bus.gather(this.deps.subjects.hubAll(this.hub.key), data, {
      maxWaitMs: this.deps.requestTimeoutMs,
      stallMs: this.deps.gatherStallMs,
      awaiting,
    });
    if (waitingFor.size > 0) this.deps.log.warn({ event: 'pubsub.edges_silent', hub: this.hub.name, op, edges: [...waitingFor] });
    return answers;
  }
}

/** The valid ps.done answers among `raw` (others are dropped). */
function doneOf(raw: Uint8Array[]): PsDone[] {
  const answers: PsDone[] = [];
  for (const r of raw) {
    const done = decodeEdgeMessage(r, 'ps.done')?.message;
    if (done) answers.push(done);
  }
  return answers;
}
