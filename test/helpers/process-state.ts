// Whether a process the tests stopped (SIGSTOP) has stopped: the kernel stops
// each thread of a busy process only when it next runs, so on a loaded
// machine a process signalled so still ran for tens of milliseconds.
import { readdirSync, readFileSync } from 'node:fs';

/** Whether every thread of process `pid` is stopped (state T in /proc/PID/task/TID/stat); false once it is gone. */
export function allThreadsStopped(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'T';
    });
  } catch {
    return false;
  }
}
