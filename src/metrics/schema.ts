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
    | 'states'
    | 'connections'
    | 'fds'
    | 'exits';
  /** Fixed labels of this slot (e.g. op="cfg_read"). */
  readonly labels: Readonly<Record<string, string>>;
  readonly count?: number;
  /** An array's label, whose value is the slot's index within the array (e.g. bar="0".."5"). */
  readonly indexLabel?: string;
  /** An array's label values by index, where they are names (e.g. reason="io"), not the index. */
  readonly values?: readonly string[];
  /** Multiplies the stored value on export (ms slots exported in seconds). */
  readonly scale?: number;
}

/** A declared table's slots: each key's first slot, and WORDS, the table's length. */
export type Slots<K extends string> = { readonly [k in K]: number } & { readonly WORDS: number };

/** The slots of a table declared as `decls`, in declaration order (an array takes `count`). */
export function slotsOf<const D extends readonly CounterDecl[]>(decls: D): Slots<D[number]['key']> {
  const out: Record<string, number> = {};
  let n = 0;
  for (const d of decls) {
    out[d.key] = n;
    n += d.count ?? 1;
  }
  out.WORDS = n;
  return out as Slots<D[number]['key']>;
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
const SLOT: Record<string, number> = slotsOf(STATS);
/** Float64 slots in a device's stats buffer. */
export const STATS_SLOTS = SLOT.WORDS!;

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

// The counters of the hosts built on the runtime's front door, declared here as well so that
// Prometheus gets them by the same declarations (read-counters.ts reads every table): the HTTP
// API's (src/api/) and the reference VMM's vCPUs' (src/vmm/). Each slot has one writer.

/** The API's routes (route label; `none`: a path no route serves), as routes.ts serves them. */
export const API_ROUTES = [
  'vm.add-device',
  'vm.remove-device',
  'vm.removal',
  'vm.info',
  'vm.counters',
  'none',
] as const;
export type ApiRoute = (typeof API_ROUTES)[number];

/** The HTTP statuses the API answers with (status label); any other is counted as `other`. */
export const API_STATUSES = [
  '200',
  '202',
  '400',
  '404',
  '405',
  '408',
  '409',
  '411',
  '413',
  '422',
  '431',
  '500',
  '501',
  '502',
  '503',
  '505',
  'other',
] as const;

/** The index of `status` in API_STATUSES (an array's offset; `other` if not listed). */
export function apiStatusIndex(status: number): number {
  const i = (API_STATUSES as readonly string[]).indexOf(String(status));
  return i < 0 ? API_STATUSES.length - 1 : i;
}

const apiTotal = <K extends string>(
  key: K,
  name: string,
  help: string,
  unit: CounterDecl['unit'],
): CounterDecl & { key: K } => ({ key, name, help, type: 'counter', unit, labels: {} });
const byStatus = { count: API_STATUSES.length, indexLabel: 'status', values: API_STATUSES };
const apiRoute = <R extends ApiRoute>(route: R): CounterDecl & { key: `ROUTE_${R}` } => ({
  key: `ROUTE_${route}`,
  name: 'vfio_runtime_api_requests',
  help: 'Requests the API answered, by route (none: no such route) and HTTP status',
  type: 'counter',
  unit: 'requests',
  labels: { route },
  ...byStatus,
});

/**
 * The API's counters (a Float64Array): the socket thread (server-thread.ts) writes all but the
 * routes' rows, which the main thread (server.ts) writes when it answers a request.
 */
export const API_STATS = [
  apiTotal(
    'ACCEPTED',
    'vfio_runtime_api_connections_accepted',
    'Connections the API accepted',
    'connections',
  ),
  {
    key: 'OPEN',
    name: 'vfio_runtime_api_connections_open',
    help: 'Connections open now',
    type: 'gauge',
    unit: 'connections',
    labels: {},
  },
  apiTotal(
    'IDLE_CLOSED',
    'vfio_runtime_api_connections_idle_closed',
    'Keep-alive connections closed after their idle timeout',
    'connections',
  ),
  apiTotal(
    'REQUESTS',
    'vfio_runtime_api_requests_received',
    'Complete requests the socket thread passed on to be answered (answered: vfio_runtime_api_requests_total)',
    'requests',
  ),
  {
    ...apiTotal(
      'REJECTED',
      'vfio_runtime_api_requests_rejected',
      'Requests the socket thread refused itself, by HTTP status (malformed or too big, too many fds, 408 not whole in time, 503 over the connection cap)',
      'requests',
    ),
    ...byStatus,
  },
  apiTotal(
    'FDS_RECEIVED',
    'vfio_runtime_api_fds_received',
    'File descriptors received with requests (SCM_RIGHTS)',
    'fds',
  ),
  apiRoute('vm.add-device'),
  apiRoute('vm.remove-device'),
  apiRoute('vm.removal'),
  apiRoute('vm.info'),
  apiRoute('vm.counters'),
  apiRoute('none'),
] as const satisfies readonly CounterDecl[];

/** The API's slots; a by-status array's slot is its key's plus apiStatusIndex(status). */
export const API_STAT = slotsOf(API_STATS);

/** The slot counting an answer of `route` with `status`. */
export const apiRequestSlot = (route: ApiRoute, status: number): number =>
  API_STAT[`ROUTE_${route}`] + apiStatusIndex(status);

/** PCI slots of the reference VMM's bus 0 (the vCPU rows count BAR accesses per slot). */
export const VM_PCI_SLOTS = 16;

const vcpuTotal = <K extends string>(
  key: K,
  name: string,
  help: string,
  unit: CounterDecl['unit'] = 'requests',
): CounterDecl & { key: K } => ({ key, name, help, type: 'counter', unit, labels: {} });

const exit = <K extends string>(key: K, reason: string): CounterDecl & { key: K } => ({
  key,
  name: 'vfio_runtime_vm_exits',
  help: 'vCPU exits by KVM exit reason (intr: KVM_RUN ended by a signal, as the VMM kicks)',
  type: 'counter',
  unit: 'exits',
  labels: { reason },
});
const unhandled = <K extends string>(key: K, space: string): CounterDecl & { key: K } => ({
  ...vcpuTotal(
    key,
    'vfio_runtime_vm_unhandled_accesses',
    'Port and MMIO accesses no emulated device or BAR answers (reads all ones, writes dropped)',
  ),
  labels: { space },
});

/** A vCPU's row of the VMM's stats (a Float64Array, one row per vCPU, its vCPU the writer). */
export const VCPU_STATS = [
  exit('EXIT_IO', 'io'),
  exit('EXIT_MMIO', 'mmio'),
  exit('EXIT_HLT', 'hlt'),
  exit('EXIT_INTR', 'intr'),
  exit('EXIT_SHUTDOWN', 'shutdown'),
  exit('EXIT_SYSTEM_EVENT', 'system_event'),
  exit('EXIT_FAIL_ENTRY', 'fail_entry'),
  exit('EXIT_INTERNAL_ERROR', 'internal_error'),
  exit('EXIT_OTHER', 'other'),
  vcpuTotal(
    'CONFIG',
    'vfio_runtime_vm_pci_config_accesses',
    'PCI config-space accesses through ports 0xcfc-0xcff (conf1)',
  ),
  vcpuTotal('UART', 'vfio_runtime_vm_uart_accesses', "Accesses to the 8250 UART's ports"),
  unhandled('UNKNOWN_PIO', 'pio'),
  unhandled('UNKNOWN_MMIO', 'mmio'),
  vcpuTotal(
    'REFUSED',
    'vfio_runtime_vm_device_refusals',
    'Device accesses the device refused (an error status: a read gives all ones, a write is dropped); lost and failed ones included',
  ),
  vcpuTotal(
    'LOST',
    'vfio_runtime_vm_device_lost_accesses',
    'Refused device accesses a dying worker had taken (WORKER_DIED: effect unknown)',
  ),
  vcpuTotal(
    'FAILED',
    'vfio_runtime_vm_failed_device_accesses',
    'Refused device accesses to a failed device (DEVICE_FAILED)',
  ),
  {
    ...vcpuTotal(
      'DEVICE',
      'vfio_runtime_vm_bar_accesses',
      "Trapped BAR accesses the vCPUs sent to a device's ring, by device",
    ),
    count: VM_PCI_SLOTS,
    indexLabel: 'device',
  },
  vcpuTotal(
    'SAMPLED',
    'vfio_runtime_vm_sampled_exits',
    'Exits whose handling was timed (one in SAMPLE_EVERY)',
    'exits',
  ),
  {
    ...vcpuTotal(
      'EXIT_MS',
      'vfio_runtime_vm_sampled_exit_handling_seconds',
      'User-space time the timed exits took, from KVM_RUN returning to the next call',
      'seconds',
    ),
    scale: 1e-3,
  },
  {
    ...vcpuTotal(
      'RING_MS',
      'vfio_runtime_vm_sampled_ring_wait_seconds',
      "Of the timed exits' time, the part waiting on device rings",
      'seconds',
    ),
    scale: 1e-3,
  },
  {
    key: 'BUSY',
    name: 'vfio_runtime_vm_vcpu_busy',
    help: 'The vCPU is handling an exit (1) or in KVM_RUN (0); 1 for long: its exit handling hangs',
    type: 'gauge',
    unit: 'states',
    labels: {},
  },
] as const satisfies readonly CounterDecl[];

const VCPU_COUNTED = slotsOf(VCPU_STATS);
/**
 * A vCPU row's layout: the declared slots (DEVICE is an array: add the PCI slot index),
 * then two words not exported, the last exit's reason (KVM's number) and port or address.
 */
export const VCPU_STAT = {
  ...VCPU_COUNTED,
  LAST_REASON: VCPU_COUNTED.WORDS,
  LAST_ADDR: VCPU_COUNTED.WORDS + 1,
  WORDS: VCPU_COUNTED.WORDS + 2,
} as const;
/** The declared slots of a vCPU row (the rest of its WORDS are not counters). */
export const VCPU_COUNTED_WORDS = VCPU_COUNTED.WORDS;
