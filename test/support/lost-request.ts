// Threads for the lost-request tests: a ring server whose handler hangs on one request (until
// the thread is terminated), and a producer that makes one call and reports its status.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { type Request, RingServer } from '../../src/ring/server.js';

/** BAR offset whose write hangs the handler; `calls` word HANGING is set once it does. */
export const HANG_OFFSET = 0xfc,
  HANGING = 0;

/** Counts handler calls per BAR offset (word offset/4 + 1 of `calls`); hangs on HANG_OFFSET. */
export function countingHandler(calls: Int32Array): (req: Request) => number {
  return (req) => {
    if (req.op !== OP.BAR_WRITE && req.op !== OP.BAR_READ) return STATUS.OK;
    Atomics.add(calls, req.offset / 4 + 1, 1);
    if (req.op === OP.BAR_WRITE && req.offset === HANG_OFFSET) {
      Atomics.store(calls, HANGING, 1);
      Atomics.wait(calls, HANGING, 1); // until this thread is terminated
    }
    return STATUS.OK;
  };
}

type Job =
  | { role: 'hanging-server'; ring: SharedArrayBuffer; calls: SharedArrayBuffer }
  | { role: 'one-write'; ring: SharedArrayBuffer; offset: number };

if (!isMainThread) {
  const job = workerData as Job;
  if (job.role === 'hanging-server') {
    new RingServer(job.ring, countingHandler(new Int32Array(job.calls))).start();
    // A pending Atomics.waitAsync does not keep a thread alive: without a listener this thread
    // would exit at its first sleep on the doorbell.
    parentPort!.on('message', () => {});
  }
  if (job.role === 'one-write') {
    const c = new RingClient(job.ring, { spinUs: 50, waitSliceMs: 50 });
    parentPort!.postMessage(c.call(OP.BAR_WRITE, 0, job.offset, 4, 1));
  }
}
