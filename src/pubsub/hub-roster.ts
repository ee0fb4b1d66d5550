// Which other edges serve a hub (docs/scaling-out.md, "The roster"). A
// cluster-wide REST call (exists, list, close, membership; cluster-calls.ts)
// waits for an answer from each edge on this roster, not only for those that
// answer within bus.gatherStallMs of each other: an edge busy reading a burst,
// or paused, answers later, and its connections count. On a durable hub an
// edge joins once it reads the hub's stream (before that it could not answer
// a question asked at a stream position).
//
// Each edge says it is here on the hub's `all` subject (ps.here): `hello` once
// it can answer (the others answer with `here` at once, so it knows them too),
// `here` every ANNOUNCE_EVERY_MS, `leaving` when it leaves the bus. An edge not
// heard from for HERE_TTL_MS is taken for gone.

import { SweepClock } from '../websocket/sweep-clock.ts';

/** How often an edge says it is here. */
export const ANNOUNCE_EVERY_MS = 1000;
/** An edge not heard from this long is off the roster (three announcements missed, and some slack). */
export const HERE_TTL_MS = 3500;

export type HereState = 'hello' | 'here' | 'leaving';

export interface RosterTiming {
  announceEveryMs: number;
  ttlMs: number;
  /** The clock entries expire by (ms). */
  now: () => number;
}

export class HubRoster {
  /** Node id -> when it stops counting, and the edge process last heard under it (when it says). */
  private readonly edges = new Map<string, { until: number; boot: string | undefined }>();
  private readonly timer: NodeJS.Timeout;
  private readonly sweepClock: SweepClock;
  private greeted = false;

  /**
   * `announce` publishes this edge's ps.here; `canAnswer` says whether this
   * edge can answer now (on the bus; on a durable hub, reading its stream):
   * it announces only then; `changed` hears an edge join or leave the roster,
   * or come back as a new process under its node id (restarted).
   */
  constructor(
    private readonly nodeId: string,
    private readonly announce: (state: HereState) => void,
    private readonly canAnswer: () => boolean,
    private readonly changed: (edge: string, how: 'joined' | 'restarted' | 'left' | 'silent') => void,
    private readonly timing: RosterTiming = { announceEveryMs: ANNOUNCE_EVERY_MS, ttlMs: HERE_TTL_MS, now: Date.now },
  ) {
    this.sweepClock = new SweepClock(timing.announceEveryMs, timing.now);
    this.timer = setInterval(() => this.tick(), timing.announceEveryMs);
    this.timer.unref();
  }

  /** Another edge's ps.here; `boot`: its process, when it says. */
  heard(origin: string, state: HereState, boot?: string): void {
    if (origin === this.nodeId) return;
    if (state === 'leaving') {
      // A process that leaves takes only itself off (its successor may be here already).
      const entry = this.edges.get(origin);
      if (entry && (boot === undefined || entry.boot === undefined || entry.boot === boot)) {
        this.edges.delete(origin);
        this.changed(origin, 'left');
      }
      return;
    }
    const known = this.edges.get(origin);
    if (!known) this.changed(origin, 'joined');
    else if (boot !== undefined && known.boot !== undefined && known.boot !== boot) this.changed(origin, 'restarted');
    this.edges.set(origin, { until: this.timing.now() + this.timing.ttlMs, boot });
    if (state === 'hello' && this.greeted) this.announce('here');
  }

  /**
   * True while edge `origin` is on the roster and, when `boot` is given and
   * the edge says its process, it is that process: a process replaced by one
   * restarted under the same node id is gone.
   */
  holds(origin: string, boot?: string): boolean {
    if (!this.others().includes(origin)) return false;
    const heardBoot = this.edges.get(origin)?.boot;
    return boot === undefined || heardBoot === undefined || heardBoot === boot;
  }

  /**
   * The other edges heard from lately. Asked between ticks right after this
   * process was paused (before a tick ran on time again), it drops nobody:
   * the others' announcements that came meanwhile may not be read yet.
   */
  others(): string[] {
    const now = this.timing.now();
    const judging = this.sweepClock.judging(now);
    const alive: string[] = [];
    for (const [edge, { until }] of this.edges) {
      if (until > now || !judging) alive.push(edge);
      else {
        this.edges.delete(edge);
        this.changed(edge, 'silent');
      }
    }
    return alive;
  }

  /** Stops announcing, and tells the others when this edge had announced itself. */
  leave(): void {
    clearInterval(this.timer);
    if (this.greeted) this.announce('leaving');
    this.greeted = false;
  }

  private tick(): void {
    // Drops (and reports) the edges fallen silent; not in a tick that runs late (this process was paused: the others'
    // announcements that came meanwhile are not read yet, and every edge would be dropped, then join again).
    if (this.sweepClock.onTime()) this.others();
    if (!this.canAnswer()) {
      // Back on its feet (the bus again, say), it greets anew: the others may have dropped it meanwhile.
      this.greeted = false;
      return;
    }
    this.announce(this.greeted ? 'here' : 'hello');
    this.greeted = true;
  }
}
