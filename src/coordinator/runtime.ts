// The runtime a VMM hosts (and the CLI drives): iommufd contexts by --iommu id, one legacy
// Type1v2 container for devices without iommu=, the guest-memory table over all of them, and
// one device worker per assigned device. Devices may come as pre-opened cdev fds, contexts as
// pre-opened iommufd fds, so an unprivileged runtime can use what a privileged helper opened.
import type { Registry } from 'prom-client';
import type { Target } from '../../native/libc.js';
import type { DeviceDescription } from '../device/assigned-device.js';
import { type DmaBackend, memfdRegionSource } from '../dma/backend.js';
import { ContainerBackend } from '../dma/container-backend.js';
import { GuestMemory, type GuestRegion, type GuestRegionSpec } from '../dma/guest-memory.js';
import { IommufdContext } from '../dma/iommufd-context.js';
import { type PeerAreaResult, PeerBars } from '../dma/peer-bars.js';
import { attributeKernelError, ConflictError, InvalidSpecError, NotFoundError } from '../errors.js';
import { OwnedFd } from '../fd.js';
import { errorFields, type RuntimeLogger, silentLogger } from '../log.js';
import { MemfdRegion } from '../memory/memfd-region.js';
import { registerPeerBarMetrics } from '../metrics/bars.js';
import { registerRuntimeMetrics } from '../metrics/exporter.js';
import { registerNestingMetrics } from '../metrics/nesting.js';
import { registerProcessMetrics } from '../metrics/process.js';
import type { IommuKind } from '../nesting/iommu-types.js';
import {
  type AnyVIommu,
  type DeviceIommuInfo,
  deviceIommuInfo,
  type VDevice,
  VIommu,
  type VIommuDescription,
  type VIommuOptions,
} from '../nesting/viommu.js';
import { type AddCheckOptions, checkAdd, contextTaken } from './add-check.js';
import { type BarAreaMapping, BarMaps } from './bar-maps.js';
import { type BarSummary, barSummaries } from './bar-summary.js';
import { DeviceHandle, type DeviceHandleOptions } from './device-handle.js';
import {
  type DeviceSpec,
  type IommuSpec,
  normalizeRuntimeSpec,
  type RuntimeSpec,
  type RuntimeSpecInput,
} from './spec.js';
import { Supervisor } from './supervisor.js';

export type {
  DeviceSpec,
  IommuSpec,
  MemorySpec,
  RuntimeSpec,
  RuntimeSpecInput,
} from './spec.js';

/** How a runtime reports: `logger` gets one structured line per lifecycle event (src/log.ts). */
export interface RuntimeOptions {
  logger?: RuntimeLogger;
}

/** What a VMM gives a device beyond its spec: KVM mode (router, INTx GSI) or relay mode (onInterrupt), ring geometry, serve options. */
export type DeviceAttachOptions = Omit<DeviceHandleOptions, 'name' | 'device'>;

export interface RuntimeDevice {
  readonly port: string;
  readonly bdf: string | undefined;
  readonly backend: DmaBackend;
  readonly handle: DeviceHandle;
  readonly detach: () => void;
  /** The VFIO device fd (cdev or group-opened). */
  readonly device: Target;
  /** The physical IOMMU behind the device (IOMMU_GET_HW_INFO), for iommufd devices. */
  readonly iommu: DeviceIommuInfo | undefined;
  /** Its worker's supervisor, if the device was added with `supervise` (the VMM's default). */
  readonly supervisor: Supervisor | undefined;
}

/** One map call of guest memory into a backend: a region, or the piece of it between reserved windows. */
export interface MappedPiece {
  region: string;
  iova: string;
  size: string;
}

export interface RuntimeDescription {
  /** `mapped`: what the context's IOAS really maps, piece by piece (a region split around a hole shows its pieces). */
  contexts: {
    id: string;
    ioasId: number | undefined;
    devices: number;
    ranges: string[];
    mapped: MappedPiece[];
  }[];
  container: { devices: string[]; mapped: MappedPiece[] } | undefined;
  devices: {
    port: string;
    bdf: string | undefined;
    backend: string;
    ioasId?: number;
    iommu?: { type: string; nesting: boolean | 'unknown'; dirtyTracking: boolean };
    description: DeviceDescription;
    /** Per BAR: mappable and trapped ranges, accesses that reached the ring, peer mappings. */
    bars: BarSummary[];
  }[];
  memory: { name: string; gpa: string; size: string }[];
  viommus: VIommuDescription[];
  /** Device BARs mapped for peer-to-peer DMA: the IOVA and, per area and backend, how it went. */
  peerBars: { port: string; bar: number; iova: string; results: readonly PeerAreaResult[] }[];
}

const hex = (n: bigint): string => `0x${n.toString(16)}`;

export class Runtime {
  readonly contexts = new Map<string, IommufdContext>();
  container: ContainerBackend | undefined;
  readonly memory = new GuestMemory();
  readonly devices = new Map<string, RuntimeDevice>();
  /** Virtual IOMMUs by name; each belongs to one context and closes with it. */
  readonly viommus = new Map<string, AnyVIommu>();
  /** Guest RAM the runtime allocated itself (--memory), in spec order. */
  readonly ram: MemfdRegion[] = [];
  /** Where lifecycle events go (Runtime.start's `logger`; silent by default). */
  log: RuntimeLogger = silentLogger;
  /** Device BARs mapped into the backends for peer-to-peer DMA (mapBarForPeers). */
  readonly peers = new PeerBars();
  /** BAR areas mapped for a VMM's fast path (mapBarAreas). */
  readonly #barMaps = new BarMaps();
  #closed = false;

  private constructor() {}

  /**
   * Check the spec (InvalidSpecError naming the field), then open contexts, map guest memory,
   * attach devices and start their workers; undo it all on failure.
   */
  static async start(
    input: RuntimeSpec | RuntimeSpecInput,
    opts: RuntimeOptions = {},
  ): Promise<Runtime> {
    const rt = new Runtime();
    if (opts.logger) rt.log = opts.logger;
    let spec: RuntimeSpec;
    try {
      spec = normalizeRuntimeSpec(input);
    } catch (e) {
      rt.log.error(errorFields(e), 'runtime spec refused');
      throw e;
    }
    try {
      for (const i of spec.iommu) {
        let ctx: IommufdContext;
        try {
          ctx = IommufdContext.open(i.id, i.iommufdFd !== undefined ? { fd: i.iommufdFd } : {});
        } catch (e) {
          throw attributeKernelError(e, {});
        }
        rt.contexts.set(i.id, ctx);
        rt.memory.addBackend(ctx);
        rt.log.info(
          { event: 'context_opened', context: i.id, ioas: ctx.ioasId },
          'iommufd context opened',
        );
      }
      spec.memory.forEach((m, i) => {
        const region = new MemfdRegion(`guest-ram${i}`, Number(m.size));
        rt.ram.push(region);
        rt.addMemory({
          name: `ram${i}`,
          gpa: m.gpa,
          size: m.size,
          memory: memfdRegionSource(region),
        });
      });
      for (const v of spec.vfio) await rt.addDevice(v);
      return rt;
    } catch (e) {
      rt.log.error(errorFields(e), 'runtime start failed; undoing');
      await rt.shutdown();
      throw e;
    }
  }

  /**
   * What addDevice(spec) would refuse before it touches a node or an fd, answered without side
   * effects (a dry run: the HTTP API asks before it takes a request's fds): the spec
   * (InvalidSpecError), a port or device taken (ConflictError), an unknown context
   * (NotFoundError) or, with `newContext` (the caller brings the context), one that exists.
   * Returns the spec normalized, its bdf read off its cdev fd when not given.
   */
  checkAdd(spec: unknown, opts: AddCheckOptions = {}): DeviceSpec {
    return checkAdd(this, spec, opts);
  }

  /**
   * Attach one device (cdev on its context, or the legacy container) and start its worker. The
   * spec is checked first (checkAdd: InvalidSpecError, ConflictError for a taken port or
   * device, NotFoundError for an unknown context); a failed kernel call is a KernelError naming
   * the device.
   */
  async addDevice(spec: DeviceSpec, opts: DeviceAttachOptions = {}): Promise<RuntimeDevice> {
    const v = this.checkAdd(spec);
    try {
      return await this.#attach(v, opts);
    } catch (e) {
      const err = attributeKernelError(e, { bdf: v.bdf, port: v.port });
      this.log.error({ ...errorFields(err), device: v.port }, 'device not attached');
      throw err;
    }
  }

  async #attach(v: DeviceSpec, opts: DeviceAttachOptions): Promise<RuntimeDevice> {
    let backend: DmaBackend, device: OwnedFd | { fd: number; path: string }, detach: () => void;
    let devId: number | undefined; // iommufd's id for the device
    if (v.iommu) {
      const ctx = this.contexts.get(v.iommu)!; // checkAdd found it, in this same turn
      backend = ctx;
      if (v.fd !== undefined) {
        const cdev = OwnedFd.inherited(
          v.fd,
          `--vfio port=${v.port}: fd`,
          '/dev/vfio/devices/vfioN',
          /^\/dev\/vfio\/devices\/vfio\d+$/,
        );
        try {
          devId = ctx.attachDevice(cdev).devId;
        } catch (e) {
          cdev.close();
          throw e;
        }
        device = cdev;
        detach = () => {
          try {
            if (!cdev.closed) ctx.detachDevice(cdev);
          } finally {
            cdev.close();
          }
        };
      } else {
        const a = ctx.attachPciDevice(v.bdf!);
        device = a.device;
        detach = a.detach;
        devId = a.devId;
      }
    } else {
      if (!this.container) {
        this.container = ContainerBackend.open('vfio-container');
        this.memory.addBackend(this.container);
      }
      const a = this.container.attachPciDevice(
        v.bdf!,
        v.groupFd !== undefined ? { groupFd: v.groupFd } : {},
      );
      backend = this.container;
      device = a.device;
      detach = a.detach;
    }
    let handle: DeviceHandle, iommu: DeviceIommuInfo | undefined;
    try {
      if (backend instanceof IommufdContext && devId !== undefined)
        iommu = deviceIommuInfo(backend.iommufd, devId);
      handle = await DeviceHandle.start({ ...opts, name: v.port, device });
    } catch (e) {
      detach();
      throw e;
    }
    const supervisor = superviseDevice(handle, opts);
    const d: RuntimeDevice = {
      port: v.port,
      bdf: v.bdf,
      backend,
      handle,
      detach,
      device,
      iommu,
      supervisor,
    };
    this.devices.set(v.port, d);
    this.#logDevice(d, opts);
    return d;
  }

  /** Log the device's attach and its worker's start; its workers' exits as they come. */
  #logDevice(d: RuntimeDevice, opts: DeviceAttachOptions): void {
    const at = { device: d.port, bdf: d.bdf, backend: `${d.backend.kind}:${d.backend.name}` };
    this.log.info({ event: 'device_attached', ...at }, 'device attached');
    this.log.info(
      { event: 'worker_started', device: d.port, incarnation: d.handle.incarnation },
      'device worker started',
    );
    d.handle.onExit((e) =>
      this.log[e.planned ? 'info' : 'error']({
        event: 'worker_exited',
        device: d.port,
        code: e.code,
        planned: e.planned,
        incarnation: e.incarnation,
        ...(e.error ? { err: { name: e.error.name, message: e.error.message } } : {}),
      }),
    );
    if (opts.router && !opts.router.logger) opts.router.logger = this.log;
  }

  /**
   * Stop the device's worker (requests still in its ring complete with RingClosedError, its
   * interrupts go from VFIO and KVM), detach it (its context's IOAS goes with its last device)
   * and close its fds.
   */
  async removeDevice(port: string): Promise<void> {
    const d = this.devices.get(port);
    if (!d) throw this.#noDevice(port, '');
    this.peers.unmapDevice(port);
    this.#barMaps.unmap(port);
    this.devices.delete(port);
    try {
      await d.supervisor?.stop();
      await d.handle.shutdown();
    } finally {
      d.detach();
      this.log.info({ event: 'device_detached', device: port, bdf: d.bdf }, 'device detached');
    }
  }

  /**
   * Open one more iommufd context while the runtime runs (the HTTP API's add-device with a
   * /dev/iommu fd for a context that does not exist yet); guest memory is mapped into it once a
   * device attaches. A taken id is a ConflictError.
   */
  addContext(spec: IommuSpec): IommufdContext {
    if (this.contexts.has(spec.id)) throw contextTaken(spec.id);
    let ctx: IommufdContext;
    try {
      ctx = IommufdContext.open(
        spec.id,
        spec.iommufdFd !== undefined ? { fd: spec.iommufdFd } : {},
      );
    } catch (e) {
      throw attributeKernelError(e, {});
    }
    try {
      this.memory.addBackend(ctx);
    } catch (e) {
      ctx.close();
      throw attributeKernelError(e, {});
    }
    this.contexts.set(spec.id, ctx);
    return ctx;
  }

  /** Close a context that has no devices left (its IOAS and iommufd go). */
  removeContext(id: string): void {
    const ctx = this.contexts.get(id);
    if (!ctx) throw new NotFoundError(`no iommufd context '${id}'`, 'context', id);
    if (ctx.deviceCount)
      throw new ConflictError(
        `iommufd context '${id}' still has ${ctx.deviceCount} device(s): remove them first`,
        'context',
        id,
      );
    this.memory.removeBackend(ctx);
    this.contexts.delete(id);
    ctx.close();
  }

  device(port: string): DeviceHandle {
    const d = this.devices.get(port);
    if (!d) throw this.#noDevice(port, '');
    return d.handle;
  }

  #noDevice(port: string, prefix: string): NotFoundError {
    return new NotFoundError(
      `${prefix}no device on port '${port}' (ports: ${[...this.devices.keys()].join(', ') || 'none'})`,
      'port',
      port,
    );
  }

  #iommufdDevice(port: string, what: string): { d: RuntimeDevice; ctx: IommufdContext } {
    const d = this.devices.get(port);
    if (!d) throw this.#noDevice(port, `${what}: `);
    if (!(d.backend instanceof IommufdContext))
      throw new InvalidSpecError(
        `${what}: port '${port}' is on the legacy VFIO container; nested translation needs iommufd (give it iommu=<id>)`,
      );
    return { d, ctx: d.backend };
  }

  /**
   * Create the host side of a virtual IOMMU of `kind`, backed by the physical IOMMU of the
   * device on `port` and living on that device's iommufd context (closed with it).
   */
  createVIommu<K extends IommuKind>(
    name: string,
    kind: K,
    port: string,
    opts: VIommuOptions<K> = {},
  ): VIommu<K> {
    if (this.viommus.get(name)?.closed === false)
      throw new ConflictError(`vIOMMU '${name}' already exists`, 'viommu', name);
    const { d, ctx } = this.#iommufdDevice(port, `vIOMMU '${name}'`);
    let v: VIommu<K>;
    try {
      v = VIommu.create(name, ctx, ctx.nestable(d.device), kind, opts);
    } catch (e) {
      throw attributeKernelError(e, { bdf: d.bdf, port });
    }
    this.viommus.set(name, v as unknown as AnyVIommu);
    return v;
  }

  /** Put the device on `port` under vIOMMU `name` with the guest's virtual id for it; it starts in bypass. */
  addVDevice<K extends IommuKind>(
    viommu: VIommu<K>,
    port: string,
    virtId: bigint | number,
  ): VDevice<K> {
    const { d, ctx } = this.#iommufdDevice(port, `${viommu}`);
    if (viommu.context !== ctx)
      throw new Error(
        `${viommu} lives on ${viommu.context}, but port '${port}' is on ${ctx}: a vDevice needs a device on the vIOMMU's context`,
      );
    return viommu.addDevice(ctx.nestable(d.device), virtId);
  }

  /**
   * Map BAR `bar` of the device on `port` for peer-to-peer DMA at `iova` (+ each mappable
   * area's offset) in every backend with devices: another assigned device can then DMA into
   * it. A VMM calls it with the BAR's guest address when it places the BAR, again when the BAR
   * moves (the old mapping goes first), and unmapBarForPeers when memory decoding goes off.
   * iommufd maps a dma-buf of each area (Linux 6.19+, CONFIG_VFIO_PCI_DMABUF), the legacy
   * container an mmap of it by host address. Failures are in the results (errno, reason), not
   * thrown, as QEMU and Cloud Hypervisor only warn: peers then cannot reach that BAR.
   */
  mapBarForPeers(port: string, bar: number, iova: bigint): PeerAreaResult[] {
    const d = this.devices.get(port);
    if (!d) throw this.#noDevice(port, 'mapBarForPeers: ');
    const b = d.handle.description.bars.find((x) => x.index === bar);
    if (!b || b.io) return [];
    const backends: DmaBackend[] = [...this.contexts.values()].filter((c) => c.active);
    if (this.container?.active) backends.push(this.container);
    const target = {
      port,
      device: d.device,
      bar,
      regionOffset: BigInt(b.regionOffset),
      areas: b.mappable,
    };
    return this.peers.map(target, iova, backends);
  }

  /** Undo mapBarForPeers (memory decoding off, the BAR moving, the device leaving); returns the bytes unmapped. */
  unmapBarForPeers(port: string, bar: number): bigint {
    return this.peers.unmap(port, bar);
  }

  /**
   * mmap each mappable area of the device's BARs (`description.bars[i].mappable`, at most
   * `maxPerBar` per BAR) from its device fd, shared and read-write: the memory a VMM's KVM slot
   * puts at the BAR's guest address + the area's offset (the BAR fast path: no exit). The runtime
   * owns the mappings; unmapBarAreas, removeDevice and shutdown unmap them (a VMM deletes its
   * slots first). A refused mmap is a SysError (the areas mapped before it stay, for the unmap).
   */
  mapBarAreas(port: string, opts: { maxPerBar?: number } = {}): readonly BarAreaMapping[] {
    const d = this.devices.get(port);
    if (!d) throw this.#noDevice(port, 'mapBarAreas: ');
    if (this.#barMaps.has(port))
      throw new ConflictError(
        `mapBarAreas: port '${port}' has its BARs mapped already`,
        'port',
        port,
      );
    return this.#barMaps.map(port, d.device, d.handle.description.bars, opts.maxPerBar);
  }

  /** Undo mapBarAreas (after the VMM's slots over the areas are gone); nothing mapped is a no-op. */
  unmapBarAreas(port: string): void {
    this.#barMaps.unmap(port);
  }

  /**
   * Export the runtime's metrics on a prom-client registry (docs/metrics.md): devices, rings,
   * interrupts, workers, BARs, DMA backends, vIOMMUs; read at scrape time. `process`: also
   * prom-client's default process and Node.js metrics (a VMM with its own registry has them).
   */
  registerMetrics(registry: Registry, opts: { process?: boolean } = {}): void {
    registerRuntimeMetrics(registry, {
      devices: () => this.devices.values(),
      backends: () => [...this.contexts.values(), ...(this.container ? [this.container] : [])],
    });
    registerNestingMetrics(registry, () => this.viommus.values());
    registerPeerBarMetrics(registry, () => this.describe().devices, this.peers.stats);
    if (opts.process) registerProcessMetrics(registry);
  }

  /** Guest memory the hosting VMM owns (a memfd or host address), mapped into every backend. */
  addMemory(spec: GuestRegionSpec): GuestRegion {
    try {
      const r = this.memory.addRegion(spec);
      this.log.info(
        { event: 'memory_mapped', region: r.name, gpa: hex(r.iova), size: hex(r.length) },
        'guest memory mapped for DMA',
      );
      return r;
    } catch (e) {
      const err = attributeKernelError(e, {});
      this.log.error({ ...errorFields(err), region: spec.name }, 'guest memory not mapped');
      throw err;
    }
  }
  removeMemory(region: GuestRegion): void {
    try {
      this.memory.removeRegion(region);
      this.log.info(
        { event: 'memory_unmapped', region: region.name, gpa: hex(region.iova) },
        'guest memory unmapped',
      );
    } catch (e) {
      const err = attributeKernelError(e, {});
      this.log.error({ ...errorFields(err), region: region.name }, 'guest memory not unmapped');
      throw err;
    }
  }

  /** What guest memory `backend` really maps: one piece per map call, in IOVA order. */
  #mapped(backend: DmaBackend): MappedPiece[] {
    return this.memory
      .mappingsOf(backend)
      .map((m) => ({ region: m.region.name, iova: hex(m.iova), size: hex(m.length) }));
  }

  describe(): RuntimeDescription {
    return {
      contexts: [...this.contexts.values()].map((c) => ({
        id: c.name,
        ioasId: c.ioasId,
        devices: c.deviceCount,
        ranges: c.allowedRanges().map((r) => `${hex(r.start)}-${hex(r.last)}`),
        mapped: this.#mapped(c),
      })),
      container: this.container
        ? {
            devices: [...this.devices.values()]
              .filter((d) => d.backend === this.container)
              .map((d) => d.bdf ?? d.port),
            mapped: this.#mapped(this.container),
          }
        : undefined,
      devices: [...this.devices.values()].map((d) => ({
        port: d.port,
        bdf: d.bdf,
        backend: `${d.backend.kind}:${d.backend.name}`,
        ...(d.backend instanceof IommufdContext && d.backend.ioasId !== undefined
          ? { ioasId: d.backend.ioasId }
          : {}),
        ...(d.iommu
          ? {
              iommu: {
                type: d.iommu.info.iommu,
                nesting: d.iommu.info.nesting,
                dirtyTracking: d.iommu.dirtyTracking,
              },
            }
          : {}),
        description: d.handle.description,
        bars: barSummaries(
          d.handle.description,
          d.handle.counters(),
          this.peers.list().filter((p) => p.port === d.port),
        ),
      })),
      memory: this.memory
        .regions()
        .map((r) => ({ name: r.name, gpa: hex(r.iova), size: hex(r.length) })),
      viommus: [...this.viommus.values()].filter((v) => !v.closed).map((v) => v.describe()),
      peerBars: this.peers.list(),
    };
  }

  /** Stop every worker, detach devices, unmap and close everything. Safe to call twice. */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.peers.clear();
    this.#barMaps.clear();
    for (const d of [...this.devices.values()].reverse()) {
      await d.supervisor?.stop().catch(() => {});
      await d.handle.shutdown().catch(() => {});
      d.detach();
      this.log.info({ event: 'device_detached', device: d.port, bdf: d.bdf }, 'device detached');
    }
    this.devices.clear();
    this.viommus.clear(); // each closed with its context's last device, above
    for (const r of [...this.memory.regions()]) this.memory.removeRegion(r);
    for (const c of this.contexts.values()) {
      c.close();
      this.log.info({ event: 'context_closed', context: c.name }, 'iommufd context closed');
    }
    this.container?.close();
    for (const r of this.ram) r.close();
  }
}

/** A supervisor for the device if its options ask for one (`supervise`: true or its options). */
function superviseDevice(handle: DeviceHandle, opts: DeviceAttachOptions): Supervisor | undefined {
  if (!opts.supervise) return undefined;
  return Supervisor.watch(handle, opts.supervise === true ? {} : opts.supervise);
}
