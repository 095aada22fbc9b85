// The runtime's Prometheus metrics: every counter declared in schema.ts (read from each
// device's shared memory by readCounters, so a row another module declares there is exported
// with no change here), the ring's depth, back-pressure and sampled latency histogram, the
// worker's lifecycle, each BAR's mapped and trapped bytes, and each DMA backend's mappings and
// calls. All read at scrape time, once per scrape (one snapshot serves every family); nothing
// here runs on a guest's path. Names: one prefix (vfio_runtime_), counters end in _total, base
// units (_bytes, _seconds); labels are bounded (docs/metrics.md lists every one).
import type { Registry } from 'prom-client';
import type { DmaStats } from '../dma/dma-stats.js';
import { Family, type FamilyType, type Labels, registerFamily, type Sample } from './family.js';
import { type CounterMemory, type CounterRow, readCounters } from './read-counters.js';
import { readRing } from './ring-metrics.js';
import { type CounterType, IRQ_COUNTERS, STATS } from './schema.js';

export const PREFIX = 'vfio_runtime_';

/** What the exporter reads of a device (a RuntimeDevice is one). */
export interface MetricsDevice {
  readonly port: string;
  readonly bdf: string | undefined;
  readonly backend: { readonly kind: string; readonly name: string };
  readonly handle: {
    readonly memory: CounterMemory;
    readonly ring: SharedArrayBuffer;
    readonly state: string;
    readonly incarnation: number;
    readonly description?: {
      bars: readonly {
        index: number;
        size: string;
        mappable: readonly [number, number][];
        trapped: readonly [number, number][];
      }[];
    };
  };
}

/** What the exporter reads of a DMA backend (IommufdContext, ContainerBackend). */
export interface MetricsBackend {
  readonly kind: string;
  readonly name: string;
  readonly active: boolean;
  readonly stats?: DmaStats;
  mappings(): readonly { readonly length: bigint }[];
}

export interface MetricsSource {
  devices(): Iterable<MetricsDevice>;
  backends(): Iterable<MetricsBackend>;
}

/** Worker states reported by vfio_runtime_worker_state (DeviceHandleState); another is added as seen. */
const STATES = ['starting', 'running', 'exited', 'stopped'];

export type Snapshot = Map<string, Sample[]>;

/** The exported name of a declared counter row: counters get _total. */
const exported = (name: string, type: CounterType): string =>
  type === 'counter' ? `${name}_total` : name;

/** Families declared here (not in schema.ts): name → [type, help]. */
const OWN: Record<string, [FamilyType, string]> = {
  vfio_runtime_device_info: [
    'gauge',
    'An assigned device (1), with its DMA backend kind and context',
  ],
  vfio_runtime_worker_up: ['gauge', "1 while the device's worker is running"],
  vfio_runtime_worker_state: [
    'gauge',
    "The device worker's lifecycle state (1 for the current one): starting, running, exited, stopped",
  ],
  vfio_runtime_worker_restarts_total: [
    'counter',
    'Device workers started after the first (respawns by a restart or a supervisor)',
  ],
  vfio_runtime_bar_size_bytes: ['gauge', 'Size of an implemented BAR'],
  vfio_runtime_bar_mapped_bytes: [
    'gauge',
    'Bytes of a BAR a VMM may mmap into the guest (the fast path: no exit, not counted)',
  ],
  vfio_runtime_bar_trapped_bytes: [
    'gauge',
    'Bytes of a BAR whose accesses go through the ring (counted in vfio_runtime_bar_accesses_total)',
  ],
  vfio_runtime_ring_capacity: ['gauge', "Slots in the device's ring"],
  vfio_runtime_ring_depth: ['gauge', 'Requests published and not yet taken by the worker'],
  vfio_runtime_ring_full_waiters: ['gauge', 'Producers waiting now for a free slot (ring full)'],
  vfio_runtime_ring_backpressure_waits_total: [
    'counter',
    'Times a producer slept because the ring was full',
  ],
  vfio_runtime_ring_request_duration_seconds: [
    'histogram',
    'Ring request latency as producers see it (publish to completion), sampled 1 in 64, by BAR (config: config space)',
  ],
  vfio_runtime_dma_devices_attached: [
    'gauge',
    'Whether a DMA backend has devices attached (1) and its mappings reach hardware',
  ],
  vfio_runtime_dma_mappings: ['gauge', 'Live DMA mappings (one per map call) of a backend'],
  vfio_runtime_dma_mapped_bytes: ['gauge', 'Bytes of guest memory a DMA backend maps now'],
  vfio_runtime_dma_operations_total: ['counter', 'Successful DMA map and unmap calls, by op'],
  vfio_runtime_dma_operation_seconds_total: [
    'counter',
    'Time spent in successful DMA map and unmap calls, by op',
  ],
  vfio_runtime_dma_kernel_failures_total: [
    'counter',
    'DMA map/unmap kernel calls that failed, by op and errno name',
  ],
};

/** The families of declared counters (exported names: counters get _total), name → type, help. */
export function familiesOf(
  decls: readonly { name: string; help: string; type: CounterType }[],
): Map<string, { type: FamilyType; help: string }> {
  const out = new Map<string, { type: FamilyType; help: string }>();
  for (const d of decls) {
    const n = exported(d.name, d.type);
    if (!out.has(n)) out.set(n, { type: d.type, help: d.help });
  }
  return out;
}

/** Every family the exporter declares (schema rows included), name → type. */
export function declaredFamilies(): Map<string, { type: FamilyType; help: string }> {
  const out = familiesOf([...STATS, ...IRQ_COUNTERS]);
  for (const [n, [type, help]] of Object.entries(OWN)) out.set(n, { type, help });
  return out;
}

/** Rows read by a declaration (readDeclared's) as a snapshot of samples by exported name. */
export function rowsSnapshot(rows: readonly CounterRow[]): Snapshot {
  const s: Snapshot = new Map();
  for (const r of rows) push(s, exported(r.name, r.type), { labels: r.labels, value: r.value });
  return s;
}

/** The series names a family's samples carry (a histogram's _bucket, _sum, _count). */
export function seriesNames(name: string, type: FamilyType): string[] {
  return type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
}

function push(s: Snapshot, name: string, sample: Sample): void {
  let a = s.get(name);
  if (!a) s.set(name, (a = []));
  a.push(sample);
}

function readDevice(s: Snapshot, d: MetricsDevice): void {
  const base: Labels = { device: d.port, bdf: d.bdf ?? '' };
  const h = d.handle;
  push(s, 'vfio_runtime_device_info', {
    labels: { ...base, backend: d.backend.kind, context: d.backend.name },
    value: 1,
  });
  for (const r of readCounters(h.memory))
    push(s, exported(r.name, r.type), { labels: { ...base, ...r.labels }, value: r.value });
  push(s, 'vfio_runtime_worker_up', { labels: base, value: h.state === 'running' ? 1 : 0 });
  for (const state of STATES.includes(h.state) ? STATES : [...STATES, h.state])
    push(s, 'vfio_runtime_worker_state', {
      labels: { ...base, state },
      value: state === h.state ? 1 : 0,
    });
  push(s, 'vfio_runtime_worker_restarts_total', {
    labels: base,
    value: Math.max(0, h.incarnation - 1),
  });
  for (const b of h.description?.bars ?? []) {
    const labels = { ...base, bar: String(b.index) };
    const bytes = (rs: readonly [number, number][]): number =>
      rs.reduce((n, [a, z]) => n + (z - a), 0);
    push(s, 'vfio_runtime_bar_size_bytes', { labels, value: Number(b.size) });
    push(s, 'vfio_runtime_bar_mapped_bytes', { labels, value: bytes(b.mappable) });
    push(s, 'vfio_runtime_bar_trapped_bytes', { labels, value: bytes(b.trapped) });
  }
  const ring = readRing(h.ring, base);
  push(s, 'vfio_runtime_ring_capacity', { labels: base, value: ring.capacity });
  push(s, 'vfio_runtime_ring_depth', { labels: base, value: ring.depth });
  push(s, 'vfio_runtime_ring_full_waiters', { labels: base, value: ring.fullWaiters });
  push(s, 'vfio_runtime_ring_backpressure_waits_total', { labels: base, value: ring.fullWaits });
  for (const x of ring.latency) push(s, 'vfio_runtime_ring_request_duration_seconds', x);
}

function readBackend(s: Snapshot, b: MetricsBackend): void {
  const base: Labels = { backend: b.kind, context: b.name };
  const maps = b.mappings();
  push(s, 'vfio_runtime_dma_devices_attached', { labels: base, value: b.active ? 1 : 0 });
  push(s, 'vfio_runtime_dma_mappings', { labels: base, value: maps.length });
  push(s, 'vfio_runtime_dma_mapped_bytes', {
    labels: base,
    value: maps.reduce((n, m) => n + Number(m.length), 0),
  });
  if (!b.stats) return;
  for (const op of ['map', 'unmap'] as const) {
    const labels = { ...base, op };
    push(s, 'vfio_runtime_dma_operations_total', { labels, value: b.stats.calls[op] });
    push(s, 'vfio_runtime_dma_operation_seconds_total', { labels, value: b.stats.seconds[op] });
  }
  for (const [key, value] of b.stats.failures) {
    const [op, errno] = key.split(' ') as [string, string];
    push(s, 'vfio_runtime_dma_kernel_failures_total', { labels: { ...base, op, errno }, value });
  }
}

/** Read everything once: the devices' shared memory, rings and handles, the backends' stats. */
export function snapshot(source: MetricsSource): Snapshot {
  const s: Snapshot = new Map();
  for (const d of source.devices()) readDevice(s, d);
  for (const b of source.backends()) readBackend(s, b);
  return s;
}

/**
 * Register `families` on `registry`, their samples from `take()`. One scrape reads once: the
 * first family's get() takes a snapshot, the rest of that scrape reuse it.
 */
export function registerSnapshot(
  registry: Registry,
  families: Map<string, { type: FamilyType; help: string }>,
  take: () => Snapshot,
): void {
  let cached: Snapshot | undefined;
  const current = (): Snapshot => {
    if (!cached) {
      cached = take();
      // Registry.metrics() calls every family's get() in one synchronous loop: the snapshot
      // lives until that loop ends, so the next scrape (even in this macrotask) reads afresh.
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };
  for (const [name, { type, help }] of families)
    registerFamily(registry, new Family(name, help, type, () => current().get(name) ?? []));
}

/** Register every runtime family on `registry` (read from `source` once per scrape). */
export function registerRuntimeMetrics(registry: Registry, source: MetricsSource): void {
  registerSnapshot(registry, declaredFamilies(), () => snapshot(source));
}
