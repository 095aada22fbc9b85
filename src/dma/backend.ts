// The one interface the coordinator maps DMA through, whichever kernel path is behind it (an
// iommufd IOAS or a legacy VFIO Type1 container), like Cloud Hypervisor's VfioOps; and the
// description of the memory a mapping points at. Nothing above this file needs to know which
// backend is in use.
import type { Target } from '../../native/libc.js';
import { withHint } from '../errors.js';
import type { MemfdRegion } from '../memory/memfd-region.js';
import type { DmaStats } from './dma-stats.js';
import { hex, type IovaRange } from './iova-ranges.js';
import type { MapRunner } from './map-offload.js';

/**
 * The memory behind a mapping. A memfd source is mapped by file and offset where the backend
 * can (iommufd IOMMU_IOAS_MAP_FILE: no user address needed, pins the file's pages directly);
 * it still carries its host virtual address, which the legacy container always maps by.
 */
export type GuestMemorySource =
  | { readonly kind: 'memfd'; readonly fd: Target; readonly offset: bigint; readonly hva: bigint }
  | { readonly kind: 'hva'; readonly hva: bigint };

/** What a backend maps: guest memory, or (iommufd only) a device BAR exported as a dma-buf. */
export type DmaSource = GuestMemorySource | DmaBufSource;

/**
 * A device BAR (range) exported by VFIO as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF), for peer-to-
 * peer DMA: iommufd maps it by file (IOMMU_IOAS_MAP_FILE). It has no host address, so neither
 * the legacy container nor guest RAM can use it.
 */
export interface DmaBufSource {
  readonly kind: 'dmabuf';
  readonly fd: Target;
  readonly offset: bigint;
  readonly hva?: undefined;
}

export function memfdSource(fd: Target, offset: bigint, hva: bigint): GuestMemorySource {
  if (offset < 0n)
    throw new RangeError(`memfd source ${fd.path}: offset must not be negative, got ${offset}`);
  if (hva <= 0n)
    throw new RangeError(
      `memfd source ${fd.path}: a host virtual address is required (the legacy container maps by address), got ${hex(hva)}`,
    );
  return { kind: 'memfd', fd, offset, hva };
}

export function hvaSource(hva: bigint): GuestMemorySource {
  if (hva <= 0n)
    throw new RangeError(`host-address source: address must be positive, got ${hex(hva)}`);
  return { kind: 'hva', hva };
}

/** A MemfdRegion (guest RAM stand-in) as a source, from byte `offset` of it. */
export const memfdRegionSource = (region: MemfdRegion, offset = 0n): GuestMemorySource =>
  memfdSource(region.fd, offset, region.hva + offset);

/** The same memory, `delta` bytes further on: the source of a piece of a split region. */
export function advanceSource(mem: GuestMemorySource, delta: bigint): GuestMemorySource {
  return mem.kind === 'memfd'
    ? { ...mem, offset: mem.offset + delta, hva: mem.hva + delta }
    : { kind: 'hva', hva: mem.hva + delta };
}

export function describeSource(mem: DmaSource): string {
  return mem.kind === 'hva' ? `host address ${hex(mem.hva)}` : `${mem.fd.path}+${hex(mem.offset)}`;
}

/** One successful map call: unmapping exactly this span undoes it. */
export interface DmaMapping {
  readonly iova: bigint;
  readonly length: bigint;
  readonly memory: DmaSource;
}

/**
 * What a backend tells its listeners (the guest-memory table) after its device set changed:
 * `ranges` when devices are attached (the first attach makes the backend active; a later
 * attach or detach re-reads the allowed ranges, which may narrow or widen), `emptied` when
 * the last device left and the kernel dropped the address space with every mapping in it.
 */
export type BackendEvent =
  | { readonly kind: 'ranges'; readonly ranges: readonly IovaRange[]; readonly alignment: bigint }
  | { readonly kind: 'emptied' };
export type BackendListener = (event: BackendEvent, backend: DmaBackend) => void;

/** A PCI function attached to a backend: its VFIO device fd, and how to let it go. */
export interface AttachedDevice {
  readonly bdf: string;
  /** The VFIO device fd (a cdev or one from VFIO_GROUP_GET_DEVICE_FD); closed by detach(). */
  readonly device: Target;
  readonly backend: DmaBackend;
  /** Mappings the backend had made that the new device's restrictions put outside the allowed ranges. */
  readonly invalid: readonly DmaMapping[];
  detach(): void;
}

export interface DmaBackend {
  readonly kind: 'iommufd' | 'container';
  /** The --iommu id (iommufd) or a name for the container, used in every error message. */
  readonly name: string;
  /** True while at least one device is attached: only then are the allowed ranges final and mappings reach a device. */
  readonly active: boolean;
  /** The IOVA ranges the kernel allows now (inclusive); holes between them are reserved. */
  allowedRanges(): readonly IovaRange[];
  /** The IOVA alignment the kernel requires now. */
  iovaAlignment(): bigint;
  /** Map `length` bytes of `mem` at exactly `iova`. Fails (EEXIST) if any of it is mapped already. */
  mapFixed(iova: bigint, length: bigint, mem: DmaSource): void;
  /** mapFixed with the kernel call made by `run` (a pool thread), so a long pin does not block this thread. */
  mapFixedOffloaded(
    iova: bigint,
    length: bigint,
    mem: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * Map `length` bytes of `mem` at an IOVA the backend chooses (lowest free, never 0); returns
   * it. That IOVA may be one guest RAM registered later needs (IOVA == GPA): register guest RAM
   * first, or expect its map to fail with EEXIST.
   */
  mapAnywhere(length: bigint, mem: DmaSource): bigint;
  /** Unmap whole mappings inside [iova, iova+length); returns the bytes unmapped (0 when nothing was there). */
  unmap(iova: bigint, length: bigint): bigint;
  /** Unmap everything; returns the bytes unmapped. */
  unmapAll(): bigint;
  /** Every live mapping this backend made, one per map call, by IOVA. */
  mappings(): readonly DmaMapping[];
  /** Open the function's VFIO device through this backend and attach it. */
  attachPciDevice(bdf: string): AttachedDevice;
  /** Hear about device-set changes; returns the unsubscribe function. */
  subscribe(listener: BackendListener): () => void;
  /** Map/unmap counts, latency and kernel failures (the metrics read them; both backends keep them). */
  readonly stats?: DmaStats;
}

/**
 * Listener plumbing shared by the backends. Every listener hears every event even if an
 * earlier one throws; the first error is rethrown afterwards so the backend can undo the
 * change that caused it.
 */
export class BackendListeners {
  readonly #listeners = new Set<BackendListener>();

  add(listener: BackendListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  emit(event: BackendEvent, backend: DmaBackend): void {
    let first: unknown;
    let failed = false;
    for (const l of [...this.#listeners]) {
      try {
        l(event, backend);
      } catch (e) {
        if (!failed) {
          first = e;
          failed = true;
        }
      }
    }
    if (failed) throw first;
  }

  /** The backend's device set changed (and it still has devices): tell listeners its ranges now. */
  emitRanges(backend: DmaBackend): void {
    this.emit(
      { kind: 'ranges', ranges: backend.allowedRanges(), alignment: backend.iovaAlignment() },
      backend,
    );
  }

  /**
   * A device joined: tell listeners the backend's ranges now. If a listener refuses them (guest
   * memory mapped where the new device reserves IOVA), `undo` detaches the device again and the
   * listener's error is thrown, naming `device`.
   */
  emitDeviceJoined(backend: DmaBackend, device: string, undo: () => void): void {
    try {
      this.emitRanges(backend);
    } catch (e) {
      try {
        undo();
      } catch {
        /* the listener's error is the one to report */
      }
      throw withHint(e, `${device} was detached from ${backend} again`);
    }
  }

  /** A device left: the backend emptied (every mapping gone with it), or its ranges may have widened. */
  emitDeviceLeft(backend: DmaBackend, emptied: boolean): void {
    if (emptied) this.emit({ kind: 'emptied' }, backend);
    else this.emitRanges(backend);
  }
}
