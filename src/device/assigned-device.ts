// An assigned PCI device as its worker serves it: region and IRQ info from VFIO, virtualized
// config space, BAR MMIO by pread/pwrite on the device fd, and the MSI-X table and PBA
// emulated where they sit in their BARs (split-BAR dispatch). handle() is the ring handler:
// it validates every request before anything reaches the device, and never throws.
import { errno, raw, type Target } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { HostSetupError } from '../errors.js';
import {
  C_BAR_BYTES_READ,
  C_BAR_BYTES_WRITTEN,
  C_BAR_READ,
  C_BAR_READS,
  C_BAR_WRITE,
  C_BAR_WRITES,
  C_BYTES_READ,
  C_BYTES_WRITTEN,
  C_CFG_READ,
  C_CFG_WRITE,
  C_MSIX_PBA,
  C_MSIX_TABLE,
  C_NOP,
  errorSlot,
} from '../metrics/schema.js';
import { OP, STATUS } from '../ring/protocol.js';
import type { Request } from '../ring/server.js';
import { AccessGuard, CONFIG_WINDOW, OutsideAccessError } from './access-guard.js';
import { type BarAreas, type BarRange, barAreas } from './bar-areas.js';
import { type ConfigHooks, type ConfigIo, ConfigSpace } from './config-space.js';
import { MsixTableEmulator } from './msix-table.js';
import { type DeviceMemory, RESTORE, restoreViews } from './shared-state.js';

const V = vfio.VFIO_C;

interface Bar {
  size: number;
  /** Offset of the BAR's region in the device fd. */
  fdOffset: number;
  /** [start, end) of the MSI-X table / PBA inside this BAR, when they live here. */
  table?: [number, number];
  pba?: [number, number];
  /** What a VMM may map into the guest and what must trap (bar-areas.ts). */
  areas: BarAreas;
}

export interface DeviceDescription {
  name: string;
  path: string;
  configSize: number;
  bars: {
    index: number;
    size: string;
    io: boolean;
    is64: boolean;
    prefetch: boolean;
    msixTable: boolean;
    msixPba: boolean;
    /** Offset of the BAR's region in the device fd (hex), where an mmap of it starts. */
    regionOffset: string;
    /** [start, end) inside the BAR a VMM may mmap and give the guest (the BAR fast path)... */
    mappable: BarRange[];
    /** ...and what must still trap to the ring (the MSI-X table and PBA pages, at least). */
    trapped: BarRange[];
  }[];
  romSize: string;
  capabilities: { id: number; offset: number }[];
  extendedCapabilities: { id: number; offset: number; hidden: boolean }[];
  msix?: {
    vectors: number;
    tableBar: number;
    tableOffset: number;
    pbaBar: number;
    pbaOffset: number;
  };
  msi?: { vectors: number; is64: boolean; maskable: boolean };
  irqs: { index: number; count: number; flags: number }[];
  /** Config-space bytes answered by the runtime rather than the device, as [start, end). */
  emulatedConfig: [number, number][];
}

export class AssignedDevice {
  readonly config: ConfigSpace;
  readonly msix: MsixTableEmulator | undefined;
  readonly regions: vfio.RegionInfoWithCaps[];
  readonly irqs: vfio.IrqInfo[];
  /** Set up from the shared state a previous worker left (a restarted worker), not from the device. */
  readonly restored: boolean;
  readonly #bars: (Bar | undefined)[] = [];
  readonly #stats: Float64Array;
  readonly #cfgOffset: number;
  /** Every device call's window check (BAR regions, the config region). */
  readonly #guard: AccessGuard;
  /** The device fd number, read once (Target.fd may be a checking getter). */
  readonly #fd: number;

  constructor(
    readonly dev: Target,
    readonly name: string,
    memory: DeviceMemory,
    hooks: ConfigHooks = {},
  ) {
    this.#stats = new Float64Array(memory.stats);
    this.#fd = dev.fd;
    const info = vfio.deviceGetInfo(dev);
    if (!(info.flags & V.VFIO_DEVICE_FLAGS_PCI))
      throw new HostSetupError(
        `${dev.path} is not a vfio-pci device (VFIO_DEVICE_FLAGS_PCI is clear): assign PCI functions bound to vfio-pci`,
      );
    // BARs 0-5, the ROM and config space; the VGA region (8) exists only on VGA-class devices.
    this.regions = Array.from(
      { length: Math.min(info.num_regions, V.VFIO_PCI_CONFIG_REGION_INDEX + 1) },
      (_, i) => vfio.deviceGetRegionInfo(dev, i),
    );
    this.irqs = Array.from({ length: Math.min(info.num_irqs, V.VFIO_PCI_NUM_IRQS) }, (_, i) =>
      vfio.deviceGetIrqInfo(dev, i),
    );
    const cfgRegion = this.regions[V.VFIO_PCI_CONFIG_REGION_INDEX];
    if (!cfgRegion || cfgRegion.size === 0n) throw new Error(`${dev.path} has no config region`);
    this.#cfgOffset = Number(cfgRegion.offset);
    const cfgSize = Math.min(Number(cfgRegion.size), 4096);
    this.#guard = new AccessGuard(this.#stats);
    this.#guard.allow(CONFIG_WINDOW, this.#cfgOffset, cfgSize);

    const phys = Buffer.alloc(cfgSize);
    this.#check(raw.pread(dev.fd, phys, cfgSize, this.#cfgOffset), cfgSize, 'pread config space');
    const views = restoreViews(memory.state);
    const restore = Atomics.load(views.flags, RESTORE.INITIALIZED) === 1;
    this.restored = restore;
    this.config = new ConfigSpace(
      configIo(this.#fd, this.#cfgOffset, dev.path, this.#guard),
      phys,
      this.regions.slice(0, 7),
      hooks,
      views.config.subarray(0, cfgSize),
      restore,
    );
    const m = this.config.msix;
    this.msix = m
      ? new MsixTableEmulator(
          m.tableSize,
          { table: views.msixTable(m.tableSize), pba: views.pba(m.tableSize) },
          restore,
        )
      : undefined;
    for (const b of this.config.bars) {
      const r = this.regions[b.index]!;
      const table: BarRange | undefined =
        m && m.tableBar === b.index ? [m.tableOffset, m.tableOffset + m.tableSize * 16] : undefined;
      const pba: BarRange | undefined =
        m && m.pbaBar === b.index
          ? [m.pbaOffset, m.pbaOffset + MsixTableEmulator.pbaBytes(m.tableSize)]
          : undefined;
      const areas = barAreas({
        size: Number(b.size),
        mmap: !b.io && (r.flags & V.VFIO_REGION_INFO_FLAG_MMAP) !== 0,
        ...(r.sparseMmap
          ? {
              sparse: r.sparseMmap.map((a) => ({ offset: Number(a.offset), size: Number(a.size) })),
            }
          : {}),
        emulated: [table, pba].filter((x) => x !== undefined),
      });
      this.#guard.allow(b.index, Number(r.offset), Number(b.size));
      this.#bars[b.index] = {
        size: Number(b.size),
        fdOffset: Number(r.offset),
        ...(table ? { table } : {}),
        ...(pba ? { pba } : {}),
        areas,
      };
    }
    Atomics.store(views.flags, RESTORE.INITIALIZED, 1);
  }

  #check(got: number, want: number, what: string): void {
    checkIo(got, want, what, this.dev.path);
  }

  // ---- the ring handler (hot path: no allocation, no throw)

  handle = (req: Request): number => {
    const s = this.#stats;
    switch (req.op) {
      case OP.BAR_READ: {
        s[C_BAR_READ]!++;
        return this.#count(this.#bar(req, false));
      }
      case OP.BAR_WRITE: {
        s[C_BAR_WRITE]!++;
        return this.#count(this.#bar(req, true));
      }
      case OP.CFG_READ: {
        s[C_CFG_READ]!++;
        return this.#count(this.#cfg(req, false));
      }
      case OP.CFG_WRITE: {
        s[C_CFG_WRITE]!++;
        return this.#count(this.#cfg(req, true));
      }
      case OP.NOP: {
        s[C_NOP]!++;
        return STATUS.OK;
      }
      default:
        return this.#count(STATUS.BAD_OP);
    }
  };

  #count(status: number): number {
    if (status !== STATUS.OK) this.#stats[errorSlot(status)]!++;
    return status;
  }

  #bar(req: Request, write: boolean): number {
    const bar = this.#bars[req.index];
    if (bar === undefined) return STATUS.BAD_BAR; // also a negative or non-BAR index
    const { offset, size } = req;
    if (size <= 8) {
      if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return STATUS.BAD_WIDTH;
      if (offset % size !== 0) return STATUS.MISALIGNED;
    }
    if (size === 0 || offset < 0 || offset + size > bar.size) return STATUS.OUT_OF_RANGE;
    // Per-BAR counts: req.index is 0-5 here (#bars has only implemented BARs).
    this.#stats[(write ? C_BAR_WRITES : C_BAR_READS) + req.index]!++;
    if (bar.table && offset < bar.table[1] && bar.table[0] < offset + size)
      return this.#msix(req, write, bar.table, true);
    if (bar.pba && offset < bar.pba[1] && bar.pba[0] < offset + size)
      return this.#msix(req, write, bar.pba, false);
    const at = bar.fdOffset + offset;
    if (!this.#guard.inside(req.index, at, size)) return STATUS.OUT_OF_RANGE;
    const n = write
      ? raw.pwrite(this.#fd, req.data, size, at)
      : raw.pread(this.#fd, req.data, size, at);
    if (n !== size) return this.#ioError(req);
    const s = this.#stats;
    s[write ? C_BYTES_WRITTEN : C_BYTES_READ]! += size;
    s[(write ? C_BAR_BYTES_WRITTEN : C_BAR_BYTES_READ) + req.index]! += size;
    return STATUS.OK;
  }

  #msix(req: Request, write: boolean, range: [number, number], table: boolean): number {
    const m = this.msix!;
    const off = req.offset - range[0];
    // An access straddling the table/PBA boundary, or wider than 8 bytes, is not one a guest makes.
    if (off < 0 || !MsixTableEmulator.fits(off, req.size, range[1] - range[0]))
      return STATUS.OUT_OF_RANGE;
    this.#stats[table ? C_MSIX_TABLE : C_MSIX_PBA]!++;
    if (table) {
      if (write) m.writeTable(off, req.data, req.size);
      else m.readTable(off, req.data, req.size);
    } else if (!write) m.readPba(off, req.data, req.size); // PBA writes are ignored (read-only)
    return STATUS.OK;
  }

  #cfg(req: Request, write: boolean): number {
    const v = ConfigSpace.validAccess(req.offset, req.size, this.config.size);
    if (v !== 'ok')
      return v === 'width'
        ? STATUS.BAD_WIDTH
        : v === 'align'
          ? STATUS.MISALIGNED
          : STATUS.OUT_OF_RANGE;
    const size = req.size as 1 | 2 | 4;
    const w = req.words!;
    try {
      if (write) this.config.write(req.offset, size, w[0]!);
      else w[0] = this.config.read(req.offset, size);
    } catch (e) {
      if (e instanceof OutsideAccessError) return STATUS.OUT_OF_RANGE;
      return this.#ioError(req);
    }
    return STATUS.OK;
  }

  /** The errno of the failed device call goes back in the request's first data word. */
  #ioError(req: Request): number {
    const e = errno();
    req.data[0] = e & 0xff;
    req.data[1] = (e >> 8) & 0xff;
    req.data[2] = 0;
    req.data[3] = 0;
    return STATUS.IO_ERROR;
  }

  describe(): DeviceDescription {
    const c = this.config,
      m = c.msix;
    return {
      name: this.name,
      path: this.dev.path,
      configSize: c.size,
      bars: c.bars.map((b) => ({
        index: b.index,
        size: `0x${b.size.toString(16)}`,
        io: b.io,
        is64: b.is64,
        prefetch: b.prefetch,
        msixTable: m?.tableBar === b.index,
        msixPba: m?.pbaBar === b.index,
        regionOffset: `0x${this.#bars[b.index]!.fdOffset.toString(16)}`,
        mappable: this.#bars[b.index]!.areas.mappable,
        trapped: this.#bars[b.index]!.areas.trapped,
      })),
      romSize: `0x${c.romSize.toString(16)}`,
      capabilities: c.caps,
      extendedCapabilities: c.extCaps,
      ...(m
        ? {
            msix: {
              vectors: m.tableSize,
              tableBar: m.tableBar,
              tableOffset: m.tableOffset,
              pbaBar: m.pbaBar,
              pbaOffset: m.pbaOffset,
            },
          }
        : {}),
      ...(c.msi
        ? { msi: { vectors: c.msi.vectors, is64: c.msi.is64, maskable: c.msi.maskable } }
        : {}),
      irqs: this.irqs.map((i) => ({ index: i.index, count: i.count, flags: i.flags })),
      emulatedConfig: c.emulatedRanges(),
    };
  }
}

function checkIo(got: number, want: number, what: string, path: string): void {
  if (got !== want)
    throw new Error(
      `${what} on ${path}: ${got < 0 ? `errno ${errno()}` : `short transfer ${got}/${want}`}`,
    );
}

/**
 * pread/pwrite of the config region at `base` in the device fd, through one scratch buffer. The
 * error's text is built only on failure: a template string per access made 2 M config reads
 * cost 58 GC scavenges.
 */
export function configIo(fd: number, base: number, path: string, guard?: AccessGuard): ConfigIo {
  const buf = Buffer.alloc(8);
  const check = (offset: number, size: number): void => {
    if (guard && !guard.inside(CONFIG_WINDOW, base + offset, size))
      throw new OutsideAccessError(
        `config access 0x${offset.toString(16)}/${size} outside ${path}'s config region`,
        offset,
        size,
      );
  };
  return {
    read: (offset, size) => {
      check(offset, size);
      const n = raw.pread(fd, buf, size, base + offset);
      if (n !== size) checkIo(n, size, `pread config 0x${offset.toString(16)}`, path);
      return size === 4 ? buf.readUInt32LE(0) : size === 2 ? buf.readUInt16LE(0) : buf[0]!;
    },
    write: (offset, size, value) => {
      check(offset, size);
      if (size === 4) buf.writeUInt32LE(value >>> 0);
      else if (size === 2) buf.writeUInt16LE(value & 0xffff);
      else buf[0] = value & 0xff;
      const n = raw.pwrite(fd, buf, size, base + offset);
      if (n !== size) checkIo(n, size, `pwrite config 0x${offset.toString(16)}`, path);
    },
  };
}
