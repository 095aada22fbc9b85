// A stress producer against real devices (bench/stress/real.ts, in the lab): mixed requests to
// every device until the deadline: reads of read-only registers and config words that must give
// their known values, and, for a producer that owns one of a device's scratch registers, writes
// of fresh values each read back (it must hold the last value written OK, or one a lost write may
// have left). A real register cannot count writes, so duplicates are not seen here (the host's
// simulated devices count them); lost and wrong show as wrong reads.
import { parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { xorshift32 } from '../../src/xorshift.js';

export interface RealDevice {
  ring: SharedArrayBuffer;
  /** Read-only words: [cfg?, BAR, offset, expected value]. */
  ro: [boolean, number, number, number][];
  /** Scratch registers (BAR, offset, writable-bits mask), one per producer that owns one. */
  rw: [number, number, number][];
}
export interface RealJob {
  p: number;
  devices: RealDevice[];
  until: number;
  seed: number;
  progress: SharedArrayBuffer;
}
export interface RealResult {
  requests: number;
  ok: number;
  errored: number;
  died: number;
  wrong: number;
  maxRequestMs: number;
  statuses: Record<string, number>;
}

function run(job: RealJob): RealResult {
  const random = xorshift32(job.seed * 65537 + job.p, 1);
  const clients = job.devices.map((d) => new RingClient(d.ring, { spinUs: 200, waitSliceMs: 20 }));
  const expect = job.devices.map(() => ({ value: -1, maybe: [] as number[] }));
  const progress = new Float64Array(job.progress);
  const r: RealResult = {
    requests: 0,
    ok: 0,
    errored: 0,
    died: 0,
    wrong: 0,
    maxRequestMs: 0,
    statuses: {},
  };
  while (r.requests & 63 || Date.now() < job.until) {
    const d = Math.floor(random() * clients.length),
      dev = job.devices[d]!,
      c = clients[d]!,
      e = expect[d]!;
    const reg = dev.rw[job.p];
    const t0 = performance.now();
    progress[2 * job.p] = t0;
    let status: number;
    const pick = random();
    if (reg && pick < 0.35) {
      const v = ((random() * 0x100000000) >>> 0) & reg[2];
      status = c.call(OP.BAR_WRITE, reg[0], reg[1], 4, v | 0);
      if (status === STATUS.OK) {
        e.value = v;
        e.maybe.length = 0;
      } else if (status === STATUS.WORKER_DIED) e.maybe.push(v);
    } else if (reg && pick < 0.7) {
      status = c.call(OP.BAR_READ, reg[0], reg[1], 4);
      const got = c.lo >>> 0;
      if (status === STATUS.OK && e.value >= 0) {
        if (got !== e.value && !e.maybe.includes(got)) r.wrong++;
        e.value = got;
        e.maybe.length = 0;
      }
    } else {
      const [cfg, bar, offset, want] = dev.ro[Math.floor(random() * dev.ro.length)]!;
      status = c.call(cfg ? OP.CFG_READ : OP.BAR_READ, bar, offset, 4);
      if (status === STATUS.OK && c.lo >>> 0 !== want) r.wrong++;
    }
    const ms = performance.now() - t0;
    if (ms > r.maxRequestMs) r.maxRequestMs = ms;
    progress[2 * job.p] = 0;
    progress[2 * job.p + 1] = ++r.requests;
    if (status === STATUS.OK) r.ok++;
    else {
      r.errored++;
      if (status === STATUS.WORKER_DIED) r.died++;
      r.statuses[status] = (r.statuses[status] ?? 0) + 1;
    }
  }
  return r;
}

if (parentPort) parentPort.postMessage(run(workerData as RealJob));
