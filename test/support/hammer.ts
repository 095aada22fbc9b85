// A producer thread for removal tests: reads a 4-byte register through a device's ring back to
// back until a request fails, counting answers in shared memory, and reports how the last
// request ended (its error's class and message, and the wall-clock time it ended at).
import { parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';

export interface HammerJob {
  ring: SharedArrayBuffer;
  count: SharedArrayBuffer;
  bar: number;
  offset: number;
  expect: number;
}
export interface HammerResult {
  ok: number;
  wrong: number;
  error: string;
  message: string;
  endedAt: number;
}

const job = workerData as HammerJob;
const c = new RingClient(job.ring),
  count = new Int32Array(job.count);
let ok = 0,
  wrong = 0;
for (;;) {
  try {
    if (c.barRead(job.bar, job.offset, 4) === job.expect) ok++;
    else wrong++;
    Atomics.add(count, 0, 1);
  } catch (e) {
    const err = e as Error;
    parentPort!.postMessage({
      ok,
      wrong,
      error: err.name,
      message: err.message,
      endedAt: Date.now(),
    } satisfies HammerResult);
    break;
  }
}
