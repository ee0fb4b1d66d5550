// The checkpoints of a durable hub's reliable sessions in the session bucket
// (docs/durability.md, "Reliable sessions"): the record an edge writes, the
// writes of each session one after another over the revision this edge stored
// last, a session's end stored in their turn (and tried again until the
// checkpoint it replaces would have expired), and the reads a take makes.
// Which session to write when is stream-sessions.ts's; a write names the claim
// this edge holds the session by, so that a later claim's checkpoint stays.
import { createHash, timingSafeEqual } from 'node:crypto';
import { isEdgeMessage, type PsCheckpoint } from '../bus/messages.ts';
import type { JetStreamAccess } from '../bus/jetstream.ts';
import { StoreConflict } from '../bus/jetstream-errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import { parseJson } from '../validation/bounded-json.ts';
import { asciiLowerCase } from '../validation/ascii-case.ts';
import { SessionUnavailable } from './errors.ts';
import type { ClusterHub } from './hub-cluster.ts';
import type { PubSubConnection } from './pubsub-connection.ts';
import type { SessionCheckpoint } from './reliable-session.ts';

/** What the checkpoints need of the hub's sessions (part of StreamSessionsOptions). */
export interface SessionCheckpointsOptions {
  js: JetStreamAccess;
  nodeId: string;
  /** This edge process (ClusterHubDeps.bootId). */
  bootId: string;
  log: Logger;
  sessionRetainMs: number;
}

/** Checkpoint writes in flight at once, per hub. */
const MAX_WRITES_IN_FLIGHT = 64;

/** What only the owner's last write carries (letGo). */
export type LastWrite = Pick<PsCheckpoint, 'releasedBy' | 'ackIds'>;

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

function hashMatches(stored: string, token: string): boolean {
  const a = Buffer.from(stored);
  const b = Buffer.from(tokenHash(token));
  return a.length === b.length && timingSafeEqual(a, b);
}

/** How long a checkpoint lasts in the session bucket after its last write: twice sessionRetainMs, a minute at least. */
export function sessionBucketTtlMs(sessionRetainMs: number): number {
  return Math.max(60_000, 2 * sessionRetainMs);
}

/** Whether a stored checkpoint is of a session another edge took by a claim later than `claim`: its write stays. */
function takenSince(found: PsCheckpoint | undefined, claim: number): found is PsCheckpoint {
  return found !== undefined && (found.claim ?? 0) > claim;
}

/** Whether `checkpoint` is of a session a client may take over with `token` on `protocol` (not one that ended). */
export function opensWith(checkpoint: PsCheckpoint | undefined, protocol: string, token: string): checkpoint is PsCheckpoint {
  return checkpoint !== undefined && !checkpoint.ended && checkpoint.protocol === protocol && hashMatches(checkpoint.tokenHash, token);
}

/** A session's end, to be stored (SessionCheckpoints.end). */
interface Ending {
  key: string;
  /** Its last checkpoint, with `ended: true`. */
  value: Buffer;
  /** The revision it is written over (what this edge last stored, or found there on a conflict). */
  revision: number | undefined;
  /** The claim by which this edge held the session (a later one's checkpoint is not written over). */
  claim: number;
  /** When the checkpoint it replaces expires from the bucket anyway. */
  giveUpAt: number;
  writing: boolean;
}

/** Ends the store refused, kept to be tried again, at most (the oldest is given up past it). */
const MAX_ENDINGS = 20_000;

/** What a checkpoint write came to: stored, left to a newer claim's checkpoint (another edge took the session), failed. */
export type WriteOutcome = 'stored' | 'kept' | 'failed';

/** A stored entry: its revision, and the checkpoint when it is a valid one for this hub. */
type CheckpointEntry = { revision: number; checkpoint?: PsCheckpoint };

export class SessionCheckpoints {
  private readonly lastWritten = new WeakMap<PubSubConnection, number>();
  /** The checkpoint revision this edge last stored per session: writing or deleting it expects that one. */
  private readonly revisions = new WeakMap<PubSubConnection, number>();
  /** The stream sequence of the claim by which this edge took a session (absent: it opened here). */
  private readonly claims = new WeakMap<PubSubConnection, number>();
  /** Each session's checkpoint writes and delete, one after another: a delete never lands before a write sent earlier. */
  private readonly queued = new WeakMap<PubSubConnection, Promise<void>>();
  /**
   * Sessions ended here whose end is not stored yet (storeEnding), by connection id, oldest first, until the
   * checkpoint they left would have expired from the bucket: none of them is taken here meanwhile, a failed write
   * is tried again at each tick, and the drain waits for them (pending). What is kept is the write, not the
   * connection.
   */
  private readonly endings = new Map<string, Ending>();
  private writing = 0;

  /** `retry`: a write that failed, of a session not ended: it is written again at the next tick. */
  constructor(
    private readonly hub: ClusterHub,
    private readonly options: SessionCheckpointsOptions,
    private readonly retry: (connection: PubSubConnection) => void,
  ) {}

  private key(connectionId: string): string {
    return `${this.hub.key}.${connectionId}`;
  }

  /** Writes in flight, and ends not stored yet. */
  get pending(): number {
    return this.writing + this.endings.size;
  }

  /** As many writes are in flight as a hub may have. */
  get full(): boolean {
    return this.writing >= MAX_WRITES_IN_FLIGHT;
  }

  /** Whether a write or the end of the session is under way (one at a time per session). */
  busy(connection: PubSubConnection): boolean {
    return this.queued.has(connection);
  }

  /** When this edge last stored the session's checkpoint (Date.now()). */
  lastWrittenAt(connection: PubSubConnection): number | undefined {
    return this.lastWritten.get(connection);
  }

  /** Whether the session ended here and its end is not stored yet: it is not taken here meanwhile. */
  ending(connectionId: string): boolean {
    return this.endings.has(connectionId);
  }

  /** This edge took the session by the claim at `claimSeq`: its writes name it. */
  heldBy(connection: PubSubConnection, claimSeq: number): void {
    this.claims.set(connection, claimSeq);
  }

  /**
   * Stores the end of the session (its last checkpoint, `ended`), after its writes in flight; one the store
   * refuses is kept and tried again (retryEndings).
   */
  end(connection: PubSubConnection, checkpoint: SessionCheckpoint): void {
    if (this.endings.size >= MAX_ENDINGS) {
      // The store has refused this many ends: the oldest is given up (its checkpoint expires in its own time).
      const [oldest] = this.endings.keys();
      this.endings.delete(oldest);
      this.options.log.warn({ event: 'pubsub.checkpoint_end_dropped', hub: this.hub.name, connectionId: oldest, pending: MAX_ENDINGS });
    }
    const ending: Ending = {
      key: this.key(connection.id),
      value: Buffer.from(JSON.stringify({ ...this.record(connection, checkpoint), ended: true })),
      revision: undefined,
      claim: this.claims.get(connection) ?? 0,
      giveUpAt: (this.lastWritten.get(connection) ?? Date.now()) + sessionBucketTtlMs(this.options.sessionRetainMs),
      writing: true,
    };
    this.endings.set(connection.id, ending);
    // After the session's writes in flight: the revision the last of them stored is the one to write over.
    void this.inTurn(connection, async () => {
      ending.revision = this.revisions.get(connection);
      await this.storeEnding(connection.id, ending);
    });
  }

  /** Ends the store refused, again; given up once the checkpoint they left has expired from the bucket. */
  retryEndings(now: number): void {
    for (const [connectionId, ending] of this.endings) {
      if (now >= ending.giveUpAt) {
        // The checkpoint it left has expired from the bucket by now.
        this.endings.delete(connectionId);
        continue;
      }
      if (this.writing >= MAX_WRITES_IN_FLIGHT) break;
      if (ending.writing) continue;
      ending.writing = true;
      this.writing++;
      void this.storeEnding(connectionId, ending).finally(() => this.writing--);
    }
  }

  private record(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): PsCheckpoint {
    return {
      ...last,
      op: 'ps.checkpoint',
      hub: this.hub.name,
      connectionId: connection.id,
      userId: connection.userId,
      protocol: connection.protocol,
      tokenHash: tokenHash(connection.session!.reconnectionToken),
      permissions: connection.permissions.snapshot(),
      owner: this.options.nodeId,
      ownerBoot: this.options.bootId,
      claim: this.claims.get(connection) ?? 0,
      sequenceId: checkpoint.sequenceId,
      position: checkpoint.position,
      ...(checkpoint.mid !== undefined ? { mid: checkpoint.mid } : {}),
      groups: checkpoint.groups,
      states: connection.states,
      at: Date.now(),
    };
  }

  /** Stored, left to a newer claim's checkpoint (another edge took the session), or failed. */
  async write(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): Promise<WriteOutcome> {
    let outcome: WriteOutcome = 'failed';
    await this.inTurn(connection, async () => {
      outcome = await this.store(connection, checkpoint, last);
    });
    return outcome;
  }

  private inTurn(connection: PubSubConnection, step: () => Promise<void>): Promise<void> {
    this.writing++;
    const next = (this.queued.get(connection) ?? Promise.resolve()).then(step).finally(() => {
      this.writing--;
      if (this.queued.get(connection) === next) this.queued.delete(connection);
    });
    this.queued.set(connection, next);
    return next;
  }

  private async store(connection: PubSubConnection, checkpoint: SessionCheckpoint, last?: LastWrite): Promise<WriteOutcome> {
    const key = this.key(connection.id);
    const value = Buffer.from(JSON.stringify(this.record(connection, checkpoint, last)));
    try {
      let previous = this.revisions.get(connection);
      for (let attempt = 0; ; attempt++) {
        try {
          this.revisions.set(connection, await this.options.js.put(key, value, previous));
          this.lastWritten.set(connection, Date.now());
          return 'stored';
        } catch (err) {
          if (!(err instanceof StoreConflict) || attempt > 0) throw err;
        }
        // Written since: by this edge when a write's answer was lost, by the edge this one took the
        // session from (its last write), or by an edge that took it from this one (whose claim this
        // edge has not read yet): that one's checkpoint stays.
        const found = await this.readEntry(connection.id);
        const stored = found?.checkpoint;
        if (takenSince(stored, this.claims.get(connection) ?? 0)) {
          this.options.log.info({ event: 'pubsub.checkpoint_kept', hub: this.hub.name, connectionId: connection.id, owner: stored.owner, claim: stored.claim });
          return 'kept';
        }
        previous = found?.revision;
      }
    } catch (err) {
      // Written again at the next tick (JetStream may be electing a leader).
      if (!connection.ended) this.retry(connection);
      this.options.log.warn({ event: 'pubsub.checkpoint_failed', hub: this.hub.name, connectionId: connection.id, err: (err as Error).message });
      return 'failed';
    }
  }

  /**
   * Stores that the session ended, over its checkpoint unless another edge
   * took the session since (a later claim's checkpoint stays: this edge's
   * copy then expires or is closed here). A failure is tried again at the
   * next tick (endings).
   */
  private async storeEnding(connectionId: string, ending: Ending): Promise<boolean> {
    try {
      try {
        await this.options.js.put(ending.key, ending.value, ending.revision);
      } catch (err) {
        if (!(err instanceof StoreConflict)) throw err;
        // Written since: by this edge when a write's answer was lost, else by the edge that took the session.
        const found = await this.readEntry(connectionId);
        const stored = found?.checkpoint;
        if (takenSince(stored, ending.claim)) {
          this.options.log.info({ event: 'pubsub.checkpoint_kept', hub: this.hub.name, connectionId, owner: stored.owner });
          this.endings.delete(connectionId);
          return true;
        }
        ending.revision = found?.revision;
        await this.options.js.put(ending.key, ending.value, ending.revision);
      }
      this.endings.delete(connectionId);
      return true;
    } catch (err) {
      this.options.log.warn({ event: 'pubsub.checkpoint_end_failed', hub: this.hub.name, connectionId, err: (err as Error).message });
      return false;
    } finally {
      ending.writing = false;
    }
  }

  /**
   * Stores that a session this edge claimed, and did not take because a reload removed the hub, ended: over the
   * checkpoint there (the holder's last write, or this edge's own), unless a later claim took the session since.
   * Also a session a take found ended by a REST close stored after its checkpoint (SessionTakes.take). False when the
   * store did not answer.
   */
  async endClaimed(connectionId: string, claimSeq: number): Promise<boolean> {
    let found: CheckpointEntry | undefined;
    try {
      found = await this.readEntry(connectionId);
    } catch (err) {
      this.options.log.warn({ event: 'pubsub.checkpoint_end_failed', hub: this.hub.name, connectionId, err: (err as Error).message });
      return false;
    }
    const stored = found?.checkpoint;
    if (!stored || stored.ended || (stored.claim ?? 0) > claimSeq) return true;
    const record: PsCheckpoint = { ...stored, owner: this.options.nodeId, ownerBoot: this.options.bootId, claim: claimSeq, at: Date.now(), ended: true };
    delete record.releasedBy;
    delete record.ackIds;
    const ending: Ending = {
      key: this.key(connectionId),
      value: Buffer.from(JSON.stringify(record)),
      revision: found!.revision,
      claim: claimSeq,
      giveUpAt: Date.now() + sessionBucketTtlMs(this.options.sessionRetainMs),
      writing: true,
    };
    return this.storeEnding(connectionId, ending);
  }

  /** The checkpoint stored for a connection id, if a valid one; SessionUnavailable when the store does not answer. */
  async read(connectionId: string): Promise<PsCheckpoint | undefined> {
    let found: { checkpoint?: PsCheckpoint } | undefined;
    try {
      found = await this.readEntry(connectionId);
    } catch (err) {
      throw new SessionUnavailable(`the session store did not answer: ${(err as Error).message}`);
    }
    return found?.checkpoint;
  }

  /** The stored entry for a connection id: its revision, and the checkpoint when it is a valid one for this hub. */
  private async readEntry(connectionId: string): Promise<CheckpointEntry | undefined> {
    const entry = await this.options.js.entry(this.key(connectionId));
    if (!entry) return undefined;
    let value: unknown;
    try {
      value = parseJson(Buffer.from(entry.value).toString('utf8'));
    } catch {
      return { revision: entry.revision };
    }
    if (!isEdgeMessage(value) || value.op !== 'ps.checkpoint' || value.connectionId !== connectionId || asciiLowerCase(value.hub) !== this.hub.key) {
      this.options.log.warn({ event: 'bus.invalid_message', hub: this.hub.name, op: 'ps.checkpoint' });
      return { revision: entry.revision };
    }
    return { revision: entry.revision, checkpoint: value };
  }
}
