// Prometheus metrics of the BAR fast path and peer-to-peer DMA, per device BAR: the bytes a VMM
// may map (no exits) and the bytes that trap, and the peer mappings by backend and result, with
// the runtime's map/unmap/failure totals. Read from describe() at scrape time. (The accesses that
// still reach the ring per BAR are the device counters' vfio_bar_accesses{bar}.)
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RuntimeDescription } from '../coordinator/runtime.js';
import type { PeerBarStats } from '../dma/peer-bars.js';

type Devices = RuntimeDescription['devices'];

export function registerBarMetrics(
  registry: Registry,
  devices: () => Devices,
  totals: PeerBarStats,
): void {
  const barGauge = (name: string, help: string, pick: 'mappableBytes' | 'trappedBytes') =>
    new Gauge({
      name,
      help,
      labelNames: ['port', 'bar'],
      registers: [registry],
      collect() {
        this.reset();
        for (const d of devices())
          for (const b of d.bars) this.set({ port: d.port, bar: String(b.index) }, b[pick]);
      },
    });
  barGauge(
    'vfio_bar_mappable_bytes',
    'BAR bytes a VMM may map into the guest (accesses there take no exit)',
    'mappableBytes',
  );
  barGauge(
    'vfio_bar_trapped_bytes',
    'BAR bytes whose accesses trap to the ring (MSI-X table and PBA pages, at least)',
    'trappedBytes',
  );
  new Gauge({
    name: 'vfio_p2p_bar_areas',
    help: 'BAR areas mapped for peer-to-peer DMA now, by backend, method and result',
    labelNames: ['port', 'bar', 'backend', 'via', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of devices())
        for (const b of d.bars)
          for (const r of b.peers?.results ?? [])
            this.inc({
              port: d.port,
              bar: String(b.index),
              backend: r.backend,
              via: r.via,
              result: r.ok ? 'mapped' : (r.errno ?? 'failed'),
            });
    },
  });
  const total = (name: string, help: string, pick: keyof PeerBarStats): void => {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(totals[pick]);
      },
    });
  };
  total('vfio_p2p_bar_maps_total', 'BARs mapped for peers (placed or moved)', 'maps');
  total(
    'vfio_p2p_bar_unmaps_total',
    'BARs unmapped for peers (moved, decoding off, gone)',
    'unmaps',
  );
  total(
    'vfio_p2p_bar_map_failures_total',
    'BAR areas a backend refused to map for peers',
    'failedAreas',
  );
}
