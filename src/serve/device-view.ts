// What a vfio-user client is told about a device the runtime serves, from the worker's
// DeviceDescription: the regions (BARs with the areas the BAR fast path maps, offered as the
// device fd at the BAR's VFIO region offset, so the client mmaps them and its guest's doorbells
// never reach the server; the MSI-X table and PBA pages left out), the config space as the
// runtime emulates it, no ROM and no VGA; the interrupt indexes as VFIO reports them. Pure.
import * as vfio from '../../native/vfio.js';
import type { DeviceDescription } from '../index.js';

const V = vfio.VFIO_C;

export interface RegionView {
  flags: number;
  size: bigint;
  mmap?: { fd: number; offset: bigint; areas: { offset: bigint; size: bigint }[] };
}

export interface DeviceView {
  info: { flags: number; numRegions: number; numIrqs: number };
  /** By VFIO region index; null where the client sees no region. */
  regions: (RegionView | null)[];
  irqs: ({ flags: number; count: number } | null)[];
}

export interface ViewOptions {
  /** The VFIO device fd the mmap areas are offered from; undefined: no area is offered (every BAR access goes through the server). */
  mmapFd?: number;
}

export function deviceView(d: DeviceDescription, opts: ViewOptions = {}): DeviceView {
  const regions: (RegionView | null)[] = Array(V.VFIO_PCI_NUM_REGIONS).fill(null);
  for (const b of d.bars) regions[b.index] = barView(b, opts.mmapFd);
  regions[V.VFIO_PCI_CONFIG_REGION_INDEX] = {
    flags: V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE,
    size: BigInt(d.configSize),
  };
  const irqs: DeviceView['irqs'] = Array(V.VFIO_PCI_NUM_IRQS).fill(null);
  for (const i of d.irqs)
    if (i.index < irqs.length && i.count > 0) irqs[i.index] = { flags: i.flags, count: i.count };
  return {
    info: {
      flags: V.VFIO_DEVICE_FLAGS_PCI | V.VFIO_DEVICE_FLAGS_RESET,
      numRegions: V.VFIO_PCI_NUM_REGIONS,
      numIrqs: V.VFIO_PCI_NUM_IRQS,
    },
    regions,
    irqs,
  };
}

function barView(b: DeviceDescription['bars'][number], mmapFd: number | undefined): RegionView {
  const rw = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE;
  const size = BigInt(b.size);
  if (mmapFd === undefined || b.io || b.mappable.length === 0) return { flags: rw, size };
  return {
    flags: rw | V.VFIO_REGION_INFO_FLAG_MMAP,
    size,
    mmap: {
      fd: mmapFd,
      offset: BigInt(b.regionOffset),
      areas: b.mappable.map(([s, e]) => ({ offset: BigInt(s), size: BigInt(e - s) })),
    },
  };
}
