// Prometheus metrics of peer-to-peer DMA to BARs: the peer mappings per device BAR by backend,
// method and result, and the runtime's map/unmap/failure totals, read from describe() at scrape
// time. (Per BAR mapped and trapped bytes are the exporter's vfio_runtime_bar_mapped_bytes and
// _trapped_bytes; the accesses that still reach the ring, vfio_runtime_bar_accesses_total.)
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RuntimeDescription } from '../coordinator/runtime.js';
import type { PeerBarStats } from '../dma/peer-bars.js';

type Devices = RuntimeDescription['devices'];

export function registerPeerBarMetrics(
  registry: Registry,
  devices: () => Devices,
  totals: PeerBarStats,
): void {
  new Gauge({
    name: 'vfio_runtime_p2p_bar_areas',
    help: 'BAR areas mapped for peer-to-peer DMA now, by backend, method and result',
    labelNames: ['device', 'bar', 'backend', 'via', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of devices())
        for (const b of d.bars)
          for (const r of b.peers?.results ?? [])
            this.inc({
              device: d.port,
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
  total('vfio_runtime_p2p_bar_maps_total', 'BARs mapped for peers (placed or moved)', 'maps');
  total(
    'vfio_runtime_p2p_bar_unmaps_total',
    'BARs unmapped for peers (moved, decoding off, gone)',
    'unmaps',
  );
  total(
    'vfio_runtime_p2p_bar_map_failures_total',
    'BAR areas a backend refused to map for peers',
    'failedAreas',
  );
}
