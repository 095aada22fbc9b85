// Per BAR of an assigned device, what describe() and the metrics show of the BAR fast path and
// peer-to-peer DMA: the areas a VMM may map (no exits), the ranges that trap, the accesses that
// still reached the ring (the device's per-BAR counters: with the fast path, the MSI-X table and
// PBA), and where peers reach the BAR by DMA.
import type { DeviceDescription } from '../device/assigned-device.js';
import type { BarRange } from '../device/bar-areas.js';
import type { PeerAreaResult } from '../dma/peer-bars.js';
import type { CounterRow } from '../metrics/read-counters.js';

export interface BarSummary {
  index: number;
  size: string;
  /** [start, end) in the BAR, hex: mappable (the VMM's KVM slots) and trapped (the ring). */
  mappable: string[];
  trapped: string[];
  mappableBytes: number;
  trappedBytes: number;
  /** Accesses that reached the ring (VMM exits forwarded), by direction. */
  ringReads: number;
  ringWrites: number;
  /** Present while the BAR is mapped for peers: its IOVA and each area's result per backend. */
  peers?: { iova: string; results: readonly PeerAreaResult[] };
}

const span = ([s, e]: BarRange): string => `0x${s.toString(16)}-0x${e.toString(16)}`;
const bytes = (r: readonly BarRange[]): number => r.reduce((n, [s, e]) => n + e - s, 0);

export function barSummaries(
  d: DeviceDescription,
  counters: readonly CounterRow[],
  peers: readonly { bar: number; iova: string; results: readonly PeerAreaResult[] }[],
): BarSummary[] {
  const ring = (bar: number, direction: string): number =>
    counters.find(
      (r) =>
        r.name === 'vfio_runtime_bar_accesses' &&
        r.labels.bar === String(bar) &&
        r.labels.direction === direction,
    )?.value ?? 0;
  return d.bars.map((b) => {
    const p = peers.find((x) => x.bar === b.index);
    return {
      index: b.index,
      size: b.size,
      mappable: b.mappable.map(span),
      trapped: b.trapped.map(span),
      mappableBytes: bytes(b.mappable),
      trappedBytes: bytes(b.trapped),
      ringReads: ring(b.index, 'read'),
      ringWrites: ring(b.index, 'write'),
      ...(p ? { peers: { iova: p.iova, results: p.results } } : {}),
    };
  });
}
