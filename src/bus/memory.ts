// The in-process bus: the default for one node, so the relay needs no other
// service. Same semantics as the NATS bus (wildcards, queue groups, no-responders,
// asynchronous and ordered delivery), so code above it cannot tell them apart.
import { randomUUID } from 'node:crypto';
import { BusError, tooLargeForBus, type Bus, type BusHandler, type BusMessage, type BusSubscription, type GatherOptions } from './bus.ts';
import { isValidSubject, isWildcard, subjectMatches } from './subject-match.ts';

interface Entry {
  subject: string;
  queue?: string;
  handler: BusHandler;
  active: boolean;
}

/** What a memory bus does with an exception a handler throws. */
export type HandlerErrorSink = (err: unknown, subject: string) => void;

export class MemoryBus implements Bus {
  readonly kind = 'memory' as const;
  readonly connected = true;
  readonly backlogged = false;
  readonly reachesOtherNodes = false;
  readonly maxPayload: number;
  private readonly exact = new Map<string, Entry[]>();
  private readonly wildcards: Entry[] = [];
  private readonly queueTurn = new Map<string, number>();
  private readonly pending: [Entry, BusMessage][] = [];
  private draining = false;
  private closed = false;

  constructor(options: { maxPayload?: number; onHandlerError?: HandlerErrorSink } = {}) {
    this.maxPayload = options.maxPayload ?? 8 * 1024 * 1024;
    this.onHandlerError = options.onHandlerError ?? (() => {});
  }

  private readonly onHandlerError: HandlerErrorSink;

  subscribe(subject: string, handler: BusHandler, options: { queue?: string } = {}): BusSubscription {
    if (!isValidSubject(subject, true)) throw new Error(`invalid subject '${subject}'`);
    const entry: Entry = { subject, queue: options.queue, handler, active: true };
    if (isWildcard(subject)) this.wildcards.push(entry);
    else {
      const list = this.exact.get(subject);
      if (list) list.push(entry);
      else this.exact.set(subject, [entry]);
    }
    const leave = () => {
      const list = isWildcard(subject) ? this.wildcards : this.exact.get(subject);
      const i = list ? list.indexOf(entry) : -1;
      if (!list || i < 0) return;
      list.splice(i, 1);
      if (list.length === 0 && list !== this.wildcards) this.exact.delete(subject);
    };
    return {
      unsubscribe: () => {
        if (!entry.active) return;
        entry.active = false;
        leave();
      },
      // Out of the lists, so it gets nothing new; still active, so what was already handed to it (a delivery
      // queued in this turn) reaches its handler.
      drain: leave,
    };
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    this.deliver(subject, data, reply);
  }

  /** Queues the message for every matching subscriber (one per queue group); returns how many. */
  private deliver(subject: string, data: Uint8Array, reply?: string): number {
    if (this.closed) return 0;
    if (!isValidSubject(subject, false)) throw new Error(`invalid subject '${subject}'`);
    if (data.length > this.maxPayload) throw tooLargeForBus(data.length, this.maxPayload);
    const message: BusMessage = { subject, data, reply };
    const matched = [...(this.exact.get(subject) ?? []), ...this.wildcards.filter((e) => subjectMatches(e.subject, subject))];
    const groups = new Map<string, Entry[]>();
    let count = 0;
    for (const entry of matched) {
      if (entry.queue === undefined) {
        this.pending.push([entry, message]);
        count++;
      } else {
        const members = groups.get(entry.queue);
        if (members) members.push(entry);
        else groups.set(entry.queue, [entry]);
      }
    }
    for (const [queue, members] of groups) {
      const turn = this.queueTurn.get(queue) ?? 0;
      this.queueTurn.set(queue, turn + 1);
      this.pending.push([members[turn % members.length], message]);
      count++;
    }
    if (count > 0 && !this.draining) {
      this.draining = true;
      queueMicrotask(() => this.drain());
    }
    return count;
  }

  private drain(): void {
    // Handlers may publish: those messages join the end of the same queue.
    for (let i = 0; i < this.pending.length; i++) {
      const [entry, message] = this.pending[i];
      if (!entry.active) continue;
      try {
        entry.handler(message);
      } catch (err) {
        this.onHandlerError(err, message.subject);
      }
    }
    this.pending.length = 0;
    this.draining = false;
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const inbox = `_INBOX.${randomUUID()}`;
      const timer = setTimeout(() => {
        sub.unsubscribe();
        reject(new BusError('Timeout'));
      }, timeoutMs);
      const sub = this.subscribe(inbox, (m) => {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(m.data);
      });
      let count: number;
      try {
        count = this.deliver(subject, data, inbox);
      } catch (err) {
        count = -1;
        clearTimeout(timer);
        sub.unsubscribe();
        return reject(err);
      }
      if (count === 0) {
        clearTimeout(timer);
        sub.unsubscribe();
        reject(new BusError('NoResponders'));
      }
    });
  }

  gather(subject: string, data: Uint8Array, options: GatherOptions): Promise<Uint8Array[]> {
    return new Promise((resolve, reject) => {
      const answers: Uint8Array[] = [];
      const inbox = `_INBOX.${randomUUID()}`;
      let expected = Infinity;
      let stall: NodeJS.Timeout | undefined;
      /** Answers in all, those after the end (shown to options.late) too. */
      let count = 0;
      let ended = false;
      const close = () => {
        clearTimeout(timer);
        clearTimeout(stall);
        sub.unsubscribe();
      };
      const done = () => {
        clearTimeout(stall);
        if (!ended) resolve(answers);
        ended = true;
        // Answers still to come are listened for until maxWaitMs (the timer) when the caller reads them late.
        // Listening late keeps nothing alive: a process with nothing else to do (a stopped edge) ends meanwhile.
        if (options.late) timer.unref();
        if (!options.late || count >= expected) close();
      };
      const timer = setTimeout(() => {
        done();
        close();
      }, options.maxWaitMs);
      const sub = this.subscribe(inbox, (m) => {
        count++;
        if (ended) {
          options.late?.(m.data);
          if (count >= expected) close();
          return;
        }
        answers.push(m.data);
        // Every answer is shown to `awaiting`, the last one too (its callers read answers there).
        const awaited = options.awaiting?.(answers) ?? false;
        // In one process we know how many answers can come.
        if (count >= expected) return done();
        clearTimeout(stall);
        if (!awaited) stall = setTimeout(done, options.stallMs);
      });
      try {
        expected = this.deliver(subject, data, inbox);
      } catch (err) {
        clearTimeout(timer);
        sub.unsubscribe();
        return reject(err);
      }
      if (expected === 0) done();
    });
  }

  /** Nothing to measure: there is no server. */
  roundTrip(): Promise<number | undefined> {
    return Promise.resolve(undefined);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  onConnectionChange(): void {
    // Always connected.
  }

  onBacklogChange(): void {
    // Never backlogged.
  }

  async close(): Promise<void> {
    this.closed = true;
    this.exact.clear();
    this.wildcards.length = 0;
  }
}
