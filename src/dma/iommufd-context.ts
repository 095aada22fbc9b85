// One iommufd context per named `--iommu id=<name>`: /dev/iommu (or a pre-opened iommufd fd),
// ONE IOAS shared by every device naming the context, devices bound (VFIO_DEVICE_BIND_IOMMUFD)
// and attached (VFIO_DEVICE_ATTACH_IOMMUFD_PT) to it and counted. Each attach or detach
// re-reads the allowed IOVA ranges and tells listeners; when the last device leaves the IOAS
// is destroyed (the kernel drops every mapping in it) and the next attach allocates a fresh
// one. Implements DmaBackend: memfd memory maps by file (IOMMU_IOAS_MAP_FILE), the rest by
// host address (IOMMU_IOAS_MAP).
import { SysError } from '../../native/errno.js';
import * as iommufd from '../../native/iommufd.js';
import type { Target } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { ConflictError, NotFoundError, withHint } from '../errors.js';
import { OwnedFd } from '../fd.js';
import { DEV_IOMMU, openCdev, openIommufd } from '../vfio/open.js';
import {
  type AttachedDevice,
  type BackendListener,
  BackendListeners,
  type DmaBackend,
  type DmaMapping,
  type DmaSource,
  type GuestMemorySource,
} from './backend.js';
import {
  bdfOfCdev,
  explainAttachConflict,
  explainBindFailure,
  explainBisect,
  explainMapFailure,
  explainUnsafeInterrupts,
} from './diagnose.js';
import { CountedDmaCalls } from './dma-stats.js';
import {
  checkSpan,
  formatRanges,
  formatSpan,
  type IovaRange,
  PAGE_SIZE,
  spanInRanges,
  U64_MAX,
} from './iova-ranges.js';
import type { MapRunner } from './map-offload.js';
import { MappingLog } from './mapping-log.js';

/** Where the context's iommufd comes from: a path (default /dev/iommu) or an fd a privileged helper passed in. */
export type IommufdSource =
  | { readonly path?: string; readonly fd?: undefined }
  | { readonly fd: number; readonly path?: undefined };

export interface IommufdDevice extends AttachedDevice {
  /** The id iommufd gave the bound device. */
  readonly devId: number;
  /** The IOAS the device is attached to (the same for every device of the context). */
  readonly ioasId: number;
  /** The page table the kernel attached it to (an automatic HWPT it may share between devices). */
  readonly ptId: number;
}

export interface IommufdAttachment {
  readonly devId: number;
  readonly ioasId: number;
  readonly ptId: number;
  readonly ranges: readonly IovaRange[];
  /** Mappings already made that the new ranges no longer allow (the kernel normally refuses such an attach instead). */
  readonly invalid: readonly DmaMapping[];
}

/** What the device is attached to now: the IOAS (or a HWPT a vIOMMU chose), or nothing (DMA blocked). */
interface Attached {
  readonly device: Target;
  readonly devId: number;
  ptId: number | undefined;
}

/**
 * Something built on this context's devices and IOAS (a vIOMMU with its HWPTs and vDevices) that
 * must let go of a device before the device leaves, and be gone before the IOAS is destroyed.
 */
export interface ContextDependent {
  releaseDevice(devId: number): void;
  close(): void;
}

/** A device as nested translation drives it: attach to a page table (replacing the old one atomically), go home, or block. */
export interface NestableDevice {
  /** The id iommufd gave the bound device. */
  readonly devId: number;
  /** For error messages: the cdev path, or what the device is. */
  readonly label: string;
  /** Attach to `ptId` (a HWPT or an IOAS) in place of whatever the device has now. */
  attach(ptId: number): void;
  /** Back to the context's IOAS, as it was before a vIOMMU took it. */
  home(): void;
  /** Detach from every page table: DMA is blocked. Absent when the device cannot. */
  block?(): void;
}

export class IommufdContext extends CountedDmaCalls implements DmaBackend {
  /** Map/unmap calls, latency and kernel failures by errno, read by the metrics. */
  readonly kind = 'iommufd' as const;
  readonly #fd: OwnedFd;
  #ioas: number | undefined;
  #ranges: readonly IovaRange[] = [];
  #alignment = PAGE_SIZE;
  readonly #devices = new Map<number, Attached>();
  readonly #log = new MappingLog();
  readonly #listeners = new BackendListeners();
  readonly #dependents = new Set<ContextDependent>();

  private constructor(
    readonly name: string,
    fd: OwnedFd,
    ioas: number,
  ) {
    super();
    this.#fd = fd;
    this.#ioas = ioas;
    this.#refreshRanges();
  }

  /**
   * Open a context: /dev/iommu (or `path`), or take over the pre-opened iommufd `fd` (the
   * context owns it from then on and closes it in close()). Allocates the IOAS at once.
   */
  static open(name: string, source: IommufdSource = {}): IommufdContext {
    if (typeof name !== 'string' || name.trim() === '')
      throw new TypeError('an iommufd context needs a name (the id= of --iommu)');
    const fd =
      source.fd !== undefined
        ? OwnedFd.inherited(source.fd, 'iommufd fd', DEV_IOMMU)
        : openIommufd(source.path ?? DEV_IOMMU);
    try {
      return new IommufdContext(name, fd, iommufd.ioasAlloc(fd));
    } catch (e) {
      fd.close();
      if (e instanceof SysError && e.code === 'ENOTTY')
        throw withHint(e, `${fd.path} is not an iommufd: pass an fd opened on ${DEV_IOMMU}`);
      throw e;
    }
  }

  /** The iommufd itself (for VFIO_DEVICE_BIND_IOMMUFD by code that attaches on its own). */
  get iommufd(): Target {
    return this.#fd;
  }
  /** The shared IOAS; undefined between the last device leaving and the next attach or map. */
  get ioasId(): number | undefined {
    return this.#ioas;
  }
  get deviceCount(): number {
    return this.#devices.size;
  }
  get active(): boolean {
    return this.#devices.size > 0;
  }
  override toString(): string {
    return `iommufd context '${this.name}'`;
  }

  allowedRanges(): readonly IovaRange[] {
    return this.#ranges;
  }
  /** The kernel reports alignment 1 before any device is attached; a page is the least anything maps. */
  iovaAlignment(): bigint {
    return this.#alignment > PAGE_SIZE ? this.#alignment : PAGE_SIZE;
  }
  mappings(): readonly DmaMapping[] {
    return this.#log.all();
  }
  subscribe(listener: BackendListener): () => void {
    return this.#listeners.add(listener);
  }

  /** Register an object built on this context; it is told before a device leaves and closed before the IOAS goes. */
  track(dependent: ContextDependent): () => void {
    this.#dependents.add(dependent);
    return () => {
      this.#dependents.delete(dependent);
    };
  }

  /** The devId of an attached VFIO device, and the handle nested translation uses to move it between page tables. */
  nestable(device: Target): NestableDevice {
    const a = this.#devices.get(device.fd);
    if (!a || a.device !== device)
      throw new NotFoundError(`${device.path} is not attached to ${this}`, 'device', device.path);
    return {
      devId: a.devId,
      label: device.path,
      attach: (ptId) => {
        vfio.deviceAttachIommufdPt(device, ptId);
        a.ptId = ptId;
      },
      home: () => {
        a.ptId = vfio.deviceAttachIommufdPt(device, this.#ensureIoas());
      },
      block: () => {
        if (a.ptId !== undefined) vfio.deviceDetachIommufdPt(device);
        a.ptId = undefined;
      },
    };
  }

  #ensureIoas(): number {
    if (this.#ioas === undefined) {
      this.#ioas = iommufd.ioasAlloc(this.#fd);
      this.#refreshRanges();
    }
    return this.#ioas;
  }

  #refreshRanges(): void {
    if (this.#ioas === undefined) {
      this.#ranges = [];
      this.#alignment = PAGE_SIZE;
      return;
    }
    const { ranges, alignment } = iommufd.ioasIovaRanges(this.#fd, this.#ioas);
    this.#ranges = ranges;
    this.#alignment = alignment;
  }

  #explainMap(
    e: unknown,
    span: { iova: bigint; length: bigint } | undefined,
    length: bigint,
  ): unknown {
    const err = explainMapFailure(e, 'iommufd', length);
    if (
      err === e &&
      span &&
      e instanceof SysError &&
      e.code !== 'EEXIST' &&
      !spanInRanges(span, this.#ranges)
    ) {
      return withHint(
        e,
        `IOVA ${formatSpan(span)} is not inside the ranges ${this} allows (${formatRanges(this.#ranges)})`,
      );
    }
    return err;
  }

  #map(length: bigint, mem: DmaSource, iova?: bigint): bigint {
    const ioas = this.#ensureIoas();
    try {
      // A memfd or a VFIO dma-buf (a peer's BAR) maps by file; other memory by host address.
      return mem.kind === 'hva'
        ? iommufd.ioasMap(this.#fd, ioas, mem.hva, length, iova)
        : iommufd.ioasMapFile(this.#fd, ioas, mem.fd.fd, mem.offset, length, iova);
    } catch (e) {
      throw this.#explainMap(e, iova === undefined ? undefined : { iova, length }, length);
    }
  }

  protected rawMapFixed(iova: bigint, length: bigint, mem: DmaSource): void {
    checkSpan(`map on ${this}`, { iova, length });
    this.#map(length, mem, iova);
    this.#log.add({ iova, length, memory: mem });
  }

  protected async rawMapFixedOffloaded(
    iova: bigint,
    length: bigint,
    mem: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void> {
    checkSpan(`map on ${this}`, { iova, length });
    const ioas = this.#ensureIoas();
    const base = { fd: this.#fd.fd, path: this.#fd.path, ioas, length, iova };
    const r = await run(
      mem.kind === 'memfd'
        ? { op: 'IOMMU_IOAS_MAP_FILE', ...base, memfd: mem.fd.fd, offset: mem.offset }
        : { op: 'IOMMU_IOAS_MAP', ...base, va: mem.hva },
      signal,
    );
    if (!r.ok)
      throw this.#explainMap(
        r.errno
          ? new SysError(
              mem.kind === 'memfd' ? 'IOMMU_IOAS_MAP_FILE' : 'IOMMU_IOAS_MAP',
              this.#fd.path,
              r.errno,
            )
          : new Error(r.message),
        { iova, length },
        length,
      );
    this.#log.add({ iova, length, memory: mem });
  }

  protected rawMapAnywhere(length: bigint, mem: DmaSource): bigint {
    checkSpan(`map on ${this}`, { iova: 0n, length });
    const iova = this.#map(length, mem);
    this.#log.add({ iova, length, memory: mem });
    return iova;
  }

  protected rawUnmap(iova: bigint, length: bigint): bigint {
    const span = { iova, length };
    checkSpan(`unmap on ${this}`, span);
    if (this.#ioas === undefined) return 0n;
    let bytes: bigint;
    try {
      bytes = iommufd.ioasUnmap(this.#fd, this.#ioas, iova, length);
    } catch (e) {
      // iommufd says ENOENT both for "nothing there" and for "that would cut a mapping in two".
      if (e instanceof SysError && e.code === 'ENOENT') {
        const cut = this.#log.bisected(span);
        if (cut.length) throw explainBisect(e, span, cut);
        if (this.#log.overlapping(span).length === 0) return 0n;
      }
      throw e;
    }
    this.#log.removeWithin(span);
    return bytes;
  }

  protected rawUnmapAll(): bigint {
    if (this.#ioas === undefined) return 0n;
    const bytes = iommufd.ioasUnmap(this.#fd, this.#ioas, 0n, U64_MAX); // iova 0, length 2^64-1: everything
    this.#log.clear();
    return bytes;
  }

  /**
   * Bind and attach a VFIO cdev to the shared IOAS. Existing mappings are checked against the
   * ranges the attach leaves; a listener that fails (guest memory could not be mapped) undoes
   * the attach. A cdev fd binds once: after a failed attach or a detach, close it and reopen.
   */
  attachDevice(device: Target): IommufdAttachment {
    if (this.#devices.has(device.fd))
      throw new ConflictError(
        `${device.path} is already attached to ${this}`,
        'device',
        device.path,
      );
    const ioasId = this.#ensureIoas();
    let devId: number;
    try {
      devId = vfio.deviceBindIommufd(device, this.#fd.fd);
    } catch (e) {
      throw explainBindFailure(e, device.path);
    }
    let ptId: number;
    try {
      ptId = vfio.deviceAttachIommufdPt(device, ioasId);
    } catch (e) {
      throw explainUnsafeInterrupts(
        explainAttachConflict(e, bdfOfCdev(device.path), this.#log.all(), String(this)),
        'iommufd',
      );
    }
    this.#devices.set(device.fd, { device, devId, ptId });
    this.#refreshRanges();
    const invalid = this.#log.outside(this.#ranges);
    this.#listeners.emitDeviceJoined(this, device.path, () => this.detachDevice(device));
    return { devId, ioasId, ptId, ranges: this.#ranges, invalid };
  }

  /** Detach a device; when it was the last one, destroy the IOAS (and with it every mapping). */
  detachDevice(device: Target): void {
    const a = this.#devices.get(device.fd);
    if (!a)
      throw new NotFoundError(`${device.path} is not attached to ${this}`, 'device', device.path);
    // A vDevice that cannot be torn down must not keep the device attached: detach anyway, then report it.
    let released: unknown;
    for (const d of this.#dependents) {
      try {
        d.releaseDevice(a.devId);
      } catch (e) {
        released ??= e;
      }
    }
    if (a.ptId !== undefined) vfio.deviceDetachIommufdPt(device);
    this.#devices.delete(device.fd);
    const emptied = this.#devices.size === 0;
    if (emptied) {
      this.#closeDependents();
      iommufd.destroy(this.#fd, this.#ioas!);
      this.#ioas = undefined;
      this.#log.clear();
    }
    this.#refreshRanges();
    this.#listeners.emitDeviceLeft(this, emptied);
    if (released !== undefined) throw released;
  }

  attachPciDevice(bdf: string): IommufdDevice {
    const cdev = openCdev(bdf);
    let a: IommufdAttachment;
    try {
      a = this.attachDevice(cdev);
    } catch (e) {
      cdev.close();
      throw e;
    }
    return {
      bdf,
      device: cdev,
      backend: this,
      invalid: a.invalid,
      devId: a.devId,
      ioasId: a.ioasId,
      ptId: a.ptId,
      detach: () => {
        try {
          if (!cdev.closed) this.detachDevice(cdev);
        } finally {
          cdev.close();
        }
      },
    };
  }

  #closeDependents(): void {
    const errors: unknown[] = [];
    for (const d of [...this.#dependents].reverse()) {
      try {
        d.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#dependents.clear();
    if (errors.length) throw errors[0];
  }

  /** Destroy the IOAS and close the iommufd; every device must have been detached. */
  close(): void {
    if (this.#devices.size)
      throw new ConflictError(
        `${this} still has ${this.#devices.size} device(s) attached: detach them before closing it`,
        'context',
        this.name,
      );
    this.#closeDependents();
    if (this.#ioas !== undefined && !this.#fd.closed) iommufd.destroy(this.#fd, this.#ioas);
    this.#ioas = undefined;
    this.#log.clear();
    this.#fd.close();
  }
}
