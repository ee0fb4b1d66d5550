// The clock a keep-alive sweep judges silence by. After the process was
// paused (SIGSTOP, a VM stall, a blocked event loop), its timer fires before
// the pongs and messages that arrived meanwhile are read (timers run before
// I/O in a turn of the event loop): every peer would look silent for the
// length of the pause, and live listeners and clients were dropped as idle.
// A sweep that runs much later than its interval only pings; the next one,
// an interval later, judges with what has been read since. A judgement made
// between sweeps (on demand) waits likewise: not while a sweep is overdue or
// the last one ran late.

export class SweepClock {
  private last: number;
  /** When the last sweep that ran on time ran (or the clock was made). */
  private lastOnTime: number;

  /** `clock`: the wall clock by default, or a monotonic one (performance.now); a caller that read it already passes `now`. */
  constructor(
    private readonly intervalMs: number,
    private readonly clock: () => number = Date.now,
  ) {
    this.last = clock();
    this.lastOnTime = this.last;
  }

  /** Called at each sweep: false when it ran late (a pause), so silence is not judged this time. */
  onTime(now = this.clock()): boolean {
    const late = now - this.last > 2 * this.intervalMs;
    this.last = now;
    if (!late) this.lastOnTime = now;
    return !late;
  }

  /** Whether silence may be judged now, between sweeps: false from a pause until a sweep runs on time again. */
  judging(now = this.clock()): boolean {
    return now - this.lastOnTime <= 2 * this.intervalMs;
  }
}
