// Peer-to-peer DMA to device BARs: a device's BAR (its mappable areas) mapped into every active
// DMA backend at an IOVA the VMM chooses (the BAR's guest address), so another assigned device
// can DMA into it, as QEMU, Cloud Hypervisor and OpenVMM map their guests' BARs. iommufd maps
// a dma-buf of the area (VFIO_DEVICE_FEATURE_DMA_BUF, IOMMU_IOAS_MAP_FILE: iommufd pins pages
// and a BAR has none, so it cannot map the BAR's mmap by address); the legacy container maps an
// mmap of the area by host address (Type1 resolves VM_PFNMAP vmas). A failure is reported with
// its errno and reason, never thrown: the guest runs on without P2P to that BAR.
import { SysError } from '../../native/errno.js';
import { C, close, errno, MAP_FAILED, raw, type Target } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import type { BarRange } from '../device/bar-areas.js';
import { type DmaBackend, type DmaSource, hvaSource } from './backend.js';
import { hex } from './iova-ranges.js';

/** A device BAR to map for peers: where its areas come from (the device fd) and which they are. */
export interface PeerBarTarget {
  readonly port: string;
  /** The exporting device's VFIO fd (cdev or group-opened). */
  readonly device: Target;
  readonly bar: number;
  /** The BAR's region offset in the device fd (an mmap of it starts there). */
  readonly regionOffset: bigint;
  /** The BAR's mappable areas, [start, end) (DeviceDescription.bars[i].mappable). */
  readonly areas: readonly BarRange[];
}

export type PeerVia = 'dma-buf' | 'host-address';

/** One area of a BAR in one backend: mapped, or why not. */
export interface PeerAreaResult {
  readonly port: string;
  readonly bar: number;
  /** `<kind>:<name>` of the backend, as describe() names it. */
  readonly backend: string;
  readonly via: PeerVia;
  readonly iova: string;
  /** The area's offset in the BAR and its size, bytes. */
  readonly offset: number;
  readonly size: number;
  readonly ok: boolean;
  /** When not ok: the errno's name (or the error's class) and what it means here. */
  readonly errno?: string;
  readonly reason?: string;
}

interface Placed {
  readonly backend: DmaBackend;
  readonly iova: bigint;
  readonly size: number;
}

interface PeerBar {
  readonly target: PeerBarTarget;
  readonly iova: bigint;
  readonly placed: Placed[];
  /** The container path's mmaps of the areas (unmapped after the IOMMU mappings go). */
  readonly hostMaps: { hva: bigint; size: number }[];
  readonly results: PeerAreaResult[];
}

const name = (b: DmaBackend): string => `${b.kind}:${b.name}`;
const key = (port: string, bar: number): string => `${port}/${bar}`;

/** What an export or map failure means for P2P, by errno. */
function reasonFor(e: unknown, via: PeerVia, step: string): { errno: string; reason: string } {
  const code = e instanceof SysError ? e.code : ((e as Error)?.name ?? 'Error');
  const why: Record<string, string> =
    via === 'dma-buf'
      ? {
          ENOTTY:
            'the kernel has no VFIO_DEVICE_FEATURE_DMA_BUF (it needs Linux 6.19 or later built with CONFIG_VFIO_PCI_DMABUF, which comes with CONFIG_PCI_P2PDMA)',
          EOPNOTSUPP:
            "the device's VFIO driver does not export BARs, or iommufd cannot import this dma-buf",
          ENODEV: 'the BAR is not claimed by vfio-pci, or memory decoding is off (revoked)',
          EINVAL: 'the kernel refused the range (whole pages inside the BAR) or the IOVA',
          EEXIST: 'something is mapped at that IOVA already',
        }
      : {
          EFAULT: 'Type1 could not resolve the mmap of the BAR to a PFN (memory decoding off?)',
          EINVAL: 'Type1 refused the IOVA or the mmap (outside the allowed ranges?)',
          EEXIST: 'something is mapped at that IOVA already',
          ENOMEM: 'out of locked memory or DMA mappings (dma_entry_limit)',
        };
  return {
    errno: code,
    reason: `${step}: ${why[code] ?? (e as Error)?.message ?? String(e)}`,
  };
}

/** Totals since the runtime started: map calls, unmap calls, areas that failed to map. */
export interface PeerBarStats {
  maps: number;
  unmaps: number;
  failedAreas: number;
}

export class PeerBars {
  readonly #bars = new Map<string, PeerBar>();
  /** Devices whose VFIO driver or kernel cannot export a dma-buf (ENOTTY, EOPNOTSUPP): not asked again. */
  readonly #noDmaBuf = new Map<number, unknown>();
  readonly stats: PeerBarStats = { maps: 0, unmaps: 0, failedAreas: 0 };

  /**
   * Map `target`'s areas at `iova` + area offset into each of `backends` (the active ones).
   * A BAR mapped already at another IOVA is unmapped first (it moved); at the same IOVA it is
   * left alone. Returns one result per area and backend; failures are in it, not thrown.
   */
  map(target: PeerBarTarget, iova: bigint, backends: readonly DmaBackend[]): PeerAreaResult[] {
    const k = key(target.port, target.bar);
    const old = this.#bars.get(k);
    if (old && old.iova === iova) return old.results;
    if (old) this.unmap(target.port, target.bar);
    const pb: PeerBar = { target, iova, placed: [], hostMaps: [], results: [] };
    this.#bars.set(k, pb);
    this.stats.maps++;
    for (const area of target.areas) {
      const iommufd = backends.filter((b) => b.kind === 'iommufd');
      const container = backends.filter((b) => b.kind === 'container');
      if (iommufd.length) this.#viaDmaBuf(pb, area, iommufd);
      if (container.length) this.#viaHostAddress(pb, area, container);
    }
    return pb.results;
  }

  /** Export the area once as a dma-buf and map it into each iommufd backend; the fd closes after (the IOAS holds the dma-buf). */
  #viaDmaBuf(pb: PeerBar, area: BarRange, backends: readonly DmaBackend[]): void {
    const t = pb.target;
    const known = this.#noDmaBuf.get(t.device.fd);
    if (known) {
      for (const b of backends)
        this.#result(pb, b, 'dma-buf', area, known, 'VFIO_DEVICE_FEATURE_DMA_BUF');
      return;
    }
    let fd: number;
    try {
      fd = vfio.deviceFeatureDmaBuf(
        t.device,
        t.bar,
        [{ offset: BigInt(area[0]), length: BigInt(area[1] - area[0]) }],
        C.O_RDWR | C.O_CLOEXEC,
      );
    } catch (e) {
      // No support is not going to change for this fd: the next BAR placement is answered from
      // here (the guest suite saw 74 ENOTTY calls in one boot before this was kept).
      if (e instanceof SysError && (e.code === 'ENOTTY' || e.code === 'EOPNOTSUPP'))
        this.#noDmaBuf.set(t.device.fd, e);
      for (const b of backends)
        this.#result(pb, b, 'dma-buf', area, e, 'VFIO_DEVICE_FEATURE_DMA_BUF');
      return;
    }
    const src: DmaSource = {
      kind: 'dmabuf',
      fd: { fd, path: `dma-buf of ${t.port} BAR${t.bar}+${hex(BigInt(area[0]))}` },
      offset: 0n,
    };
    try {
      for (const b of backends) this.#place(pb, b, 'dma-buf', area, src);
    } finally {
      close(fd);
    }
  }

  /** mmap the area from the device fd and map it by host address (Type1 follows the PFN map). */
  #viaHostAddress(pb: PeerBar, area: BarRange, backends: readonly DmaBackend[]): void {
    const t = pb.target,
      size = area[1] - area[0];
    const at = t.regionOffset + BigInt(area[0]);
    const hva = raw.mmap(null, size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, t.device.fd, at);
    if (hva === MAP_FAILED || hva === 0n) {
      const e = new SysError('mmap', `${t.device.path} (BAR${t.bar} at ${hex(at)})`, errno());
      for (const b of backends) this.#result(pb, b, 'host-address', area, e, 'mmap of the BAR');
      return;
    }
    pb.hostMaps.push({ hva, size });
    for (const b of backends) this.#place(pb, b, 'host-address', area, hvaSource(hva));
  }

  #place(pb: PeerBar, b: DmaBackend, via: PeerVia, area: BarRange, src: DmaSource): void {
    const iova = pb.iova + BigInt(area[0]),
      size = area[1] - area[0];
    try {
      b.mapFixed(iova, BigInt(size), src);
    } catch (e) {
      const call = via === 'dma-buf' ? 'IOMMU_IOAS_MAP_FILE' : 'VFIO_IOMMU_MAP_DMA';
      this.#result(pb, b, via, area, e, call);
      return;
    }
    pb.placed.push({ backend: b, iova, size });
    this.#result(pb, b, via, area);
  }

  #result(pb: PeerBar, b: DmaBackend, via: PeerVia, area: BarRange, e?: unknown, step = ''): void {
    if (e !== undefined) this.stats.failedAreas++;
    pb.results.push({
      port: pb.target.port,
      bar: pb.target.bar,
      backend: name(b),
      via,
      iova: hex(pb.iova + BigInt(area[0])),
      offset: area[0],
      size: area[1] - area[0],
      ok: e === undefined,
      ...(e === undefined ? {} : reasonFor(e, via, step)),
    });
  }

  /**
   * Unmap the BAR from every backend, then drop its host mmaps; returns the bytes unmapped.
   * Never throws: an unmap the kernel refuses is reported in `errors` (a backend emptied since
   * has dropped the mapping with its address space).
   */
  unmap(port: string, bar: number, errors: unknown[] = []): bigint {
    const pb = this.#bars.get(key(port, bar));
    if (!pb) return 0n;
    this.#bars.delete(key(port, bar));
    this.stats.unmaps++;
    let bytes = 0n;
    for (const p of pb.placed) {
      try {
        bytes += p.backend.unmap(p.iova, BigInt(p.size));
      } catch (e) {
        errors.push(e);
      }
    }
    for (const m of pb.hostMaps) raw.munmap(m.hva, m.size);
    return bytes;
  }

  /** Unmap every BAR of `port` (before the device goes); returns the bytes unmapped. */
  unmapDevice(port: string, errors: unknown[] = []): bigint {
    let bytes = 0n;
    for (const pb of [...this.#bars.values()]) {
      if (pb.target.port !== port) continue;
      this.#noDmaBuf.delete(pb.target.device.fd); // the fd number may be reused
      bytes += this.unmap(port, pb.target.bar, errors);
    }
    return bytes;
  }

  /** Unmap everything. */
  clear(errors: unknown[] = []): bigint {
    this.#noDmaBuf.clear();
    let bytes = 0n;
    for (const pb of [...this.#bars.values()])
      bytes += this.unmap(pb.target.port, pb.target.bar, errors);
    return bytes;
  }

  /** Every BAR mapped for peers now: its IOVA and what each area/backend came to. */
  list(): { port: string; bar: number; iova: string; results: readonly PeerAreaResult[] }[] {
    return [...this.#bars.values()].map((pb) => ({
      port: pb.target.port,
      bar: pb.target.bar,
      iova: hex(pb.iova),
      results: pb.results,
    }));
  }

  /** The IOVA `port`'s BAR `bar` is mapped at for peers, if it is. */
  iovaOf(port: string, bar: number): bigint | undefined {
    return this.#bars.get(key(port, bar))?.iova;
  }
}
