// Per-device shared memory the coordinator allocates and every worker incarnation reuses:
// the request counters (read by metrics at scrape time, no message per request; declared in
// src/metrics/schema.ts) and the device state a restarted worker resumes from (virtual config space, MSI-X table and PBA), and
// the interrupt state and counters (layout in src/irq/irq-state.ts).
import { PCI } from '../../native/pci-regs.js';
import { createIrqState } from '../irq/irq-state.js';
import { STATS_SLOTS } from '../metrics/schema.js';

const MAX_MSIX = 2048;
const CONFIG_BYTES = PCI.PCI_CFG_SPACE_EXP_SIZE;
const TABLE_BYTES = MAX_MSIX * PCI.PCI_MSIX_ENTRY_SIZE;
const PBA_BYTES = MAX_MSIX / 8;

/** Layout of the state buffer: [flags:int32 ×4][config 4 KiB][MSI-X table][PBA]. */
export const RESTORE = { FLAGS_BYTES: 16, INITIALIZED: 0 } as const;

export interface DeviceMemory {
  stats: SharedArrayBuffer;
  state: SharedArrayBuffer;
  /** Interrupt sources: eventfds, GSIs, VFIO triggers, committed routes, counters, doorbells. */
  irq: SharedArrayBuffer;
}

export function createDeviceMemory(): DeviceMemory {
  return {
    stats: new SharedArrayBuffer(STATS_SLOTS * 8), // slots declared in src/metrics/schema.ts
    state: new SharedArrayBuffer(RESTORE.FLAGS_BYTES + CONFIG_BYTES + TABLE_BYTES + PBA_BYTES),
    irq: createIrqState(),
  };
}

export interface RestoreViews {
  flags: Int32Array;
  config: Uint8Array;
  msixTable: (n: number) => Uint8Array;
  pba: (n: number) => Uint8Array;
}

export function restoreViews(state: SharedArrayBuffer): RestoreViews {
  const base = RESTORE.FLAGS_BYTES;
  return {
    flags: new Int32Array(state, 0, RESTORE.FLAGS_BYTES / 4),
    config: new Uint8Array(state, base, CONFIG_BYTES),
    msixTable: (n) => new Uint8Array(state, base + CONFIG_BYTES, n * PCI.PCI_MSIX_ENTRY_SIZE),
    pba: (n) => new Uint8Array(state, base + CONFIG_BYTES + TABLE_BYTES, Math.ceil(n / 64) * 8),
  };
}
