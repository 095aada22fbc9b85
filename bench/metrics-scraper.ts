// Worker side of bench/metrics: a Prometheus scrape of one device's shared memory (ring, stats,
// interrupt state) every SCRAPE_MS while `on` is set, as the coordinator's thread serves /metrics
// while vCPU threads produce. Reports how many scrapes it made and their mean time.
import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { registerRuntimeMetrics } from '../src/metrics/exporter.js';

const { ring, stats, irq, on, scrapeMs } = workerData as {
  ring: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  irq: SharedArrayBuffer;
  on: Int32Array;
  scrapeMs: number;
};
const device = {
  port: 'bench0',
  bdf: '0000:00:01.0',
  backend: { kind: 'iommufd', name: 'ctx0' },
  handle: { memory: { stats, irq }, ring, state: 'running', incarnation: 1 },
};
const registry = new Registry();
registerRuntimeMetrics(registry, { devices: () => [device], backends: () => [] });
let scrapes = 0,
  ms = 0,
  stop = false;
parentPort!.on('message', () => {
  stop = true;
});
while (!stop) {
  if (Atomics.load(on, 0) === 1) {
    const t = performance.now();
    await registry.metrics();
    ms += performance.now() - t;
    scrapes++;
  }
  await new Promise((r) => setTimeout(r, scrapeMs));
}
parentPort!.postMessage({ scrapes, meanMs: scrapes ? ms / scrapes : 0 });
