// The declared schema of every counter a device keeps in shared memory: name, help, type, unit
// and labels, once. The worker writes the `stats` slots through the index constants below (plain
// numbers: V8 folds an imported constant, where an object's field costs a load per request);
// DeviceHandle.stats() and the metrics layer read every counter through readCounters
// (src/metrics/read-counters.ts), so no other file does slot arithmetic. No imports: the ring
// server, the device worker and the coordinator all import it.

export type CounterType = 'counter' | 'gauge';

/** One declared counter: `count` > 1 is an array, one slot per value of its last label. */
export interface CounterDecl {
  /** The key stats() uses (an array's slots get `KEY_<label value>`). */
  readonly key: string;
  /** The metric family (Prometheus name, without the `_total` a counter gets on export). */
  readonly name: string;
  readonly help: string;
  readonly type: CounterType;
  readonly unit:
    | 'requests'
    | 'bytes'
    | 'starts'
    | 'sleeps'
    | 'wakes'
    | 'turns'
    | 'interrupts'
    | 'updates'
    | 'errors'
    | 'masks'
    | 'commits'
    | 'routes'
    | 'seconds'
    | 'heartbeats'
    | 'faults'
    | 'failures'
    | 'states';
  /** Fixed labels of this slot (e.g. op="cfg_read"). */
  readonly labels: Readonly<Record<string, string>>;
  readonly count?: number;
  /** An array's label, whose value is the slot's index within the array (e.g. bar="0".."5"). */
  readonly indexLabel?: string;
}

const req = <K extends string>(key: K, op: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_ring_requests',
  help: 'Ring requests handled by the device, by operation',
  type: 'counter',
  unit: 'requests',
  labels: { op },
});
const err = <K extends string>(key: K, status: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_ring_errors',
  help: 'Ring requests answered with an error status, by status',
  type: 'counter',
  unit: 'errors',
  labels: { status },
});
const perBar = <K extends string>(
  key: K,
  name: string,
  help: string,
  unit: CounterDecl['unit'],
  direction: string,
): CounterDecl & { key: K; count: 6 } => ({
  key,
  name,
  help,
  type: 'counter',
  unit,
  labels: { direction },
  count: 6,
  indexLabel: 'bar',
});

const failure = <K extends string>(key: K, reason: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_supervisor_failures',
  help: 'Device worker failures the supervisor saw, by kind (exit, crash, hang, stuck in a kernel call, failed restart)',
  type: 'counter',
  unit: 'failures',
  labels: { reason },
});
const state = <K extends string>(key: K, value: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_supervisor_state',
  help: 'The supervised device worker is in this state (1) or not (0)',
  type: 'gauge',
  unit: 'states',
  labels: { state: value },
});
const fault = <K extends string>(key: K, kind: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_faults_injected',
  help: 'Faults injected into the device worker (off unless enabled: VFR_FAULTS or DeviceHandleOptions.faults), by kind',
  type: 'counter',
  unit: 'faults',
  labels: { kind },
});

/**
 * The device's stats buffer (a Float64Array; single writer: the device worker), in slot order.
 * The first 17 keep the order and keys STAT had; new ones go at the end.
 */
export const STATS = [
  req('CFG_READ', 'cfg_read'),
  req('CFG_WRITE', 'cfg_write'),
  req('BAR_READ', 'bar_read'),
  req('BAR_WRITE', 'bar_write'),
  req('NOP', 'nop'),
  {
    key: 'BYTES_READ',
    name: 'vfio_runtime_ring_bytes',
    help: 'BAR bytes moved by ring requests, all BARs',
    type: 'counter',
    unit: 'bytes',
    labels: { direction: 'read' },
  },
  {
    key: 'BYTES_WRITTEN',
    name: 'vfio_runtime_ring_bytes',
    help: 'BAR bytes moved by ring requests, all BARs',
    type: 'counter',
    unit: 'bytes',
    labels: { direction: 'write' },
  },
  {
    key: 'MSIX_TABLE',
    name: 'vfio_runtime_msix_accesses',
    help: 'Guest accesses to the emulated MSI-X table and PBA',
    type: 'counter',
    unit: 'requests',
    labels: { region: 'table' },
  },
  {
    key: 'MSIX_PBA',
    name: 'vfio_runtime_msix_accesses',
    help: 'Guest accesses to the emulated MSI-X table and PBA',
    type: 'counter',
    unit: 'requests',
    labels: { region: 'pba' },
  },
  // In STATUS order, BAD_OP (-1) .. NOT_READY (-7): see errorSlot.
  err('ERR_BAD_OP', 'BAD_OP'),
  err('ERR_BAD_BAR', 'BAD_BAR'),
  err('ERR_OUT_OF_RANGE', 'OUT_OF_RANGE'),
  err('ERR_BAD_WIDTH', 'BAD_WIDTH'),
  err('ERR_MISALIGNED', 'MISALIGNED'),
  err('ERR_IO', 'IO_ERROR'),
  err('ERR_NOT_READY', 'NOT_READY'),
  {
    key: 'WORKER_STARTS',
    name: 'vfio_runtime_worker_starts',
    help: 'Device worker incarnations started (a restart adds one)',
    type: 'counter',
    unit: 'starts',
    labels: {},
  },
  perBar(
    'BAR_READS',
    'vfio_runtime_bar_accesses',
    'MMIO accesses through the ring, by BAR (MSI-X emulation included)',
    'requests',
    'read',
  ),
  perBar(
    'BAR_WRITES',
    'vfio_runtime_bar_accesses',
    'MMIO accesses through the ring, by BAR (MSI-X emulation included)',
    'requests',
    'write',
  ),
  perBar(
    'BAR_BYTES_READ',
    'vfio_runtime_bar_bytes',
    'BAR bytes moved to or from the device, by BAR',
    'bytes',
    'read',
  ),
  perBar(
    'BAR_BYTES_WRITTEN',
    'vfio_runtime_bar_bytes',
    'BAR bytes moved to or from the device, by BAR',
    'bytes',
    'write',
  ),
  // The ring server's own counts (src/ring/server.ts), over every worker incarnation.
  {
    key: 'SERVED',
    name: 'vfio_runtime_ring_served',
    help: 'Requests the ring server completed (lost ones included)',
    type: 'counter',
    unit: 'requests',
    labels: {},
  },
  {
    key: 'LOST',
    name: 'vfio_runtime_ring_lost',
    help: 'Requests a dead worker had taken, completed by its successor as WORKER_DIED (not replayed)',
    type: 'counter',
    unit: 'requests',
    labels: {},
  },
  {
    key: 'SLEEPS',
    name: 'vfio_runtime_worker_sleeps',
    help: 'Times the worker slept on the ring doorbell (idle past its spin budget)',
    type: 'counter',
    unit: 'sleeps',
    labels: {},
  },
  {
    key: 'WAKES',
    name: 'vfio_runtime_worker_wakes',
    help: 'Sleeps that ended with a request waiting (woken by the doorbell)',
    type: 'counter',
    unit: 'wakes',
    labels: {},
  },
  {
    key: 'TURNS',
    name: 'vfio_runtime_worker_event_loop_turns',
    help: 'Event-loop turns the busy worker gave (asked for, or every yieldMs)',
    type: 'counter',
    unit: 'turns',
    labels: {},
  },
  // Supervision (src/coordinator/supervisor.ts) and fault injection (src/device/faults.ts).
  {
    key: 'HEARTBEATS',
    name: 'vfio_runtime_worker_heartbeats',
    help: 'Heartbeats of the ring server while awake (every 256 idle polls, 64 requests or loop turn); the supervisor watches them',
    type: 'counter',
    unit: 'heartbeats',
    labels: {},
  },
  err('ERR_DEVICE_FAILED', 'DEVICE_FAILED'),
  {
    key: 'RESTARTS',
    name: 'vfio_runtime_supervisor_restarts',
    help: 'Device workers the supervisor restarted (on the same ring, fd and shared state)',
    type: 'counter',
    unit: 'starts',
    labels: {},
  },
  failure('FAIL_EXIT', 'exit'),
  failure('FAIL_CRASH', 'crash'),
  failure('FAIL_HANG', 'hang'),
  failure('FAIL_STUCK', 'stuck'),
  failure('FAIL_SPAWN', 'spawn'),
  state('STATE_RUNNING', 'running'),
  state('STATE_RESTARTING', 'restarting'),
  state('STATE_FAILED', 'failed'),
  fault('FAULT_KILL', 'kill'),
  fault('FAULT_THROW', 'throw'),
  fault('FAULT_CRASH', 'crash'),
  fault('FAULT_HANG', 'hang'),
  fault('FAULT_ERRNO', 'errno'),
  fault('FAULT_DELAY', 'delay'),
  fault('FAULT_CORRUPT', 'corrupt'),
  {
    key: 'OUTSIDE',
    name: 'vfio_runtime_device_accesses_outside',
    help: 'Device accesses the worker caught outside every BAR and the config region (a bug: refused, never issued)',
    type: 'counter',
    unit: 'errors',
    labels: {},
  },
] as const satisfies readonly CounterDecl[];

type KeyOf<D> = D extends { key: infer K extends string; count: 6 }
  ? `${K}_${0 | 1 | 2 | 3 | 4 | 5}`
  : D extends { key: infer K extends string }
    ? K
    : never;
/** The keys of the stats record (statsRecord, DeviceHandle.stats()): per-BAR arrays as KEY_<bar>. */
export type StatKey = KeyOf<(typeof STATS)[number]>;

/** Slot of each declared key (an array's first slot). */
const SLOT: Record<string, number> = {};
let slots = 0;
for (const d of STATS as readonly CounterDecl[]) {
  SLOT[d.key] = slots;
  slots += d.count ?? 1;
}
/** Float64 slots in a device's stats buffer. */
export const STATS_SLOTS = slots;

function at(key: string): number {
  const s = SLOT[key];
  if (s === undefined)
    throw new Error(`counter ${key} is not declared in STATS (src/metrics/schema.ts)`);
  return s;
}

// Index constants, one per declared key (C_ + key). Arrays: add the index (0-5 for a BAR).
export const C_CFG_READ = at('CFG_READ'),
  C_CFG_WRITE = at('CFG_WRITE'),
  C_BAR_READ = at('BAR_READ'),
  C_BAR_WRITE = at('BAR_WRITE'),
  C_NOP = at('NOP');
export const C_BYTES_READ = at('BYTES_READ'),
  C_BYTES_WRITTEN = at('BYTES_WRITTEN');
export const C_MSIX_TABLE = at('MSIX_TABLE'),
  C_MSIX_PBA = at('MSIX_PBA');
export const C_ERR_BAD_OP = at('ERR_BAD_OP'),
  C_ERR_NOT_READY = at('ERR_NOT_READY');
export const C_WORKER_STARTS = at('WORKER_STARTS');
export const C_BAR_READS = at('BAR_READS'),
  C_BAR_WRITES = at('BAR_WRITES');
export const C_BAR_BYTES_READ = at('BAR_BYTES_READ'),
  C_BAR_BYTES_WRITTEN = at('BAR_BYTES_WRITTEN');
export const C_SERVED = at('SERVED'),
  C_LOST = at('LOST'),
  C_SLEEPS = at('SLEEPS'),
  C_WAKES = at('WAKES'),
  C_TURNS = at('TURNS');
export const C_HEARTBEATS = at('HEARTBEATS'),
  C_ERR_DEVICE_FAILED = at('ERR_DEVICE_FAILED'),
  C_RESTARTS = at('RESTARTS'),
  C_FAIL_EXIT = at('FAIL_EXIT'),
  C_STATE_RUNNING = at('STATE_RUNNING'),
  C_FAULT_KILL = at('FAULT_KILL'),
  C_OUTSIDE = at('OUTSIDE');
/** Slots after C_FAIL_EXIT, in declaration order; states after C_STATE_RUNNING; faults after C_FAULT_KILL. */
export const FAIL_REASONS = ['exit', 'crash', 'hang', 'stuck', 'spawn'] as const;
export const SUPERVISOR_STATES = ['running', 'restarting', 'failed'] as const;
export const FAULT_KINDS = ['kill', 'throw', 'crash', 'hang', 'errno', 'delay', 'corrupt'] as const;

/** The error slot of a non-OK STATUS from BAD_OP (-1) to NOT_READY (-7), in declaration order. */
export const errorSlot = (status: number): number => C_ERR_BAD_OP - 1 - status;

/**
 * The interrupt counters, kept in the device's irq buffer (src/irq/irq-state.ts): per-source
 * arrays (labels kind and vector) and header words. Declared here; read by readCounters.
 */
export interface IrqCounterDecl {
  readonly name: string;
  readonly help: string;
  readonly type: CounterType;
  readonly unit: CounterDecl['unit'];
  /** A per-source Int32 array in IrqViews, or a header word (IRQ.*). */
  readonly source:
    | { array: 'FIRED' | 'DELIVERED' | 'PENDED' | 'MASKS' | 'UNMASKS' | 'ROUTED' }
    | { word: 'ROUTE_UPDATES' | 'ROUTE_COMMITS' | 'ROUTE_COMMIT_US' | 'ERRORS' | 'POLLER_ERRORS' };
  /** Multiplies the stored value (µs words exported in seconds). */
  readonly scale?: number;
}

export const IRQ_COUNTERS: readonly IrqCounterDecl[] = [
  {
    name: 'vfio_runtime_irq_fired',
    help: "Firings userspace saw on a source's eventfd (wraps at 2^32)",
    type: 'counter',
    unit: 'interrupts',
    source: { array: 'FIRED' },
  },
  {
    name: 'vfio_runtime_irq_delivered',
    help: 'Interrupts delivered by userspace (host callback or KVM_SIGNAL_MSI)',
    type: 'counter',
    unit: 'interrupts',
    source: { array: 'DELIVERED' },
  },
  {
    name: 'vfio_runtime_irq_pended',
    help: 'Firings that arrived while the vector was masked (pending bit set)',
    type: 'counter',
    unit: 'interrupts',
    source: { array: 'PENDED' },
  },
  {
    name: 'vfio_runtime_irq_masks',
    help: 'Times a vector went from deliverable to masked (guest mask bit, function mask, disable)',
    type: 'counter',
    unit: 'masks',
    source: { array: 'MASKS' },
  },
  {
    name: 'vfio_runtime_irq_unmasks',
    help: 'Times a vector went from masked (or unused) to deliverable',
    type: 'counter',
    unit: 'masks',
    source: { array: 'UNMASKS' },
  },
  {
    name: 'vfio_runtime_irq_kvm_routed',
    help: 'Vectors whose route KVM has committed (1): delivered by irqfd in the kernel, not counted',
    type: 'gauge',
    unit: 'routes',
    source: { array: 'ROUTED' },
  },
  {
    name: 'vfio_runtime_irq_route_commits',
    help: 'Route table commits the GSI router made for this device (one KVM_SET_GSI_ROUTING each)',
    type: 'counter',
    unit: 'commits',
    source: { word: 'ROUTE_COMMITS' },
  },
  {
    name: 'vfio_runtime_irq_route_commit_seconds',
    help: "Time the device's route commits took, from staging to the router's answer",
    type: 'counter',
    unit: 'seconds',
    source: { word: 'ROUTE_COMMIT_US' },
    scale: 1e-6,
  },
  {
    name: 'vfio_runtime_irq_route_updates',
    help: 'Route changes the GSI router committed for this device',
    type: 'counter',
    unit: 'updates',
    source: { word: 'ROUTE_UPDATES' },
  },
  {
    name: 'vfio_runtime_irq_errors',
    help: 'Interrupt setup errors in the device worker',
    type: 'counter',
    unit: 'errors',
    source: { word: 'ERRORS' },
  },
  {
    name: 'vfio_runtime_irq_poller_errors',
    help: "Errors in the device's interrupt poller thread",
    type: 'counter',
    unit: 'errors',
    source: { word: 'POLLER_ERRORS' },
  },
];
