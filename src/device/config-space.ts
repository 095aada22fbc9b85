// Config-space virtualization for an assigned device, after QEMU's vfio_pci_read/write_config:
// each byte is either passed through to the device's config region or emulated from a virtual
// image. Emulated: the BARs and expansion ROM BAR (sized from VFIO region info, so sizing by
// writing all ones is answered here), the interrupt line, the MSI and MSI-X message control
// (and the whole MSI capability), and extended capabilities a guest cannot use (SR-IOV, ARI,
// Resizable BAR), which are unlinked from the list and read as zero.

import { PCI } from '../../native/pci-regs.js';
import { ConfigError } from '../errors.js';

/** Access to the physical config region (pread/pwrite on the VFIO device fd). */
export interface ConfigIo {
  read(offset: number, size: 1 | 2 | 4): number;
  write(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** What VFIO region info says about a BAR (index 0-5) or the ROM (index 6). */
export interface BarRegion {
  size: bigint;
}

export interface CapInfo {
  id: number;
  offset: number;
}
export interface ConfigHooks {
  /** MSI-X Enable or Function Mask changed in the message control word. */
  msixControl?(enabled: boolean, functionMasked: boolean): void;
  /** A write landed in the MSI capability (enable, address, data or mask). */
  msiChanged?(): void;
}

export const HIDDEN_EXT_CAPS: ReadonlySet<number> = new Set([
  PCI.PCI_EXT_CAP_ID_SRIOV,
  PCI.PCI_EXT_CAP_ID_ARI,
  PCI.PCI_EXT_CAP_ID_REBAR,
]);

export interface BarLayout {
  index: number;
  size: bigint;
  io: boolean;
  is64: boolean;
  prefetch: boolean;
}

// One of the runtime's error kinds (VFR_ERR_DEVICE_CONFIG): a config space this cannot virtualize.
export { ConfigError };

export class ConfigSpace {
  readonly size: number;
  /** What the guest sees for emulated bytes; may live in shared memory so a restarted worker keeps it. */
  readonly virt: Uint8Array;
  readonly #emulated: Uint8Array;
  readonly #wmask: Uint8Array;
  readonly bars: BarLayout[] = [];
  readonly romSize: bigint;
  readonly caps: CapInfo[] = [];
  readonly extCaps: (CapInfo & { hidden: boolean })[] = [];
  msix:
    | {
        offset: number;
        tableSize: number;
        tableBar: number;
        tableOffset: number;
        pbaBar: number;
        pbaOffset: number;
      }
    | undefined;
  msi: { offset: number; is64: boolean; maskable: boolean; vectors: number } | undefined;

  /**
   * @param phys  the device's config space as read now (256 or 4096 bytes)
   * @param regions region info for BAR0-5 and the ROM (index 6)
   * @param virt  storage for the virtual image; with `restore` its contents are kept (a restarted worker)
   */
  constructor(
    readonly io: ConfigIo,
    phys: Uint8Array,
    regions: readonly BarRegion[],
    readonly hooks: ConfigHooks = {},
    virt?: Uint8Array,
    restore = false,
  ) {
    this.size = phys.length;
    if (this.size !== PCI.PCI_CFG_SPACE_SIZE && this.size !== PCI.PCI_CFG_SPACE_EXP_SIZE)
      throw new ConfigError(`config space of ${this.size} bytes (expected 256 or 4096)`);
    if ((phys[PCI.PCI_HEADER_TYPE]! & PCI.PCI_HEADER_TYPE_MASK) !== PCI.PCI_HEADER_TYPE_NORMAL)
      throw new ConfigError('only type 0 (endpoint) headers can be assigned, not bridges');
    this.virt = virt ?? new Uint8Array(this.size);
    if (this.virt.length < this.size)
      throw new ConfigError(
        `virtual config storage of ${this.virt.length} bytes is smaller than config space`,
      );
    if (!restore) this.virt.set(phys);
    this.#emulated = new Uint8Array(this.size);
    this.#wmask = new Uint8Array(this.size);
    const physView = new DataView(phys.buffer, phys.byteOffset, phys.byteLength);

    this.#setupBars(physView, regions, restore);
    this.romSize = regions[6]?.size ?? 0n;
    this.#emulate32(
      PCI.PCI_ROM_ADDRESS,
      this.romSize ? (~Number(this.romSize - 1n) & 0xfffff800) | PCI.PCI_ROM_ADDRESS_ENABLE : 0,
      restore ? undefined : 0,
    );
    this.#emulate(PCI.PCI_INTERRUPT_LINE, 1, 0xff);
    this.#walkCaps(phys, physView, restore);
    if (this.size > PCI.PCI_CFG_SPACE_SIZE) this.#walkExtCaps(physView, restore);
  }

  // ---- setup

  #emulate(offset: number, len: number, wmask: number): void {
    for (let i = 0; i < len; i++) {
      this.#emulated[offset + i] = 1;
      this.#wmask[offset + i] = (wmask >>> (8 * i)) & 0xff;
    }
  }

  /** Emulate a dword with a write mask; set its virtual value unless restoring. */
  #emulate32(offset: number, wmask: number, value: number | undefined): void {
    this.#emulate(offset, 4, wmask);
    if (value !== undefined)
      new DataView(this.virt.buffer, this.virt.byteOffset).setUint32(offset, value >>> 0, true);
  }

  #setupBars(phys: DataView, regions: readonly BarRegion[], restore: boolean): void {
    for (let i = 0; i < 6; i++) {
      const off = PCI.PCI_BASE_ADDRESS_0 + 4 * i;
      const size = regions[i]?.size ?? 0n;
      if (size === 0n) {
        this.#emulate32(off, 0, restore ? undefined : 0);
        continue;
      }
      if ((size & (size - 1n)) !== 0n)
        throw new ConfigError(`BAR${i} size 0x${size.toString(16)} is not a power of two`);
      const low = phys.getUint32(off, true);
      const io = (low & PCI.PCI_BASE_ADDRESS_SPACE_IO) !== 0;
      const flags = io ? low & 0x3 : low & 0xf;
      const is64 = !io && (low & 0x6) === PCI.PCI_BASE_ADDRESS_MEM_TYPE_64;
      const prefetch = !io && (low & PCI.PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0;
      const lowMask = size >= 1n << 32n ? 0 : ~Number(size - 1n) & (io ? 0xfffffffc : 0xfffffff0);
      this.#emulate32(off, lowMask, restore ? undefined : flags);
      this.bars.push({ index: i, size, io, is64, prefetch });
      if (is64) {
        if (i === 5) throw new ConfigError('BAR5 claims to be 64-bit');
        const highMask = ~Number((size - 1n) >> 32n) & 0xffffffff;
        this.#emulate32(off + 4, highMask, restore ? undefined : 0);
        i++;
      }
    }
  }

  #walkCaps(phys: Uint8Array, view: DataView, restore: boolean): void {
    if (!(view.getUint16(PCI.PCI_STATUS, true) & PCI.PCI_STATUS_CAP_LIST)) return;
    const seen = new Set<number>();
    for (let off = phys[PCI.PCI_CAPABILITY_LIST]! & 0xfc; off !== 0; off = phys[off + 1]! & 0xfc) {
      if (off < 0x40 || off > PCI.PCI_CFG_SPACE_SIZE - 4)
        throw new ConfigError(
          `capability pointer 0x${off.toString(16)} is outside the capability area`,
        );
      if (seen.has(off)) throw new ConfigError(`capability list loops at 0x${off.toString(16)}`);
      seen.add(off);
      const id = phys[off]!;
      this.caps.push({ id, offset: off });
      if (id === PCI.PCI_CAP_ID_MSIX) this.#setupMsix(off, view, restore);
      else if (id === PCI.PCI_CAP_ID_MSI) this.#setupMsi(off, view, restore);
    }
  }

  #setupMsix(off: number, view: DataView, restore: boolean): void {
    const ctl = view.getUint16(off + PCI.PCI_MSIX_FLAGS, true);
    const table = view.getUint32(off + PCI.PCI_MSIX_TABLE, true);
    const pba = view.getUint32(off + PCI.PCI_MSIX_PBA, true);
    this.msix = {
      offset: off,
      tableSize: (ctl & PCI.PCI_MSIX_FLAGS_QSIZE) + 1,
      tableBar: table & PCI.PCI_MSIX_TABLE_BIR,
      tableOffset: (table & ~7) >>> 0,
      pbaBar: pba & PCI.PCI_MSIX_PBA_BIR,
      pbaOffset: (pba & ~7) >>> 0,
    };
    // The guest's Enable/Function Mask never reach the device: the runtime enables MSI-X
    // through VFIO_DEVICE_SET_IRQS when vectors are in use.
    this.#emulate(
      off + PCI.PCI_MSIX_FLAGS,
      2,
      PCI.PCI_MSIX_FLAGS_ENABLE | PCI.PCI_MSIX_FLAGS_MASKALL,
    );
    if (!restore)
      this.#set16(
        off + PCI.PCI_MSIX_FLAGS,
        ctl & ~(PCI.PCI_MSIX_FLAGS_ENABLE | PCI.PCI_MSIX_FLAGS_MASKALL),
      );
  }

  #setupMsi(off: number, view: DataView, restore: boolean): void {
    const ctl = view.getUint16(off + PCI.PCI_MSI_FLAGS, true);
    const is64 = (ctl & PCI.PCI_MSI_FLAGS_64BIT) !== 0;
    const maskable = (ctl & PCI.PCI_MSI_FLAGS_MASKBIT) !== 0;
    this.msi = {
      offset: off,
      is64,
      maskable,
      vectors: 1 << ((ctl & PCI.PCI_MSI_FLAGS_QMASK) >> 1),
    };
    this.#emulate(off + PCI.PCI_MSI_FLAGS, 2, PCI.PCI_MSI_FLAGS_ENABLE | PCI.PCI_MSI_FLAGS_QSIZE);
    this.#emulate32(off + PCI.PCI_MSI_ADDRESS_LO, 0xfffffffc, restore ? undefined : 0);
    const dataOff = off + (is64 ? PCI.PCI_MSI_DATA_64 : PCI.PCI_MSI_DATA_32);
    if (is64) this.#emulate32(off + PCI.PCI_MSI_ADDRESS_HI, 0xffffffff, restore ? undefined : 0);
    this.#emulate(dataOff, 2, 0xffff);
    if (!restore) {
      this.#set16(
        off + PCI.PCI_MSI_FLAGS,
        ctl & ~(PCI.PCI_MSI_FLAGS_ENABLE | PCI.PCI_MSI_FLAGS_QSIZE),
      );
      this.#set16(dataOff, 0);
    }
    if (maskable) {
      const maskOff = off + (is64 ? PCI.PCI_MSI_MASK_64 : PCI.PCI_MSI_MASK_32);
      this.#emulate32(
        maskOff,
        this.msi.vectors >= 32 ? 0xffffffff : (1 << this.msi.vectors) - 1,
        restore ? undefined : 0,
      );
      this.#emulate32(maskOff + 4, 0, restore ? undefined : 0); // pending bits
    }
  }

  #walkExtCaps(view: DataView, restore: boolean): void {
    const found: { id: number; offset: number; next: number }[] = [];
    const seen = new Set<number>();
    for (let off = 0x100; off !== 0; ) {
      if (off < 0x100 || off > this.size - 4 || off & 3)
        throw new ConfigError(`extended capability pointer 0x${off.toString(16)} is invalid`);
      if (seen.has(off))
        throw new ConfigError(`extended capability list loops at 0x${off.toString(16)}`);
      seen.add(off);
      const hdr = view.getUint32(off, true);
      if (hdr === 0 || hdr === 0xffffffff) break;
      found.push({ id: hdr & 0xffff, offset: off, next: hdr >>> 20 });
      off = hdr >>> 20;
    }
    const sorted = found.map((c) => c.offset).sort((a, b) => a - b);
    const extent = (off: number): number => (sorted.find((o) => o > off) ?? this.size) - off;
    // Rebuild the chain without the hidden caps: each header dword is emulated so the
    // guest follows the virtual links.
    let prevHeader: number | undefined;
    for (const c of found) {
      const hidden = HIDDEN_EXT_CAPS.has(c.id);
      this.extCaps.push({ id: c.id, offset: c.offset, hidden });
      this.#emulate(c.offset, 4, 0);
      if (hidden) {
        this.#emulate(c.offset, extent(c.offset), 0);
        if (!restore) this.virt.fill(0, c.offset, c.offset + extent(c.offset));
        continue;
      }
      if (!restore && prevHeader !== undefined) this.#setNext(prevHeader, c.offset);
      if (!restore)
        new DataView(this.virt.buffer, this.virt.byteOffset).setUint32(
          c.offset,
          view.getUint32(c.offset, true) & 0x000fffff,
          true,
        );
      prevHeader = c.offset;
    }
    if (restore) return;
    if (prevHeader !== undefined) this.#setNext(prevHeader, 0);
    // The first header must stay at 0x100: if it was hidden, leave a null capability (id 0) there.
    const first = found[0];
    if (first && HIDDEN_EXT_CAPS.has(first.id)) {
      const firstVisible = this.extCaps.find((c) => !c.hidden);
      new DataView(this.virt.buffer, this.virt.byteOffset).setUint32(
        0x100,
        (firstVisible?.offset ?? 0) << 20,
        true,
      );
    }
  }

  #setNext(header: number, next: number): void {
    const v = new DataView(this.virt.buffer, this.virt.byteOffset);
    v.setUint32(header, (v.getUint32(header, true) & 0x000fffff) | (next << 20), true);
  }

  #set16(offset: number, value: number): void {
    this.virt[offset] = value & 0xff;
    this.virt[offset + 1] = (value >> 8) & 0xff;
  }

  // ---- guest accesses

  /** Is this access one the guest may make? (1, 2 or 4 bytes, naturally aligned, inside config space) */
  static validAccess(
    offset: number,
    size: number,
    cfgSize: number,
  ): 'ok' | 'width' | 'align' | 'range' {
    if (size !== 1 && size !== 2 && size !== 4) return 'width';
    if (offset % size !== 0) return 'align';
    if (offset < 0 || offset + size > cfgSize) return 'range';
    return 'ok';
  }

  read(offset: number, size: 1 | 2 | 4): number {
    let anyPhys = false,
      allPhys = true;
    for (let i = 0; i < size; i++) {
      if (this.#emulated[offset + i]) allPhys = false;
      else anyPhys = true;
    }
    if (allPhys) return this.io.read(offset, size);
    const phys = anyPhys ? this.io.read(offset, size) : 0;
    let v = 0;
    for (let i = 0; i < size; i++) {
      const byte = this.#emulated[offset + i] ? this.virt[offset + i]! : (phys >>> (8 * i)) & 0xff;
      v |= byte << (8 * i);
    }
    return v >>> 0;
  }

  write(offset: number, size: 1 | 2 | 4, value: number): void {
    // Pass the non-emulated bytes through, in runs, at the widths the device saw them.
    let runStart = -1;
    for (let i = 0; i <= size; i++) {
      const phys = i < size && !this.#emulated[offset + i];
      if (phys && runStart < 0) runStart = i;
      if (!phys && runStart >= 0) {
        this.#passThrough(offset, runStart, i, value);
        runStart = -1;
      }
    }
    let touched = false;
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      if (!this.#emulated[at]) continue;
      const m = this.#wmask[at]!;
      if (m === 0) continue;
      this.virt[at] = (this.virt[at]! & ~m) | ((value >>> (8 * i)) & 0xff & m);
      touched = true;
    }
    if (touched) this.#notify(offset, size);
  }

  #passThrough(offset: number, from: number, to: number, value: number): void {
    for (let i = from; i < to; ) {
      const len =
        to - i >= 4 && (offset + i) % 4 === 0 ? 4 : to - i >= 2 && (offset + i) % 2 === 0 ? 2 : 1;
      this.io.write(
        offset + i,
        len as 1 | 2 | 4,
        (value >>> (8 * i)) & (len === 4 ? 0xffffffff : len === 2 ? 0xffff : 0xff),
      );
      i += len;
    }
  }

  #notify(offset: number, size: number): void {
    const overlaps = (start: number, len: number): boolean =>
      offset < start + len && start < offset + size;
    if (this.msix && overlaps(this.msix.offset + PCI.PCI_MSIX_FLAGS, 2)) {
      const ctl = this.virt16(this.msix.offset + PCI.PCI_MSIX_FLAGS);
      this.hooks.msixControl?.(
        (ctl & PCI.PCI_MSIX_FLAGS_ENABLE) !== 0,
        (ctl & PCI.PCI_MSIX_FLAGS_MASKALL) !== 0,
      );
    }
    if (this.msi && overlaps(this.msi.offset, this.msi.is64 ? 24 : 20)) this.hooks.msiChanged?.();
  }

  virt16(offset: number): number {
    return this.virt[offset]! | (this.virt[offset + 1]! << 8);
  }
  virt32(offset: number): number {
    return (this.virt16(offset) | (this.virt16(offset + 2) << 16)) >>> 0;
  }

  /** MSI-X message control as the guest set it. */
  get msixEnabled(): boolean {
    return (
      !!this.msix &&
      (this.virt16(this.msix.offset + PCI.PCI_MSIX_FLAGS) & PCI.PCI_MSIX_FLAGS_ENABLE) !== 0
    );
  }
  get msixFunctionMasked(): boolean {
    return (
      !!this.msix &&
      (this.virt16(this.msix.offset + PCI.PCI_MSIX_FLAGS) & PCI.PCI_MSIX_FLAGS_MASKALL) !== 0
    );
  }

  /** Is byte `offset` emulated (not passed through)? */
  isEmulated(offset: number): boolean {
    return this.#emulated[offset] === 1;
  }

  /** The emulated bytes as [start, end) ranges, for describe(). */
  emulatedRanges(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.size; i++) {
      if (!this.#emulated[i]) continue;
      const last = out[out.length - 1];
      if (last && last[1] === i) last[1] = i + 1;
      else out.push([i, i + 1]);
    }
    return out;
  }
}
