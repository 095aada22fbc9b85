// A producer thread for supervisor tests: reads a 4-byte register through a device's ring back
// to back until the stop word is set, through worker deaths and restarts, counting how each
// request ended (OK, WORKER_DIED, anything else) and the longest one; posts the counts at the end.
import { parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';

export interface TrafficJob {
  ring: SharedArrayBuffer;
  /** Int32 words: [stop, requests done]. */
  ctl: SharedArrayBuffer;
  bar: number;
  offset: number;
}
export interface TrafficResult {
  ok: number;
  died: number;
  other: number;
  maxMs: number;
  /** Counts of the other statuses, by STATUS value. */
  statuses: Record<number, number>;
}

const job = workerData as TrafficJob;
const c = new RingClient(job.ring, { spinUs: 200, waitSliceMs: 20 }),
  ctl = new Int32Array(job.ctl);
const r: TrafficResult = { ok: 0, died: 0, other: 0, maxMs: 0, statuses: {} };
while (Atomics.load(ctl, 0) === 0) {
  const t0 = performance.now();
  const s = c.call(OP.BAR_READ, job.bar, job.offset, 4);
  r.maxMs = Math.max(r.maxMs, performance.now() - t0);
  if (s === STATUS.OK) r.ok++;
  else if (s === STATUS.WORKER_DIED) r.died++;
  else {
    r.other++;
    r.statuses[s] = (r.statuses[s] ?? 0) + 1;
  }
  Atomics.add(ctl, 1, 1);
}
parentPort!.postMessage(r);
