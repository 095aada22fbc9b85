// Worker side of bench/metrics: a Prometheus scrape of one device's shared memory (ring, stats,
// interrupt state) every `interval` ms while the main thread asks for it, as the coordinator's
// thread serves /metrics while vCPU threads produce. Reports how many scrapes it made and their
// mean time.
import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { registerRuntimeMetrics } from '../src/metrics/exporter.js';

const { ring, stats, irq, interval } = workerData as {
  ring: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  irq: SharedArrayBuffer;
  /** Scrape every this many ms while > 0; 0: pause; -1: report and end. */
  interval: Int32Array;
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
  ms = 0;
// A round that wants scrapes starts with one (the store that starts it wakes this thread), then
// one per interval until the round ends (its next store wakes this thread early).
for (let v = Atomics.load(interval, 0); v !== -1; v = Atomics.load(interval, 0)) {
  if (v === 0) {
    Atomics.wait(interval, 0, 0);
    continue;
  }
  const t = performance.now();
  await registry.metrics();
  ms += performance.now() - t;
  scrapes++;
  Atomics.wait(interval, 0, v, v);
}
parentPort!.postMessage({ scrapes, meanMs: scrapes ? ms / scrapes : 0 });
