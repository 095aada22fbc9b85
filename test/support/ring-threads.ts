// Threads for ring tests: a producer that issues mixed requests against one or more rings and
// checks every answer, and a simulated-device server (a BAR in memory) for unit tests.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { type Request, RingServer } from '../../src/ring/server.js';

export interface ProducerJob {
  role: 'producer';
  rings: SharedArrayBuffer[];
  /** Per ring: a scratch BAR window [offset, offset+bytes) this producer may write. */
  scratch: { bar: number; offset: number; bytes: number }[];
  /** Per ring: a read-only register and its expected value (e.g. NVMe VS); `vendor` for a config read. */
  probe: { bar: number; offset: number; value: number; vendor?: number }[];
  /** Skip scratch words at this offset modulo 16 (an MSI-X vector control word keeps only its mask bit). */
  avoidMod16?: number;
  requests: number;
  seed: number;
}
export interface ProducerResult {
  done: number;
  mismatches: string[];
  errors: string[];
}

/** A simulated device: BAR0 of `bytes` bytes in memory; reads of an unwritten word give its offset. */
export function simulatedHandler(bytes = 65536): (req: Request) => number {
  const bar = new Uint8Array(bytes);
  const view = new DataView(bar.buffer);
  for (let o = 0; o < bytes; o += 4) view.setUint32(o, o, true);
  return (req) => {
    if (req.op === OP.NOP) return STATUS.OK;
    if (req.op !== OP.BAR_READ && req.op !== OP.BAR_WRITE) return STATUS.BAD_OP;
    if (req.index !== 0) return STATUS.BAD_BAR;
    if (req.size <= 8 && ![1, 2, 4, 8].includes(req.size)) return STATUS.BAD_WIDTH;
    if (req.offset + req.size > bytes || req.size === 0) return STATUS.OUT_OF_RANGE;
    if (req.op === OP.BAR_READ) req.data.set(bar.subarray(req.offset, req.offset + req.size));
    else bar.set(req.data.subarray(0, req.size), req.offset);
    return STATUS.OK;
  };
}

function runProducer(job: ProducerJob): ProducerResult {
  const clients = job.rings.map((r) => new RingClient(r));
  const mismatches: string[] = [],
    errors: string[] = [];
  let x = job.seed >>> 0 || 1;
  const rnd = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  let done = 0;
  for (let i = 0; i < job.requests; i++) {
    const d = i % clients.length;
    const c = clients[d]!,
      s = job.scratch[d]!,
      p = job.probe[d]!;
    try {
      switch (rnd() % 4) {
        case 0: {
          // read a known register
          const v = c.barRead(p.bar, p.offset, 4);
          if (v !== p.value)
            mismatches.push(
              `ring ${d} probe read 0x${v.toString(16)}, want 0x${p.value.toString(16)}`,
            );
          break;
        }
        case 1: {
          // write then read back a word in this producer's own window
          let off = s.offset + (rnd() % (s.bytes / 4)) * 4;
          if (job.avoidMod16 !== undefined && off % 16 === job.avoidMod16) off -= 4;
          const val = rnd() >>> 0;
          c.barWrite(s.bar, off, 4, val);
          const back = c.barRead(s.bar, off, 4);
          if (back !== val)
            mismatches.push(
              `ring ${d} offset 0x${off.toString(16)} read back 0x${back.toString(16)}, wrote 0x${val.toString(16)}`,
            );
          break;
        }
        case 2: {
          // a request that must fail with OUT_OF_RANGE, without harm
          const st = c.call(OP.BAR_READ, p.bar, 0x7ffffff0, 4);
          if (st !== STATUS.OUT_OF_RANGE)
            mismatches.push(`ring ${d} out-of-range read got status ${st}`);
          break;
        }
        default: {
          // config-space read of the vendor id, or a NOP on rings without config space
          if (p.vendor !== undefined) {
            const v = c.cfgRead(0, 2);
            if (v !== p.vendor)
              mismatches.push(
                `ring ${d} vendor id 0x${v.toString(16)}, want 0x${p.vendor.toString(16)}`,
              );
          } else {
            const st = c.call(OP.NOP, 0, 0, 0);
            if (st !== STATUS.OK) mismatches.push(`ring ${d} NOP got status ${st}`);
          }
        }
      }
      done++;
    } catch (e) {
      errors.push(String(e));
      if (errors.length > 5) break;
    }
  }
  return { done, mismatches: mismatches.slice(0, 20), errors };
}

if (!isMainThread && (workerData as { role?: string })?.role === 'producer') {
  parentPort!.postMessage(runProducer(workerData as ProducerJob));
}
if (!isMainThread && (workerData as { role?: string })?.role === 'sim-server') {
  const server = new RingServer(
    (workerData as { ring: SharedArrayBuffer }).ring,
    simulatedHandler(),
  );
  server.start();
  parentPort!.on('message', async (m) => {
    if (m === 'stop') {
      await server.stop();
      parentPort!.postMessage({ served: server.served });
    }
  });
}
if (!isMainThread && (workerData as { role?: string })?.role === 'one-call') {
  // One NOP through a ring that may be full: report the status and how long the call took.
  const c = new RingClient((workerData as { ring: SharedArrayBuffer }).ring, {
    spinUs: 1,
    waitSliceMs: 5000,
  });
  const t0 = performance.now();
  const status = c.call(OP.NOP, 0, 0, 0);
  parentPort!.postMessage({ status, ms: performance.now() - t0 });
}
if (!isMainThread && (workerData as { role?: string })?.role === 'busy-server') {
  // A server that turns its event loop only when asked: it polls an idle ring for 10 s and owes
  // its event loop a turn only every 10 minutes. Answers 'ping' with 'pong', and marks `watch`
  // word 0 seen (in word 1) when it does.
  const job = workerData as { ring: SharedArrayBuffer; watch: SharedArrayBuffer };
  const watch = new Int32Array(job.watch);
  const server = new RingServer(job.ring, simulatedHandler(), {
    spinUs: 10_000_000,
    yieldMs: 600_000,
    watch: [[watch, 0, 1]],
  });
  server.start();
  parentPort!.on('message', async (m) => {
    if (m === 'ping') {
      Atomics.store(watch, 1, Atomics.load(watch, 0));
      parentPort!.postMessage('pong');
    }
    if (m === 'stop') {
      await server.stop();
      parentPort!.postMessage({ served: server.served });
    }
  });
}
if (!isMainThread && (workerData as { role?: string })?.role === 'nop-loop') {
  // NOPs back to back until word 0 of `stop` is set; reports how many.
  const job = workerData as { ring: SharedArrayBuffer; stop: SharedArrayBuffer };
  const c = new RingClient(job.ring),
    stop = new Int32Array(job.stop);
  let n = 0;
  while (Atomics.load(stop, 0) === 0) {
    if (c.call(OP.NOP, 0, 0, 0) !== STATUS.OK) break;
    n++;
  }
  parentPort!.postMessage(n);
}
