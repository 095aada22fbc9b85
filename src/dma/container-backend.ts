// The legacy VFIO group/container path as a DmaBackend: one container shared by every group
// (as QEMU does), VFIO_GROUP_SET_CONTAINER per group, VFIO_SET_IOMMU (Type1v2) once with the
// first group, allowed ranges from VFIO_IOMMU_GET_INFO's IOVA-range capability, MAP_DMA and
// UNMAP_DMA by host virtual address. Device fds come from VFIO_GROUP_GET_DEVICE_FD. When the
// last group leaves, the kernel releases the IOMMU with every mapping; the next group sets it
// up again. Type1 cannot choose an IOVA itself: mapAnywhere picks the lowest free one here.
import { SysError } from '../../native/errno.js';
import * as vfio from '../../native/vfio.js';
import { ConflictError, HostSetupError, withHint } from '../errors.js';
import { OwnedFd } from '../fd.js';
import { iommuGroupOf } from '../platform/pci-sysfs.js';
import { openContainer, openGroup } from '../vfio/open.js';
import {
  type AttachedDevice,
  type BackendListener,
  BackendListeners,
  type DmaBackend,
  type DmaMapping,
  type DmaSource,
  describeSource,
  type GuestMemorySource,
} from './backend.js';
import {
  explainAttachConflict,
  explainBisect,
  explainMapFailure,
  explainUnsafeInterrupts,
} from './diagnose.js';
import { CountedDmaCalls } from './dma-stats.js';
import {
  checkSpan,
  findFreeIova,
  formatRanges,
  formatSize,
  formatSpan,
  hex,
  type IovaRange,
  PAGE_SIZE,
  spanInRanges,
  U64_MAX,
} from './iova-ranges.js';
import type { MapRunner } from './map-offload.js';
import { MappingLog } from './mapping-log.js';

const V = vfio.VFIO_C;
/** The largest alignment mapAnywhere asks for, as the kernel's own allocator: a 2 MiB huge page. */
const MAX_AUTO_ALIGNMENT = 2n << 20n;

interface GroupState {
  readonly group: OwnedFd;
  readonly groupId: number;
  readonly devices: Map<string, OwnedFd>;
}

export interface ContainerDevice extends AttachedDevice {
  readonly groupId: number;
  readonly ranges: readonly IovaRange[];
}

const lowestBit = (n: bigint): bigint => n & -n;
const pow2Ceil = (n: bigint): bigint => {
  let p = 1n;
  while (p < n) p <<= 1n;
  return p;
};

/** Type1 maps by host address: a dma-buf (a BAR exported for iommufd) has none. */
function hostAddress(mem: DmaSource, backend: ContainerBackend): bigint {
  if (mem.kind !== 'dmabuf') return mem.hva;
  throw new TypeError(
    `${backend} maps by host address and ${describeSource(mem)} is a dma-buf: map the BAR's mmap instead (hvaSource)`,
  );
}

/** Take over a VFIO group fd passed in; its group id comes from the fd itself (no sysfs). */
function adoptGroup(bdf: string, fd: number): { group: OwnedFd; groupId: number } {
  const group = OwnedFd.inherited(
    fd,
    `${bdf}: group fd`,
    '/dev/vfio/<group>',
    /^\/dev\/vfio\/\d+$/,
  );
  const m = /^\/dev\/vfio\/(\d+) /.exec(group.path)!;
  if (!(vfio.groupGetStatus(group) & V.VFIO_GROUP_FLAGS_VIABLE)) {
    group.close();
    throw new HostSetupError(
      `IOMMU group ${m[1]} (fd ${fd}) of ${bdf} is not viable: bind every device in /sys/kernel/iommu_groups/${m[1]}/devices to vfio-pci`,
      bdf,
    );
  }
  return { group, groupId: Number(m[1]) };
}

export class ContainerBackend extends CountedDmaCalls implements DmaBackend {
  /** Map/unmap calls, latency and kernel failures by errno, read by the metrics. */
  readonly kind = 'container' as const;
  readonly #container: OwnedFd;
  readonly #groups = new Map<number, GroupState>();
  #iommuSet = false;
  #ranges: readonly IovaRange[] = [];
  #alignment = PAGE_SIZE;
  readonly #log = new MappingLog();
  readonly #listeners = new BackendListeners();

  private constructor(
    readonly name: string,
    container: OwnedFd,
  ) {
    super();
    this.#container = container;
  }

  /** Open /dev/vfio/vfio and check it speaks the VFIO API and offers Type1v2. */
  static open(name = 'vfio-container'): ContainerBackend {
    const container = openContainer();
    try {
      const version = vfio.getApiVersion(container);
      if (version !== V.VFIO_API_VERSION)
        throw new HostSetupError(
          `${container.path} speaks VFIO API ${version}, this runtime speaks ${V.VFIO_API_VERSION}: use iommufd instead (--iommu)`,
        );
      if (vfio.checkExtension(container, V.VFIO_TYPE1v2_IOMMU) !== 1) {
        throw new HostSetupError(
          `${container.path} does not offer the VFIO Type1v2 IOMMU: the kernel lacks CONFIG_VFIO_IOMMU_TYPE1, or the IOMMU is off (intel_iommu=on / amd_iommu=on); use iommufd instead (--iommu)`,
        );
      }
    } catch (e) {
      container.close();
      throw e;
    }
    return new ContainerBackend(name, container);
  }

  get container(): OwnedFd {
    return this.#container;
  }
  get active(): boolean {
    return this.#iommuSet;
  }
  get groupIds(): number[] {
    return [...this.#groups.keys()];
  }
  override toString(): string {
    return `VFIO container '${this.name}'`;
  }

  allowedRanges(): readonly IovaRange[] {
    return this.#ranges;
  }
  iovaAlignment(): bigint {
    return this.#alignment;
  }
  mappings(): readonly DmaMapping[] {
    return this.#log.all();
  }
  subscribe(listener: BackendListener): () => void {
    return this.#listeners.add(listener);
  }

  #refreshRanges(): void {
    if (!this.#iommuSet) {
      this.#ranges = [];
      this.#alignment = PAGE_SIZE;
      return;
    }
    const info = vfio.iommuGetInfo(this.#container);
    // Kernels before 5.4 have no IOVA-range capability: then only MAP_DMA itself can say no.
    this.#ranges = info.iovaRanges.length
      ? info.iovaRanges.map((r) => ({ start: r.start, last: r.end }))
      : [{ start: 0n, last: U64_MAX }];
    this.#alignment = info.iovaPgsizes ? lowestBit(info.iovaPgsizes) : PAGE_SIZE;
  }

  #requireIommu(what: string): void {
    if (!this.#iommuSet)
      throw new Error(
        `cannot ${what} on ${this}: no group is attached yet (Type1 sets up the IOMMU with the first group); attach a device first`,
      );
  }

  protected rawMapFixed(iova: bigint, length: bigint, mem: DmaSource): void {
    const span = { iova, length };
    checkSpan(`map on ${this}`, span);
    this.#requireIommu(`map ${formatSpan(span)}`);
    const hva = hostAddress(mem, this);
    try {
      vfio.mapDma(this.#container, hva, iova, length);
    } catch (e) {
      throw this.#explainMap(e, span, length);
    }
    this.#log.add({ iova, length, memory: mem });
  }

  protected async rawMapFixedOffloaded(
    iova: bigint,
    length: bigint,
    mem: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void> {
    const span = { iova, length };
    checkSpan(`map on ${this}`, span);
    this.#requireIommu(`map ${formatSpan(span)}`);
    const r = await run(
      {
        op: 'VFIO_IOMMU_MAP_DMA',
        fd: this.#container.fd,
        path: this.#container.path,
        va: mem.hva,
        length,
        iova,
      },
      signal,
    );
    if (!r.ok)
      throw this.#explainMap(
        r.errno
          ? new SysError('VFIO_IOMMU_MAP_DMA', this.#container.path, r.errno)
          : new Error(r.message),
        span,
        length,
      );
    this.#log.add({ iova, length, memory: mem });
  }

  #explainMap(e: unknown, span: { iova: bigint; length: bigint }, length: bigint): unknown {
    const err = explainMapFailure(e, 'container', length);
    if (
      err === e &&
      e instanceof SysError &&
      e.code === 'EINVAL' &&
      !spanInRanges(span, this.#ranges)
    ) {
      return withHint(
        e,
        `IOVA ${formatSpan(span)} is not inside the ranges ${this} allows (${formatRanges(this.#ranges)})`,
      );
    }
    return err;
  }

  protected rawMapAnywhere(length: bigint, mem: DmaSource): bigint {
    checkSpan(`map on ${this}`, { iova: 0n, length });
    this.#requireIommu(`map ${formatSize(length)}`);
    const hva = hostAddress(mem, this);
    // Alignment as the kernel's iommufd allocator picks it: the length rounded up to a power
    // of two, no more than the host address's own alignment (keeps huge pages whole) or 2 MiB.
    let alignment = pow2Ceil(length);
    if (lowestBit(hva) < alignment) alignment = lowestBit(hva);
    if (alignment > MAX_AUTO_ALIGNMENT) alignment = MAX_AUTO_ALIGNMENT;
    if (alignment < this.#alignment) alignment = this.#alignment;
    const iova = findFreeIova(this.#ranges, this.#log.spans(), length, alignment);
    if (iova === undefined)
      throw new Error(
        `no free IOVA space for ${formatSize(length)} (aligned to ${hex(alignment)}) in ${this}: allowed ${formatRanges(this.#ranges)}, ${this.#log.size} mapping(s) in use`,
      );
    this.rawMapFixed(iova, length, mem);
    return iova;
  }

  protected rawUnmap(iova: bigint, length: bigint): bigint {
    const span = { iova, length };
    checkSpan(`unmap on ${this}`, span);
    if (!this.#iommuSet) return 0n;
    let bytes: bigint;
    try {
      bytes = vfio.unmapDma(this.#container, iova, length);
    } catch (e) {
      throw e instanceof SysError && e.code === 'EINVAL'
        ? explainBisect(e, span, this.#log.bisected(span))
        : e;
    }
    this.#log.removeWithin(span);
    return bytes;
  }

  protected rawUnmapAll(): bigint {
    if (!this.#iommuSet) return 0n;
    let bytes: bigint;
    try {
      bytes = vfio.unmapDma(this.#container, 0n, 0n, V.VFIO_DMA_UNMAP_FLAG_ALL);
    } catch (e) {
      throw e instanceof SysError && e.code === 'EINVAL'
        ? withHint(e, 'the kernel lacks VFIO_UNMAP_ALL (Linux 5.12 and later have it)')
        : e;
    }
    this.#log.clear();
    return bytes;
  }

  /**
   * Put the function's group into the container (the first group also sets the Type1v2 IOMMU),
   * and get its device fd. Existing mappings are checked against the ranges that leaves; a
   * listener that fails (guest memory could not be mapped) undoes the attach.
   */
  /** Attach `bdf` through its group: opened from /dev/vfio, or the pre-opened `groupFd` a privileged helper passed in. */
  attachPciDevice(bdf: string, opts: { groupFd?: number } = {}): ContainerDevice {
    const pre = opts.groupFd !== undefined ? adoptGroup(bdf, opts.groupFd) : undefined;
    const groupId = pre?.groupId ?? iommuGroupOf(bdf);
    const known = groupId === undefined ? undefined : this.#groups.get(groupId);
    if (known?.devices.has(bdf)) {
      pre?.group.close();
      throw new ConflictError(`${bdf} is already attached to ${this}`, 'device', bdf);
    }
    if (known && pre) pre.group.close(); // the group is open already; the passed fd is not needed
    let state = known;
    if (!state) {
      const { group, groupId: id } = pre ?? openGroup(bdf);
      try {
        vfio.groupSetContainer(group, this.#container.fd);
      } catch (e) {
        group.close();
        throw explainUnsafeInterrupts(
          explainAttachConflict(e, bdf, this.#log.all(), String(this)),
          'container',
        );
      }
      if (!this.#iommuSet) {
        try {
          vfio.setIommu(this.#container, V.VFIO_TYPE1v2_IOMMU);
        } catch (e) {
          try {
            vfio.groupUnsetContainer(group);
          } finally {
            group.close();
          }
          throw explainUnsafeInterrupts(e, 'container');
        }
        this.#iommuSet = true;
      }
      state = { group, groupId: id, devices: new Map() };
      this.#groups.set(id, state);
    }
    let device: OwnedFd;
    try {
      device = new OwnedFd(vfio.groupGetDeviceFd(state.group, bdf), `${state.group.path} (${bdf})`);
    } catch (e) {
      if (state.devices.size === 0) this.#releaseGroup(state);
      throw e;
    }
    state.devices.set(bdf, device);
    this.#refreshRanges();
    const invalid = this.#log.outside(this.#ranges);
    this.#listeners.emitDeviceJoined(this, bdf, () => this.detachDevice(bdf));
    const detach = (): void => {
      if (this.#groupOf(bdf)) this.detachDevice(bdf);
    };
    return {
      bdf,
      device,
      backend: this,
      invalid,
      groupId: state.groupId,
      ranges: this.#ranges,
      detach,
    };
  }

  /**
   * Close the device fd this backend handed out; when its group has no device left, take the
   * group out of the container. Copies of the fd (sent to a worker) must be closed first.
   */
  detachDevice(bdf: string): void {
    const state = this.#groupOf(bdf);
    if (!state) throw new Error(`${bdf} is not attached to ${this}`);
    state.devices.get(bdf)!.close();
    state.devices.delete(bdf);
    if (state.devices.size) return;
    this.#releaseGroup(state);
    const emptied = this.#groups.size === 0;
    if (emptied) {
      // The kernel released the Type1 IOMMU with the last group: every mapping is gone.
      this.#iommuSet = false;
      this.#log.clear();
    }
    this.#refreshRanges();
    this.#listeners.emitDeviceLeft(this, emptied);
  }

  #groupOf(bdf: string): GroupState | undefined {
    return [...this.#groups.values()].find((g) => g.devices.has(bdf));
  }

  #releaseGroup(state: GroupState): void {
    try {
      vfio.groupUnsetContainer(state.group);
    } catch (e) {
      throw e instanceof SysError && e.code === 'EBUSY'
        ? withHint(
            e,
            `a device fd of IOMMU group ${state.groupId} is still open (a copy sent to a worker?): close every copy first`,
          )
        : e;
    }
    state.group.close();
    this.#groups.delete(state.groupId);
  }

  /** Close the container; every device must have been detached. */
  close(): void {
    if (this.#groups.size)
      throw new Error(
        `${this} still has IOMMU group(s) ${this.groupIds.join(', ')} attached: detach their devices before closing it`,
      );
    this.#container.close();
  }
}
