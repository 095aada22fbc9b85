// What a leak test compares before and after: this process's open fds and threads, and a wait
// for worker threads that are still exiting (their fds close as they go).
import { readdirSync, readlinkSync } from 'node:fs';

/** The fd numbers open in this process, in numeric order. */
export const openFds = (): string[] =>
  readdirSync('/proc/self/fd').sort((a, b) => Number(a) - Number(b));

/** What each fd points at (`63 -> socket:[1234]`), for a leak's message. */
export const describeFds = (fds: string[]): string =>
  fds
    .map((f) => {
      try {
        return `${f} -> ${readlinkSync(`/proc/self/fd/${f}`)}`;
      } catch {
        return `${f} (closed since)`;
      }
    })
    .join(', ') || 'none';

/** The fds open in `after` that were not in `before`, described (describeFds). */
export const describeNewFds = (before: ProcessState, after: ProcessState): string =>
  describeFds(after.fds.filter((f) => !before.fds.includes(f)));

export const threadCount = (): number => readdirSync('/proc/self/task').length;

export interface ProcessState {
  fds: string[];
  threads: number;
}

export const processState = (): ProcessState => ({ fds: openFds(), threads: threadCount() });

/** The state now, after waiting up to `ms` for it to equal `before` (threads still exiting). */
export async function settledState(before: ProcessState, ms = 5000): Promise<ProcessState> {
  const until = Date.now() + ms;
  let now = processState();
  while (
    (now.threads !== before.threads || now.fds.join() !== before.fds.join()) &&
    Date.now() < until
  ) {
    await new Promise((r) => setTimeout(r, 50));
    now = processState();
  }
  return now;
}
