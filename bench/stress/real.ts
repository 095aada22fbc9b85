// In the lab: node dist/bench/stress/real.js [--seconds 20 --producers 3 --rate 0.0005]: the
// stress harness against the lab's real devices (edu and e1000e, bound to vfio-pci), each on an
// iommufd context with a supervisor and faults at `rate` (kill, throw, crash, errno, delay,
// corrupt); restarts from warm standbys. Ends with one JSON line (duplicated: null, a real
// register cannot count writes; lost requests show as wrong reads).
import { Worker } from 'node:worker_threads';
import { Runtime } from '../../src/coordinator/runtime.js';
import { findFunctions } from '../../src/platform/pci-sysfs.js';
import type { RealDevice, RealJob, RealResult } from './real-producer.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const seconds = arg('seconds', 20),
  producers = arg('producers', 3),
  rate = arg('rate', 0.0005);
const pct = (xs: number[], q: number): number =>
  xs.length
    ? Math.round(
        [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]! * 10,
      ) / 10
    : 0;

/** Per kind: vendor:device, read-only words, scratch registers (safe while the device is idle). */
const KINDS = [
  {
    name: 'edu',
    id: [0x1234, 0x11e8],
    ro: [
      [true, 0, 0, 0x11e81234],
      [false, 0, 0x00, 0x010000ed],
    ],
    // DMA source, destination and count: plain storage while no DMA runs.
    rw: [
      [0, 0x80, 0xffffffff],
      [0, 0x88, 0xffffffff],
      [0, 0x90, 0xffffffff],
    ],
  },
  {
    name: 'e1000e',
    id: [0x8086, 0x10d3],
    ro: [[true, 0, 0, 0x10d38086]],
    // RDBAL0 and TDBAL0 (receive and transmit descriptors' base, low; 16-byte aligned) while
    // receive and transmit are off.
    rw: [
      [0, 0x2800, 0xfffffff0],
      [0, 0x3800, 0xfffffff0],
    ],
  },
] as const;

const rt = await Runtime.start({ iommu: [{ id: 'stress' }], vfio: [], memory: [] });
const devices: RealDevice[] = [];
const handles = [];
for (const k of KINDS) {
  const f = findFunctions(k.id[0], k.id[1]).find((x) => x.driver === 'vfio-pci');
  if (!f) continue;
  const d = await rt.addDevice(
    { port: k.name, bdf: f.bdf, iommu: 'stress' },
    {
      supervise: { watchdogMs: 5000, maxRestarts: 1000 },
      standby: true,
      faults: { rate, kinds: ['kill', 'throw', 'crash', 'errno', 'delay', 'corrupt'], seed: 7 },
    },
  );
  // Memory decoding on, so BAR reads reach the device.
  const c = d.handle.client();
  c.cfgWrite(4, 2, c.cfgRead(4, 2) | 0x2);
  handles.push(d);
  devices.push({
    ring: d.handle.ring,
    ro: k.ro.map((x) => [...x]) as RealDevice['ro'],
    rw: k.rw.map((x) => [...x]) as RealDevice['rw'],
  });
}
const progress = new SharedArrayBuffer(producers * 16);
const prog = new Float64Array(progress);
const until = Date.now() + seconds * 1000;
let hung = 0;
const watch = setInterval(() => {
  for (let p = 0; p < producers; p++)
    if (prog[2 * p]! > 0 && performance.now() - prog[2 * p]! > 30_000) {
      hung++;
      prog[2 * p] = 0;
    }
}, 500);
const results = await Promise.all(
  Array.from({ length: producers }, (_, p) => {
    const job: RealJob = { p, devices, until, seed: 1, progress };
    const w = new Worker(new URL('./real-producer.js', import.meta.url), { workerData: job });
    return new Promise<RealResult>((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
    });
  }),
);
clearInterval(watch);
const sum = (k: keyof RealResult): number => results.reduce((n, r) => n + (r[k] as number), 0);
const recoveries = handles.flatMap((d) => d.supervisor?.recoveries ?? []);
const restarts = handles.reduce((n, d) => n + (d.supervisor?.restarts ?? 0), 0);
const faults: Record<string, number> = {};
for (const d of handles)
  for (const row of d.handle.counters())
    if (row.name === 'vfio_runtime_faults_injected')
      faults[row.labels.kind!] = (faults[row.labels.kind!] ?? 0) + row.value;
const states = Object.fromEntries(handles.map((d) => [d.port, d.supervisor?.state]));
await rt.shutdown();
console.log(
  JSON.stringify({
    seconds,
    producers,
    devices: handles.map((d) => d.port),
    fault_rate: rate,
    requests: sum('requests'),
    ok: sum('ok'),
    errored: sum('errored'),
    lost: sum('wrong'),
    duplicated: null,
    hung,
    worker_died: sum('died'),
    restarts,
    recovery_ms_p50: pct(recoveries, 0.5),
    recovery_ms_p99: pct(recoveries, 0.99),
    request_ms_max: Math.round(Math.max(...results.map((r) => r.maxRequestMs))),
    faults,
    supervisor_states: states,
  }),
);
process.exit(sum('wrong') || hung ? 1 : 0);
