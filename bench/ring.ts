// bench ring: the device ring's round trip and throughput against the baselines measured in the
// same run: an inline pread on the calling thread (no hop at all) and a postMessage round trip.
// The BAR is a memfd. Targets: ring RTT ≤ 3× inline pread, ≥ 10× faster than postMessage,
// ≥ 1,000,000 requests/s through one worker.
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { raw } from '../native/libc.js';
import { RingClient } from '../src/ring/client.js';
import { OP, STATUS, createRingBuffer } from '../src/ring/protocol.js';
import { MemfdRegion } from '../src/memory/memfd-region.js';
import { median, round } from './support.js';

const WORKER = new URL('./ring-worker.js', import.meta.url);
const BAR = 16384;

/** Median per-operation time (µs) over `rounds` batches of `n` operations. */
function perOp(rounds: number, n: number, op: () => void): number {
  const xs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) op();
    xs.push(Number(process.hrtime.bigint() - t) / 1000 / n);
  }
  return median(xs);
}

async function postMessageRtt(rounds: number, n: number): Promise<number> {
  const w = new Worker(WORKER, { workerData: { role: 'echo' } });
  const xs: number[] = [];
  for (let r = 0; r < rounds + 1; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) { w.postMessage(i); await once(w, 'message'); }
    if (r > 0) xs.push(Number(process.hrtime.bigint() - t) / 1000 / n); // round 0 warms up
  }
  await w.terminate();
  return median(xs);
}

export async function benchRing(): Promise<Record<string, number>> {
  const bar = new MemfdRegion('bench-bar', BAR);
  const fd = bar.fd.fd;
  const buf = Buffer.alloc(4);
  const inline = perOp(9, 50_000, () => { if (raw.pread(fd, buf, 4, 8) !== 4) throw new Error('pread failed'); });

  const ring = createRingBuffer({ capacity: 256, bulkBytes: 64 });
  const w = new Worker(WORKER, { workerData: { role: 'ring', ring, fd, barSize: BAR } });
  await once(w, 'message');
  const c = new RingClient(ring);
  perOp(3, 20_000, () => c.call(OP.BAR_READ, 0, 8, 4)); // warm up both sides
  const rtt = perOp(9, 50_000, () => { if (c.call(OP.BAR_READ, 0, 8, 4) !== STATUS.OK) throw new Error('ring read failed'); });

  // Throughput: keep a window of requests in flight from this one thread.
  const window = 64, total = 2_000_000;
  const tickets = new Int32Array(window);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < total; i++) {
    const k = i % window;
    if (i >= window) { const t = tickets[k]!; if (c.await(t) !== STATUS.OK) throw new Error('ring read failed'); c.release(t); }
    tickets[k] = c.submit(OP.BAR_READ, 0, (i & 0xff) * 4, 4);
  }
  for (let i = total; i < total + window; i++) { const t = tickets[i % window]!; c.await(t); c.release(t); }
  const opsPerS = total / (Number(process.hrtime.bigint() - t0) / 1e9);
  w.postMessage('stop');
  await once(w, 'message');
  await w.terminate();
  bar.close();

  const pm = await postMessageRtt(5, 5_000);
  console.log(`inline pread ${inline.toFixed(3)} µs | ring round trip ${rtt.toFixed(3)} µs (${(rtt / inline).toFixed(2)}× inline) | postMessage round trip ${pm.toFixed(3)} µs (${(pm / rtt).toFixed(1)}× the ring) | ${(opsPerS / 1e6).toFixed(2)} M requests/s through one worker`);
  return {
    ring_rtt_median_us: round(rtt), inline_pread_median_us: round(inline), postmessage_rtt_median_us: round(pm),
    ring_rtt_ratio: round(rtt / inline, 2), postmessage_over_ring: round(pm / rtt, 1), ring_ops_per_s: Math.round(opsPerS),
  };
}
