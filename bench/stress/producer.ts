// One stress producer thread (bench/stress/main.ts starts M of them): mixed requests to every
// device until its deadline or request budget, each outcome recorded: SEQ writes by sequence
// number (the device marks a bitmap: lost and duplicated requests show), DATA and config scratch
// writes checked by reads of the values they may hold, interrupts raised by a register write
// and checked delivered. WORKER_DIED leaves an effect unknown (either value is fine), any other
// error none. `progress` tells the harness when the current request started (hung requests).
import { parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { xorshift32 } from '../../src/xorshift.js';
import { CFG_SCRATCH, DATA, IRQ, SEQ, SIM_IRQ, simWords } from './sim-device.js';

export interface ProducerJob {
  p: number;
  rings: SharedArrayBuffer[];
  states: SharedArrayBuffer[];
  /** Date.now() to stop at. */
  until: number;
  maxRequests: number;
  seed: number;
  /** Float64 per producer: [start of the request in flight (performance.timeOrigin-based ms) or 0, requests done]. */
  progress: SharedArrayBuffer;
}

/** What a value register may hold: the last certain value and the ones a lost write may have left. */
interface Expect {
  value: number;
  maybe: number[];
}

export interface DeviceResult {
  /** Per SEQ value: 1 ok, 2 WORKER_DIED, 3 other error. */
  outcomes: Uint8Array;
  seqs: number;
  data: Expect;
  cfg: Expect;
  irqOk: number;
  irqMissed: number;
}

export interface ProducerResult {
  requests: number;
  ok: number;
  errored: number;
  died: number;
  failed: number;
  /** A read returned a value no write (certain or lost) had left. */
  wrong: number;
  maxRequestMs: number;
  devices: DeviceResult[];
  statuses: Record<string, number>;
}

const settle = (e: Expect, status: number, value: number): void => {
  if (status === STATUS.OK) {
    e.value = value;
    e.maybe.length = 0;
  } else if (status === STATUS.WORKER_DIED) e.maybe.push(value);
};

function run(job: ProducerJob): ProducerResult {
  const { p } = job;
  const random = xorshift32(job.seed * 65537 + p, 1);
  const clients = job.rings.map((r) => new RingClient(r, { spinUs: 200, waitSliceMs: 20 }));
  const sims = job.states.map(simWords);
  const progress = new Float64Array(job.progress);
  const devices: DeviceResult[] = job.rings.map(() => ({
    outcomes: new Uint8Array(job.maxRequests),
    seqs: 0,
    data: { value: 0, maybe: [] },
    cfg: { value: 0, maybe: [] },
    irqOk: 0,
    irqMissed: 0,
  }));
  const r: ProducerResult = {
    requests: 0,
    ok: 0,
    errored: 0,
    died: 0,
    failed: 0,
    wrong: 0,
    maxRequestMs: 0,
    devices,
    statuses: {},
  };
  const check = (e: Expect, got: number): void => {
    if (got !== e.value >>> 0 && !e.maybe.some((v) => v >>> 0 === got)) r.wrong++;
    e.value = got;
    e.maybe.length = 0;
  };
  while (r.requests < job.maxRequests && (r.requests & 255 || Date.now() < job.until)) {
    const d = Math.floor(random() * clients.length),
      c = clients[d]!,
      dev = devices[d]!;
    const kind = random(),
      value = (random() * 0x100000000) >>> 0;
    const t0 = performance.now();
    progress[2 * p] = t0;
    let status: number;
    if (kind < 0.4) {
      const v = dev.seqs++;
      status = c.call(OP.BAR_WRITE, 0, SEQ(p), 4, v);
      dev.outcomes[v] = status === STATUS.OK ? 1 : status === STATUS.WORKER_DIED ? 2 : 3;
    } else if (kind < 0.55) {
      status = c.call(OP.BAR_WRITE, 0, DATA(p), 4, value | 0);
      settle(dev.data, status, value);
    } else if (kind < 0.7) {
      status = c.call(OP.BAR_READ, 0, DATA(p), 4);
      if (status === STATUS.OK) check(dev.data, c.lo >>> 0);
    } else if (kind < 0.78) {
      status = c.call(OP.CFG_WRITE, 0, CFG_SCRATCH(p), 4, value | 0);
      settle(dev.cfg, status, value);
    } else if (kind < 0.86) {
      status = c.call(OP.CFG_READ, 0, CFG_SCRATCH(p), 4);
      if (status === STATUS.OK) check(dev.cfg, c.lo >>> 0);
    } else {
      const before = Atomics.load(sims[d]!, SIM_IRQ(p));
      status = c.call(OP.BAR_WRITE, 0, IRQ(p), 4, 1);
      if (status === STATUS.OK) {
        if (Atomics.load(sims[d]!, SIM_IRQ(p)) === before)
          Atomics.wait(sims[d]!, SIM_IRQ(p), before, 1000);
        if (Atomics.load(sims[d]!, SIM_IRQ(p)) !== before) dev.irqOk++;
        else dev.irqMissed++;
      }
    }
    const ms = performance.now() - t0;
    if (ms > r.maxRequestMs) r.maxRequestMs = ms;
    progress[2 * p] = 0;
    progress[2 * p + 1] = ++r.requests;
    if (status === STATUS.OK) r.ok++;
    else {
      r.errored++;
      if (status === STATUS.WORKER_DIED) r.died++;
      if (status === STATUS.DEVICE_FAILED) r.failed++;
      r.statuses[status] = (r.statuses[status] ?? 0) + 1;
    }
  }
  return r;
}

if (parentPort) {
  const result = run(workerData as ProducerJob);
  parentPort.postMessage(
    result,
    result.devices.map((d) => d.outcomes.buffer as ArrayBuffer),
  );
}
