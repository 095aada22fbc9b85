// bench metrics: what observability costs. (1) Ring throughput with metrics collected (the
// client samples latency into the ring's histogram, 1 in 64 tickets, and another thread scrapes
// the device's counters every second, as the lab's Prometheus does) against none (sampling off,
// no scrapes), in alternating rounds of the same run: metrics_overhead_ratio = collected / none
// (target >= 0.97), beside the noise floor (none against none) and a scrape every 100 ms; and
// the same comparison with producer and server in one thread (the CPU cost of sampling alone,
// without two threads' scheduling). (2) The time of one scrape (registry.metrics(), the text
// Prometheus reads) of a runtime with 16 devices, each with counters on interrupts and a
// latency histogram.
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { createDeviceMemory } from '../src/device/shared-state.js';
import { irqViews, SRC } from '../src/irq/irq-state.js';
import { MemfdRegion } from '../src/memory/memfd-region.js';
import { registerRuntimeMetrics } from '../src/metrics/exporter.js';
import { registerProcessMetrics } from '../src/metrics/process.js';
import { RingClient } from '../src/ring/client.js';
import {
  createRingBuffer,
  LAT_CONFIG,
  LAT_STRIDE,
  latencyWord,
  OP,
  ringWords,
  STATUS,
} from '../src/ring/protocol.js';
import { RingServer } from '../src/ring/server.js';
import { median, ringThroughput, round } from './support.js';

const BAR = 16384;
const ROUNDS = 7,
  ROUND_MS = 1000,
  SCRAPE_MS = 1000,
  STRESS_SCRAPE_MS = 100;

/**
 * The ring path's CPU cost per request in one thread (producer and server alternate: submit a
 * window, drain() it, await and release): what sampling adds to a request, free of the
 * scheduling noise of two threads on a shared 2-core host.
 */
function sameThread(): Record<string, number> {
  const ring = createRingBuffer({ capacity: 64, bulkBytes: 64 });
  const bar = new Int32Array(64);
  const server = new RingServer(ring, (req) => {
    req.words![0] = bar[(req.offset >> 2) & 63]!;
    return STATUS.OK;
  });
  const run = (c: RingClient, n: number): number => {
    const tickets = new Int32Array(64);
    const t0 = performance.now();
    for (let i = 0; i < n; i += 64) {
      for (let k = 0; k < 64; k++) tickets[k] = c.submit(OP.BAR_READ, 0, k * 4, 4);
      server.drain();
      for (let k = 0; k < 64; k++) {
        c.await(tickets[k]!);
        c.release(tickets[k]!);
      }
    }
    return n / ((performance.now() - t0) / 1000);
  };
  const plain = new RingClient(ring, { sampleLatency: false }),
    sampled = new RingClient(ring);
  run(plain, 200_000);
  run(sampled, 200_000);
  const a: number[] = [],
    b: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    a.push(run(plain, 256_000));
    b.push(run(sampled, 256_000));
  }
  const ratio = median(b) / median(a);
  console.log(
    `ring path in one thread: ${(median(a) / 1e6).toFixed(2)} M req/s without latency sampling, ${(median(b) / 1e6).toFixed(2)} M req/s with it: ratio ${ratio.toFixed(3)} (${(1e9 / median(b) - 1e9 / median(a)).toFixed(1)} ns per request)`,
  );
  return {
    metrics_overhead_ratio_same_thread: round(ratio, 3),
    ring_ops_per_s_same_thread: Math.round(median(a)),
  };
}

/** Requests one round takes, for a round of about `ms` at the ring's plain rate. */
function calibrate(c: RingClient, ms: number): number {
  const rate = ringThroughput(c, 100_000);
  return Math.max(50_000, Math.round((rate * ms) / 1000 / 64) * 64);
}

/**
 * Ring throughput (a producer here, the server in a worker, BAR reads of a memfd) in alternating
 * rounds of ROUND_MS each, four ways: no metrics; no metrics again (the noise floor: the same
 * thing measured twice); latency sampled and a scrape every SCRAPE_MS (Prometheus at the lab
 * test's 1 s interval, 15x its common 15 s); sampled and a scrape every STRESS_SCRAPE_MS.
 * Each scraping round starts with a scrape, so a 1 s round holds one, as Prometheus would.
 */
async function overhead(): Promise<Record<string, number>> {
  const bar = new MemfdRegion('bench-metrics-bar', BAR);
  const ring = createRingBuffer({ capacity: 256, bulkBytes: 64 });
  const memory = createDeviceMemory();
  const worker = new Worker(new URL('./ring-worker.js', import.meta.url), {
    workerData: {
      role: 'ring',
      ring,
      fd: bar.fd.fd,
      barSize: BAR,
      words: new Int32Array(new SharedArrayBuffer(128)),
      counters: memory.stats,
    },
  });
  await once(worker, 'message');
  // The scraper's interval in ms while a round wants scrapes; 0: none; -1: end.
  const interval = new Int32Array(new SharedArrayBuffer(4));
  const scraper = new Worker(new URL('./metrics-scraper.js', import.meta.url), {
    workerData: { ring, stats: memory.stats, irq: memory.irq, interval },
  });
  const plain = new RingClient(ring, { sampleLatency: false });
  const sampled = new RingClient(ring);
  ringThroughput(plain, 200_000); // warm-up, both paths
  ringThroughput(sampled, 200_000);
  const perRound = calibrate(plain, ROUND_MS);
  const ways = [
    { name: 'none', client: plain, scrapeMs: 0, rates: [] as number[] },
    { name: 'none again', client: plain, scrapeMs: 0, rates: [] as number[] },
    { name: 'collected', client: sampled, scrapeMs: SCRAPE_MS, rates: [] as number[] },
    { name: 'stress', client: sampled, scrapeMs: STRESS_SCRAPE_MS, rates: [] as number[] },
  ];
  for (let r = 0; r < ROUNDS; r++)
    for (const w of ways) {
      Atomics.store(interval, 0, w.scrapeMs);
      Atomics.notify(interval, 0);
      w.rates.push(ringThroughput(w.client, perRound));
    }
  Atomics.store(interval, 0, -1);
  Atomics.notify(interval, 0);
  const [s] = (await once(scraper, 'message')) as [{ scrapes: number; meanMs: number }];
  worker.postMessage('stop');
  await once(worker, 'message');
  await Promise.all([worker.terminate(), scraper.terminate()]);
  bar.close();
  const [none, again, collected, stress] = ways.map((w) => median(w.rates)) as [
    number,
    number,
    number,
    number,
  ];
  const ratio = collected / none;
  console.log(
    `ring throughput, medians of ${ROUNDS} alternating rounds of ~${ROUND_MS} ms (${perRound} requests): ${(none / 1e6).toFixed(3)} M req/s without metrics (again: ${(again / 1e6).toFixed(3)}, noise ratio ${(again / none).toFixed(3)}); ${(collected / 1e6).toFixed(3)} M with latency sampled and a scrape every ${SCRAPE_MS} ms: metrics_overhead_ratio ${ratio.toFixed(3)} (target >= 0.97); every ${STRESS_SCRAPE_MS} ms: ${(stress / none).toFixed(3)} (${s.scrapes} scrapes of ${s.meanMs.toFixed(2)} ms in all, on another thread)`,
  );
  return {
    metrics_overhead_ratio: round(ratio, 3),
    metrics_noise_ratio: round(again / none, 3),
    metrics_overhead_ratio_scrape_100ms: round(stress / none, 3),
    ring_ops_per_s_no_metrics: Math.round(none),
    ring_ops_per_s_metrics: Math.round(collected),
  };
}

/** A device's memory and ring with counters as a busy device has them. */
function busyDevice(i: number) {
  const memory = createDeviceMemory();
  const ring = createRingBuffer({ capacity: 64, bulkBytes: 4096 });
  const v = irqViews(memory.irq);
  for (let k = 0; k < 8; k++) {
    v.FIRED[SRC.MSIX + k] = 1000 + k;
    v.DELIVERED[SRC.MSIX + k] = 1000 + k;
    v.UNMASKS[SRC.MSIX + k] = 1;
  }
  new Float64Array(memory.stats).fill(12345, 0, 40);
  const h = ringWords(ring),
    lat = latencyWord({ capacity: 64, bulkBytes: 4096 });
  for (const cls of [0, 2, LAT_CONFIG])
    for (let k = 2; k < 9; k++) h[lat + cls * LAT_STRIDE + k] = 100;
  return {
    port: `dev${i}`,
    bdf: `0000:00:${(i + 1).toString(16).padStart(2, '0')}.0`,
    backend: { kind: 'iommufd', name: 'ctx0' },
    handle: {
      memory,
      ring,
      state: 'running',
      incarnation: 1,
      description: {
        bars: [0, 2].map((index) => ({
          index,
          size: '0x4000',
          mappable: [[0, 0x3000]] as [number, number][],
          trapped: [[0x3000, 0x4000]] as [number, number][],
        })),
      },
    },
  };
}

async function scrapeTime(n = 16): Promise<Record<string, number>> {
  const devices = Array.from({ length: n }, (_, i) => busyDevice(i));
  const registry = new Registry();
  registerRuntimeMetrics(registry, { devices: () => devices, backends: () => [] });
  registerProcessMetrics(registry);
  let text = '';
  for (let i = 0; i < 10; i++) text = await registry.metrics();
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    text = await registry.metrics();
    times.push(performance.now() - t);
  }
  const series = text.split('\n').filter((l) => l && !l.startsWith('#')).length;
  const ms = median(times);
  console.log(
    `scrape of a runtime with ${n} devices: ${ms.toFixed(2)} ms median (max ${Math.max(...times).toFixed(2)} ms over 50), ${series} series, ${(text.length / 1024).toFixed(0)} KiB`,
  );
  return {
    scrape_16_devices_ms: round(ms, 2),
    scrape_16_devices_series: series,
    scrape_16_devices_kib: Math.round(text.length / 1024),
  };
}

export async function benchMetrics(): Promise<Record<string, number>> {
  return { ...(await overhead()), ...sameThread(), ...(await scrapeTime()) };
}
