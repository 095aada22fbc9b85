// The VMM's exit counters, summed over the vCPUs' rows of the shared stats buffer (the row's
// layout, STAT, is declared in src/metrics/schema.ts; Vm.registerMetrics exports it per vCPU).
import { STAT } from './shared.js';

export interface VmStats {
  /** KVM_RUN returns with an exit to handle (every reason but intr, which is `interrupted`). */
  exits: number;
  io: number;
  mmio: number;
  /** Config-space accesses through 0xcfc-0xcff. */
  config: number;
  uart: number;
  hlt: number;
  /** KVM_RUN interrupted by a signal (our kicks): exit reason intr. */
  interrupted: number;
  unknownPio: number;
  unknownMmio: number;
  /** Device accesses the device refused (read as all ones / dropped). */
  refused: number;
  /** Of those: accesses a dying worker had taken (WORKER_DIED), and ones to a failed device. */
  lost: number;
  failed: number;
  /** BAR accesses per device port. */
  bar: Record<string, number>;
  /**
   * Time in user space handling exits, and the part of it waiting on device rings: estimates
   * from the sampled exits (one in SAMPLE_EVERY), scaled to all exits; `sampled` were timed.
   */
  exitMs: number;
  ringMs: number;
  sampled: number;
  /** Mean user-space handling time of an exit, µs (from the samples). */
  exitUs: number;
  /** Per vCPU: its last exit (reason, port or address) and whether it is still handling it. */
  vcpus: { busy: boolean; lastReason: number; lastAddr: string }[];
}

/** The exit rows `exits` sums (intr is not an exit to handle: the VMM's kick). */
const EXIT_KEYS = [
  'EXIT_IO',
  'EXIT_MMIO',
  'EXIT_HLT',
  'EXIT_SHUTDOWN',
  'EXIT_SYSTEM_EVENT',
  'EXIT_FAIL_ENTRY',
  'EXIT_INTERNAL_ERROR',
  'EXIT_OTHER',
] as const;

/** Zero the BAR accesses of PCI slot index `i` on every vCPU row (a device plugged there). */
export function resetSlotCounts(s: Float64Array, cpus: number, i: number): void {
  for (let c = 0; c < cpus; c++) s[c * STAT.WORDS + STAT.DEVICE + i] = 0;
}

export function collectStats(s: Float64Array, cpus: number, devices: readonly string[]): VmStats {
  const sum = (k: number): number => {
    let t = 0;
    for (let i = 0; i < cpus; i++) t += s[i * STAT.WORDS + k]!;
    return t;
  };
  const exits = EXIT_KEYS.reduce((n, k) => n + sum(STAT[k]), 0);
  return {
    exits,
    io: sum(STAT.EXIT_IO),
    mmio: sum(STAT.EXIT_MMIO),
    config: sum(STAT.CONFIG),
    uart: sum(STAT.UART),
    hlt: sum(STAT.EXIT_HLT),
    interrupted: sum(STAT.EXIT_INTR),
    unknownPio: sum(STAT.UNKNOWN_PIO),
    unknownMmio: sum(STAT.UNKNOWN_MMIO),
    refused: sum(STAT.REFUSED),
    lost: sum(STAT.LOST),
    failed: sum(STAT.FAILED),
    bar: Object.fromEntries(devices.map((d, i) => [d, sum(STAT.DEVICE + i)])),
    ...timing(exits, sum(STAT.SAMPLED), sum(STAT.EXIT_MS), sum(STAT.RING_MS)),
    vcpus: Array.from({ length: cpus }, (_, i) => {
      const r = i * STAT.WORDS;
      const lastAddr = `0x${s[r + STAT.LAST_ADDR]!.toString(16)}`;
      return { busy: s[r + STAT.BUSY] === 1, lastReason: s[r + STAT.LAST_REASON]!, lastAddr };
    }),
  };
}

function timing(
  exits: number,
  sampled: number,
  exitMs: number,
  ringMs: number,
): { exitMs: number; ringMs: number; sampled: number; exitUs: number } {
  const scale = sampled ? exits / sampled : 0;
  const exitUs = sampled ? Math.round((exitMs * 1000) / sampled) : 0;
  return {
    exitMs: Math.round(exitMs * scale),
    ringMs: Math.round(ringMs * scale),
    sampled,
    exitUs,
  };
}
