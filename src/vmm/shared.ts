// The VM state every vCPU thread shares (one SharedArrayBuffer): how the VM ended, the 8250's
// registers, the PCI address latch, the PCI BAR map the vCPUs dispatch by, the BAR fast path's
// slot table, and the per-vCPU exit counters. Word indexes are constants so the exit path reads
// them without lookups.
import { VCPU_STAT, VM_PCI_SLOTS } from '../threads.js';

/** Control words (Int32Array). */
export const CTL = {
  /** 0 running; set once (compareExchange) by whoever ends the VM. */
  ENDED: 0,
  END_KIND: 1,
  END_VALUE: 2,
  /** CONFIG_ADDRESS (0xcf8), shared: one latch per host bridge, as in hardware. */
  PCI_LATCH: 3,
  /** vCPU threads that reached their loop. */
  STARTED: 4,
  /** The RTC/CMOS register index (0x70). */
  CMOS_INDEX: 5,
  /** Held (1) by whoever changes the BAR fast path's KVM slots (bar-slots.ts). */
  SLOT_LOCK: 6,
  /**
   * Bumped by the main thread when a PCI function comes or goes while the guest runs (hot-plug,
   * vm.ts): each vCPU compares it after every exit and takes the new ring list from its port.
   */
  PCI_GEN: 7,
  /** Bumped (and notified) after a vCPU re-published a device's BAR rows: peer-sync.ts follows. */
  BAR_GEN: 8,
  UART: 9, // UART words from here (uart.ts), 11 of them
  /** KVM_SET_USER_MEMORY_REGION calls of the BAR fast path, and their time in µs (bar-slots.ts). */
  SLOT_OPS: 24,
  SLOT_US: 25,
  COUNT: 32,
} as const;

export const END = {
  NONE: 0,
  DEBUG_EXIT: 1,
  RESET: 2,
  SHUTDOWN: 3,
  ERROR: 4,
  STOPPED: 5,
  TIMEOUT: 6,
} as const;
export type EndKind = 'exit' | 'reset' | 'shutdown' | 'error' | 'stopped' | 'timeout';
export const END_NAMES: Record<number, EndKind> = {
  1: 'exit',
  2: 'reset',
  3: 'shutdown',
  4: 'error',
  5: 'stopped',
  6: 'timeout',
};

/** At most this many assigned devices (bus 0 slots 1..N) and 6 BARs each. */
export const MAX_DEVICES = VM_PCI_SLOTS;
export const BARS = 6;
/**
 * BAR map (Float64Array, one row per device BAR): base, size, kind (0 none, 1 memory, 2 I/O),
 * active (decoding enabled and placed). Written by the vCPU that made the guest's config write
 * (the guest serialises config access), read by every vCPU's exit path.
 */
export const BAR = { BASE: 0, SIZE: 1, KIND: 2, ACTIVE: 3, WORDS: 4 } as const;
export const BAR_MEM = 1,
  BAR_IO = 2;

/**
 * The BAR fast path's slot table (Float64Array, one row per device, BAR and mappable area, see
 * bar-slots.ts): the area's offset in the BAR and size (0: unused row), the host address of its
 * mmap, the guest address its KVM slot is at (SLOT_NONE: none) and the errno of a refused add.
 */
export const MAX_AREAS = 4;
export const SLOT = { OFFSET: 0, SIZE: 1, HVA: 2, GPA: 3, ERRNO: 4, WORDS: 5 } as const;
export const SLOT_ROWS = MAX_DEVICES * BARS * MAX_AREAS;
export const SLOT_NONE = -1;
export const slotRow = (device: number, bar: number, area: number): number =>
  ((device * BARS + bar) * MAX_AREAS + area) * SLOT.WORDS;

/**
 * Per-vCPU counters (Float64Array rows; one writer each: its vCPU), declared in
 * src/metrics/schema.ts (VCPU_STATS) so the metrics read them by name. DEVICE is an array of
 * BAR accesses per PCI slot index; REFUSED counts every access a device refused, LOST (its
 * worker died with it: WORKER_DIED) and FAILED (a failed device: DEVICE_FAILED) are also in it.
 * EXIT_MS, RING_MS and SAMPLED time one exit in SAMPLE_EVERY (the clock is not free under the
 * lab's TCG). BUSY, LAST_REASON, LAST_ADDR: what the vCPU is doing, for a VM that stops.
 */
export const STAT = VCPU_STAT;

export const SAMPLE_EVERY = 16;

export interface VmShared {
  ctl: SharedArrayBuffer;
  bars: SharedArrayBuffer;
  slots: SharedArrayBuffer;
  stats: SharedArrayBuffer;
}

export function createShared(cpus: number): VmShared {
  return {
    ctl: new SharedArrayBuffer(CTL.COUNT * 4),
    bars: new SharedArrayBuffer(MAX_DEVICES * BARS * BAR.WORDS * 8),
    slots: slotTable(),
    stats: new SharedArrayBuffer(cpus * STAT.WORDS * 8),
  };
}

function slotTable(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(SLOT_ROWS * SLOT.WORDS * 8);
  const t = new Float64Array(sab);
  for (let r = 0; r < SLOT_ROWS; r++) t[r * SLOT.WORDS + SLOT.GPA] = SLOT_NONE;
  return sab;
}

/** End the VM once: the first caller's kind and value win. Returns whether this call ended it. */
export function endVm(ctl: Int32Array, kind: number, value: number): boolean {
  if (Atomics.compareExchange(ctl, CTL.END_KIND, 0, kind) !== 0) return false;
  Atomics.store(ctl, CTL.END_VALUE, value);
  Atomics.store(ctl, CTL.ENDED, 1); // after kind and value: a reader that sees ENDED sees both
  Atomics.notify(ctl, CTL.ENDED);
  return true;
}
