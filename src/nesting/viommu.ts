// Nested translation over iommufd: a VIommu is the host side of a VMM's virtual IOMMU (the
// stage-2 nesting parent HWPT on the context's IOAS, the kernel vIOMMU object, and the bypass
// and abort stage-1 HWPTs), a VDevice is one assigned device under it (its vDevice object with
// the guest's virtual id, and the stage-1 HWPT the guest configured). Guest IOMMU commands map
// to install/uninstall/invalidate. Every kernel object is destroyed in reverse order of
// creation, also when creation fails half way, and before its device or IOAS goes.
import { SysError } from '../../native/errno.js';
import * as iommufd from '../../native/iommufd.js';
import type { Target } from '../../native/libc.js';
import type { ContextDependent, IommufdContext, NestableDevice } from '../dma/iommufd-context.js';
import { ConflictError, NestingSetupError, PartialInvalidationError, withHint } from '../errors.js';
import {
  type DefaultMode,
  decodeHwInfo,
  encodeInvalidations,
  type HwInfoOf,
  type Invalidation,
  IOMMU_TYPES,
  type IommuHwInfo,
  type IommuKind,
  type IommuType,
  type Stage1,
  type Stage1Invalidation,
  type ViommuInvalidation,
} from './iommu-types.js';

/** The physical IOMMU behind a bound device, as IOMMU_GET_HW_INFO reports it. */
export interface DeviceIommuInfo {
  readonly type: number;
  readonly info: IommuHwInfo;
  /** IOMMU_HW_CAP_* bits. */
  readonly capabilities: bigint;
  readonly dirtyTracking: boolean;
  readonly maxPasidLog2: number;
}

export function deviceIommuInfo(fd: Target, devId: number): DeviceIommuInfo {
  const h = iommufd.getHwInfo(fd, devId);
  return {
    type: h.type,
    info: decodeHwInfo(h.type, h.data),
    capabilities: h.capabilities,
    dirtyTracking: (h.capabilities & BigInt(iommufd.IOMMUFD_C.IOMMU_HW_CAP_DIRTY_TRACKING)) !== 0n,
    maxPasidLog2: h.maxPasidLog2,
  };
}

export interface VIommuOptions<K extends IommuKind> {
  /** IOMMU_VIOMMU_ALLOC's type-specific data, if the type takes any. */
  readonly viommuData?: Buffer;
  /** Override how bypass and abort are reached (the type's defaults otherwise). */
  readonly bypass?: DefaultMode<K>;
  readonly abort?: DefaultMode<K>;
}

/** Counters for describe() and metrics; plain numbers, read at scrape time. */
export interface NestingStats {
  /** HWPTs this vIOMMU allocated, ever (parent, defaults, stage-1s). */
  hwptsAllocated: number;
  stage1Installs: number;
  stage1Uninstalls: number;
  invalidationBatches: number;
  invalidationEntries: number;
  /** Entries the kernel consumed (equals entries unless a batch failed part way). */
  invalidationConsumed: number;
  invalidationFailures: number;
}

export interface VDeviceDescription {
  readonly device: string;
  readonly devId: number;
  readonly virtId: string;
  readonly vdeviceId: number | undefined;
  readonly mode: 'bypass' | 'abort' | 'stage1';
  readonly stage1HwptId: number | undefined;
}

export interface VIommuDescription {
  readonly name: string;
  readonly iommu: IommuKind;
  readonly context: string;
  readonly parentHwptId: number;
  readonly viommuId: number | undefined;
  readonly bypassHwptId: number | undefined;
  readonly abortHwptId: number | undefined;
  readonly devices: readonly VDeviceDescription[];
  /** The counters, and hwptsLive: the HWPTs alive now. */
  readonly stats: Readonly<NestingStats & { hwptsLive: number }>;
}

/** Thrown when a VIommu or VDevice could not be made; what was made before the failure has been destroyed. */
export { NestingSetupError };

/** Runs the creation steps, remembering the objects each made so a failure destroys them all, newest first. */
class Undo {
  readonly made: { what: string; id: number }[] = [];
  constructor(readonly fd: Target) {}

  object(what: string, alloc: () => number): number {
    const id = alloc();
    this.made.push({ what, id });
    return id;
  }

  fail(e: unknown, step: string, hint: string): NestingSetupError {
    const undone: { what: string; id: number }[] = [];
    const leaked: string[] = [];
    for (const m of this.made.reverse()) {
      try {
        iommufd.destroy(this.fd, m.id);
        undone.push(m);
      } catch (d) {
        leaked.push(`${m.what} ${m.id}: ${(d as Error).message}`);
      }
    }
    const done = undone.length
      ? `; destroyed again: ${undone.map((u) => `${u.what} ${u.id}`).join(', ')}`
      : '';
    const left = leaked.length ? `; COULD NOT UNDO ${leaked.join('; ')}` : '';
    const hinted = withHint(e, `${hint}, at step "${step}"${done}${left}`);
    return new NestingSetupError(hinted.message, step, undone, e, hinted.hint);
  }
}

/** Explain what an errno from a nesting ioctl means for the caller. */
function explain(
  e: unknown,
  step: string,
  type: {
    readonly label: string;
    readonly hwptDataType: number;
    readonly viommuType: number | undefined;
  },
  info: DeviceIommuInfo | undefined,
): string {
  const code = e instanceof SysError ? e.code : '';
  const noNest =
    info && info.info.nesting === false
      ? ` (${type.label} reports no nesting support${info.info.iommu === 'intel-vtd' ? ': ECAP.NEST is 0' : ''})`
      : '';
  if (step === 'nesting parent HWPT' && code === 'EOPNOTSUPP')
    return `this device's IOMMU cannot be a nesting parent${noNest}`;
  if (step === 'vIOMMU' && code === 'EOPNOTSUPP')
    return `the kernel's IOMMU driver offers no ${type.label} vIOMMU (type 0x${(type.viommuType ?? 0).toString(16)})`;
  if (step === 'vIOMMU' && code === 'EINVAL')
    return `the kernel rejected the vIOMMU's type-specific data`;
  if (code === 'EOPNOTSUPP')
    return `stage-1 data type 0x${type.hwptDataType.toString(16)} (${type.label}) is not supported on this IOMMU`;
  if (code === 'EINVAL' || code === 'EIO')
    return `the kernel rejected the ${type.label} stage-1 data (length, reserved bits or contents)`;
  if (code === 'EEXIST') return `the device already has a vDevice under this vIOMMU`;
  return `nested translation setup failed`;
}

export class VIommu<K extends IommuKind> implements ContextDependent {
  readonly type: IommuType<K>;
  readonly stats: NestingStats = {
    hwptsAllocated: 0,
    stage1Installs: 0,
    stage1Uninstalls: 0,
    invalidationBatches: 0,
    invalidationEntries: 0,
    invalidationConsumed: 0,
    invalidationFailures: 0,
  };
  readonly #fd: Target;
  readonly #devices = new Map<number, VDevice<K>>();
  readonly #untrack: () => void;
  #closed = false;

  private constructor(
    readonly name: string,
    readonly context: IommufdContext,
    type: IommuType<K>,
    readonly hwInfo: HwInfoOf<K>,
    readonly parentHwptId: number,
    readonly viommuId: number | undefined,
    readonly bypass: { readonly mode: DefaultMode<K>; readonly hwptId: number | undefined },
    readonly abort: { readonly mode: DefaultMode<K>; readonly hwptId: number | undefined },
  ) {
    this.type = type;
    this.#fd = context.iommufd;
    this.stats.hwptsAllocated = this.#defaultHwpts();
    this.#untrack = context.track(this);
  }

  /**
   * Build the host side of a virtual IOMMU of `kind`, backed by the physical IOMMU of `device`
   * (a device bound to `context`): check the IOMMU is of that kind, allocate the stage-2 nesting
   * parent on the context's IOAS, the vIOMMU object, and the bypass and abort HWPTs.
   */
  static create<K extends IommuKind>(
    name: string,
    context: IommufdContext,
    device: NestableDevice,
    kind: K,
    opts: VIommuOptions<K> = {},
  ): VIommu<K> {
    const type = IOMMU_TYPES[kind] as IommuType<K>;
    if (!type)
      throw new TypeError(
        `unknown IOMMU type '${String(kind)}' (known: ${Object.keys(IOMMU_TYPES).join(', ')})`,
      );
    const fd = context.iommufd;
    const ioas = context.ioasId;
    if (ioas === undefined)
      throw new Error(`${context} has no IOAS: attach a device before creating vIOMMU '${name}'`);
    const info = deviceIommuInfo(fd, device.devId);
    if (info.type !== type.hwInfoType) {
      throw new Error(
        `vIOMMU '${name}': ${device.label} sits behind ${describeIommu(info.info)} (IOMMU_GET_HW_INFO type 0x${(info.type >>> 0).toString(16)}), not ${type.label}: a ${type.label} vIOMMU cannot be backed by it`,
      );
    }
    const undo = new Undo(fd);
    let step = 'nesting parent HWPT';
    try {
      const parent = undo.object(step, () =>
        iommufd.hwptAlloc(fd, {
          devId: device.devId,
          ptId: ioas,
          flags: iommufd.IOMMUFD_C.IOMMU_HWPT_ALLOC_NEST_PARENT,
        }),
      );
      step = 'vIOMMU';
      const viommuType = type.viommuType;
      const viommu =
        viommuType === undefined
          ? undefined
          : undo.object(step, () =>
              iommufd.viommuAlloc(fd, {
                devId: device.devId,
                hwptId: parent,
                type: viommuType,
                ...(opts.viommuData ? { data: opts.viommuData } : {}),
              }),
            );
      const base = viommu ?? parent;
      const defaultHwpt = (mode: DefaultMode<K>): number | undefined =>
        mode.via === 'stage1'
          ? undo.object(step, () =>
              iommufd.hwptAlloc(fd, {
                devId: device.devId,
                ptId: base,
                dataType: type.hwptDataType,
                data: type.encodeStage1(mode.data),
              }),
            )
          : undefined;
      step = 'bypass HWPT';
      const bypassMode = opts.bypass ?? type.bypass;
      const bypass = defaultHwpt(bypassMode);
      step = 'abort HWPT';
      const abortMode = opts.abort ?? type.abort;
      const abort = defaultHwpt(abortMode);
      return new VIommu(
        name,
        context,
        type,
        info.info as HwInfoOf<K>,
        parent,
        viommu,
        { mode: bypassMode, hwptId: bypass },
        { mode: abortMode, hwptId: abort },
      );
    } catch (e) {
      throw undo.fail(
        e,
        step,
        `vIOMMU '${name}' (${type.label}) on ${context} for ${device.label}: ${explain(e, step, type, info)}`,
      );
    }
  }

  /** The nesting parent and the default HWPTs made from data. */
  #defaultHwpts(): number {
    return (
      1 + (this.bypass.hwptId === undefined ? 0 : 1) + (this.abort.hwptId === undefined ? 0 : 1)
    );
  }

  /** HWPTs alive now: the parent, the defaults, and each vDevice's installed stage-1. */
  get hwptsLive(): number {
    if (this.#closed) return 0;
    let n = this.#defaultHwpts();
    for (const d of this.#devices.values()) if (d.stage1HwptId !== undefined) n++;
    return n;
  }

  /** What nested HWPTs are allocated against: the vIOMMU, or the parent where the kernel has no vIOMMU for this type. */
  get nestingBase(): number {
    return this.viommuId ?? this.parentHwptId;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get devices(): readonly VDevice<K>[] {
    return [...this.#devices.values()];
  }
  toString(): string {
    return `vIOMMU '${this.name}' (${this.type.label})`;
  }

  #check(): void {
    if (this.#closed) throw new Error(`${this} is closed`);
  }

  /**
   * Put `device` under this vIOMMU with the guest's virtual id for it (vSID, vRID, vDeviceID):
   * IOMMU_VDEVICE_ALLOC where the type has a vIOMMU, then attach it to bypass, as a guest sees
   * a device before it enables its IOMMU.
   */
  addDevice(device: NestableDevice, virtId: bigint | number): VDevice<K> {
    this.#check();
    if (this.#devices.has(device.devId))
      throw new ConflictError(`${device.label} is already under ${this}`, 'device', device.label);
    const vid = BigInt(virtId);
    if (vid < 0n || vid > 0xffff_ffff_ffff_ffffn)
      throw new RangeError(`virtual device id ${String(virtId)} does not fit in 64 bits`);
    const undo = new Undo(this.#fd);
    let step = 'vDevice';
    try {
      const viommu = this.viommuId;
      const vdevice =
        viommu === undefined
          ? undefined
          : undo.object(step, () => iommufd.vdeviceAlloc(this.#fd, viommu, device.devId, vid));
      step = 'attach to bypass';
      this.enterDefault(device, 'bypass');
      const v = new VDevice<K>(this, device, vid, vdevice, this.#fd, (d) =>
        this.#devices.delete(d.device.devId),
      );
      this.#devices.set(device.devId, v);
      return v;
    } catch (e) {
      throw undo.fail(
        e,
        step,
        `${device.label} under ${this} as virtual id 0x${vid.toString(16)}: ${explain(e, step, this.type, undefined)}`,
      );
    }
  }

  device(devId: number): VDevice<K> | undefined {
    return this.#devices.get(devId);
  }

  /** @internal Attach `device` to the bypass or abort page table. */
  enterDefault(device: NestableDevice, which: 'bypass' | 'abort'): void {
    const d = this[which];
    if (d.mode.via === 'blocked') {
      if (!device.block)
        throw new Error(
          `${device.label} cannot be detached from its page table, so ${this} cannot block it (${which})`,
        );
      device.block();
    } else device.attach(d.mode.via === 'parent' ? this.parentHwptId : d.hwptId!);
  }

  /**
   * Forward a batch of the guest's invalidation commands to the vIOMMU in one
   * IOMMU_HWPT_INVALIDATE. Returns how many the kernel consumed (all of them); when the kernel
   * stops part way, the error says how many were consumed (`consumed`) and which entry failed.
   */
  invalidate(entries: readonly ViommuInvalidation<K>[]): number {
    this.#check();
    const inv = this.type.viommuInvalidation;
    if (!inv || this.viommuId === undefined)
      throw new Error(
        `${this} takes no vIOMMU-wide invalidations: ${this.type.label} invalidates per stage-1 HWPT (VDevice.invalidateStage1)`,
      );
    return this.runInvalidation(
      this.viommuId,
      inv as Invalidation<ViommuInvalidation<K>>,
      entries,
      'vIOMMU',
    );
  }

  /** @internal one IOMMU_HWPT_INVALIDATE, counted. */
  runInvalidation<E extends { readonly iommu: string }>(
    targetId: number,
    inv: Invalidation<E>,
    entries: readonly E[],
    what: string,
  ): number {
    const foreign = entries.find((e) => e.iommu !== this.type.kind);
    if (foreign)
      throw new TypeError(
        `${this} takes ${this.type.kind} invalidations, not ${String(foreign.iommu)}`,
      );
    const buf = encodeInvalidations(inv, entries);
    this.stats.invalidationBatches++;
    this.stats.invalidationEntries += entries.length;
    try {
      const n = iommufd.hwptInvalidate(this.#fd, targetId, inv.dataType, inv.entry.size, buf);
      this.stats.invalidationConsumed += n;
      return n;
    } catch (e) {
      const consumed = (e as { consumed?: number }).consumed ?? 0;
      this.stats.invalidationConsumed += consumed;
      this.stats.invalidationFailures++;
      const hint =
        e instanceof SysError && e.code === 'EINVAL' && consumed === 0 && entries.length > 0
          ? `the ${what} (id ${targetId}) rejected the batch's first entry or its data type 0x${(inv.dataType >>> 0).toString(16)}`
          : `the ${what} (id ${targetId}) applied ${consumed} of ${entries.length} entries; entry #${consumed} was rejected`;
      if (e instanceof SysError)
        throw new PartialInvalidationError(e, consumed, entries.length, `${this}: ${hint}`);
      throw Object.assign(withHint(e, `${this}: ${hint}`), { consumed });
    }
  }

  /** @internal counted HWPT allocation for a VDevice's stage-1. */
  allocStage1(device: NestableDevice, data: Stage1<K>): number {
    if (data.iommu !== this.type.kind)
      throw new TypeError(
        `${this} takes ${this.type.kind} stage-1 data, not ${String(data.iommu)}`,
      );
    let id: number;
    try {
      id = iommufd.hwptAlloc(this.#fd, {
        devId: device.devId,
        ptId: this.nestingBase,
        dataType: this.type.hwptDataType,
        data: this.type.encodeStage1(data),
      });
    } catch (e) {
      throw withHint(
        e,
        `${this}: stage-1 HWPT for ${device.label}: ${explain(e, 'stage-1 HWPT', this.type, undefined)}`,
      );
    }
    this.stats.hwptsAllocated++;
    return id;
  }

  /** @internal */
  destroyStage1(id: number): void {
    iommufd.destroy(this.#fd, id);
  }

  describe(): VIommuDescription {
    return {
      name: this.name,
      iommu: this.type.kind,
      context: this.context.name,
      parentHwptId: this.parentHwptId,
      viommuId: this.viommuId,
      bypassHwptId: this.bypass.hwptId,
      abortHwptId: this.abort.hwptId,
      devices: this.devices.map((d) => d.describe()),
      stats: { ...this.stats, hwptsLive: this.hwptsLive },
    };
  }

  /** The context tells us a device is leaving: its vDevice goes first. */
  releaseDevice(devId: number): void {
    this.#devices.get(devId)?.close();
  }

  /**
   * Tear down in reverse order of creation: every vDevice (its device goes home to the IOAS),
   * then the abort and bypass HWPTs, the vIOMMU and the nesting parent. Keeps going past a
   * failure and reports every object it could not destroy. A second close does nothing.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const failures: string[] = [];
    for (const d of [...this.#devices.values()].reverse()) {
      try {
        d.close();
      } catch (e) {
        failures.push((e as Error).message);
      }
    }
    const objects: [string, number | undefined][] = [
      ['abort HWPT', this.abort.hwptId],
      ['bypass HWPT', this.bypass.hwptId],
      ['vIOMMU', this.viommuId],
      ['nesting parent HWPT', this.parentHwptId],
    ];
    for (const [what, id] of objects) {
      if (id === undefined) continue;
      try {
        iommufd.destroy(this.#fd, id);
      } catch (e) {
        failures.push(`${what} ${id}: ${(e as Error).message}`);
      }
    }
    this.#untrack();
    if (failures.length)
      throw new Error(`${this}: teardown left objects behind: ${failures.join('; ')}`);
  }
}

/** A vIOMMU of any type (VIommu<K> is invariant in K: its methods take K's data). */
export type AnyVIommu = { [K in IommuKind]: VIommu<K> }[IommuKind];

function describeIommu(info: IommuHwInfo): string {
  return info.iommu in IOMMU_TYPES
    ? IOMMU_TYPES[info.iommu as IommuKind].label
    : `an IOMMU of type '${info.iommu}'`;
}

export class VDevice<K extends IommuKind> {
  #mode: 'bypass' | 'abort' | 'stage1' = 'bypass';
  #stage1: number | undefined;
  #closed = false;

  /** @internal made by VIommu.addDevice */
  constructor(
    readonly viommu: VIommu<K>,
    readonly device: NestableDevice,
    readonly virtId: bigint,
    readonly vdeviceId: number | undefined,
    readonly fd: Target,
    readonly onClose: (d: VDevice<K>) => void,
  ) {}

  get mode(): 'bypass' | 'abort' | 'stage1' {
    return this.#mode;
  }
  get stage1HwptId(): number | undefined {
    return this.#stage1;
  }
  get closed(): boolean {
    return this.#closed;
  }
  toString(): string {
    return `${this.device.label} (virtual id 0x${this.virtId.toString(16)}) under ${this.viommu}`;
  }

  #check(): void {
    if (this.#closed) throw new Error(`${this} is closed`);
  }

  /**
   * The guest pointed this device at its own stage-1 table: allocate a nested HWPT from `data`
   * and attach the device to it in place of what it had (one atomic replace in the kernel), then
   * free the previous stage-1. If the attach fails the device keeps its old page table.
   */
  install(data: Stage1<K>): number {
    this.#check();
    const id = this.viommu.allocStage1(this.device, data);
    try {
      this.device.attach(id);
    } catch (e) {
      this.viommu.destroyStage1(id);
      throw withHint(
        e,
        `${this}: attaching stage-1 HWPT ${id} failed; the device stays on its ${this.#mode} page table`,
      );
    }
    const old = this.#stage1;
    this.#stage1 = id;
    this.#mode = 'stage1';
    this.viommu.stats.stage1Installs++;
    if (old !== undefined) this.viommu.destroyStage1(old);
    return id;
  }

  /** The guest disabled translation for the device (or its IOMMU): back to bypass, or to abort, and free the stage-1. */
  uninstall(to: 'bypass' | 'abort' = 'bypass'): void {
    this.#check();
    this.viommu.enterDefault(this.device, to);
    this.#mode = to;
    if (this.#stage1 !== undefined) {
      const old = this.#stage1;
      this.#stage1 = undefined;
      this.viommu.stats.stage1Uninstalls++;
      this.viommu.destroyStage1(old);
    }
  }

  /**
   * Forward stage-1 invalidations (IOTLB entries of the guest table now installed) in one
   * IOMMU_HWPT_INVALIDATE on this device's stage-1 HWPT. Returns how many the kernel consumed.
   */
  invalidateStage1(entries: readonly Stage1Invalidation<K>[]): number {
    this.#check();
    const inv = this.viommu.type.stage1Invalidation;
    if (!inv)
      throw new Error(
        `${this.viommu.type.label} invalidates through the vIOMMU (VIommu.invalidate), not per stage-1 HWPT`,
      );
    if (this.#stage1 === undefined)
      throw new Error(`${this} has no stage-1 HWPT installed (it is in ${this.#mode})`);
    return this.viommu.runInvalidation(
      this.#stage1,
      inv as Invalidation<Stage1Invalidation<K>>,
      entries,
      'stage-1 HWPT',
    );
  }

  describe(): VDeviceDescription {
    return {
      device: this.device.label,
      devId: this.device.devId,
      virtId: `0x${this.virtId.toString(16)}`,
      vdeviceId: this.vdeviceId,
      mode: this.#mode,
      stage1HwptId: this.#stage1,
    };
  }

  /**
   * Give the device back: attach it to the context's IOAS, free its stage-1 HWPT, destroy the
   * vDevice (before the device is unbound, or the kernel would leak its id). Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose(this);
    const failures: string[] = [];
    try {
      this.device.home();
    } catch (e) {
      failures.push(`going back to the IOAS: ${(e as Error).message}`);
    }
    if (this.#stage1 !== undefined) {
      try {
        this.viommu.destroyStage1(this.#stage1);
        this.#stage1 = undefined;
      } catch (e) {
        failures.push(`stage-1 HWPT ${this.#stage1}: ${(e as Error).message}`);
      }
    }
    if (this.vdeviceId !== undefined) {
      try {
        iommufd.destroy(this.fd, this.vdeviceId);
      } catch (e) {
        failures.push(`vDevice ${this.vdeviceId}: ${(e as Error).message}`);
      }
    }
    if (failures.length)
      throw new Error(`${this}: teardown left objects behind: ${failures.join('; ')}`);
  }
}
