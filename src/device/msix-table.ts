// MSI-X table and PBA emulation, shared by every assigned device (as OpenVMM's MsixEmulator):
// the guest programs address, data and vector control in the table; the physical table belongs
// to the host kernel. Reads and writes of 1, 2, 4 or 8 bytes inside the table or PBA; the PBA
// is read-only. Each change of a vector's address, data or mask is reported to a listener.
import { PCI } from '../../native/pci-regs.js';
import type { MsixTableListener } from '../irq/guest-views.js';

const ENTRY = PCI.PCI_MSIX_ENTRY_SIZE;

export class MsixTableEmulator {
  /** tableSize × 16 bytes: address lo, address hi, data, vector control. */
  readonly table: Uint8Array;
  /** One pending bit per vector, in 64-bit PBA words. */
  readonly pba: Uint8Array;
  readonly #view: DataView;
  listener: MsixTableListener | undefined;

  /** Storage may be shared memory (a restarted worker keeps it); `restore` keeps its contents. */
  constructor(
    readonly size: number,
    storage?: { table: Uint8Array; pba: Uint8Array },
    restore = false,
  ) {
    if (size < 1 || size > 2048)
      throw new RangeError(`MSI-X table size ${size} is outside 1..2048`);
    this.table = storage?.table ?? new Uint8Array(size * ENTRY);
    this.pba = storage?.pba ?? new Uint8Array(MsixTableEmulator.pbaBytes(size));
    this.#view = new DataView(this.table.buffer, this.table.byteOffset, this.table.byteLength);
    if (!restore) {
      this.table.fill(0);
      this.pba.fill(0);
      // Every vector starts masked (PCI spec: Mask Bit resets to 1).
      for (let v = 0; v < size; v++)
        this.#view.setUint32(
          v * ENTRY + PCI.PCI_MSIX_ENTRY_VECTOR_CTRL,
          PCI.PCI_MSIX_ENTRY_CTRL_MASKBIT,
          true,
        );
    }
  }

  static pbaBytes(size: number): number {
    return Math.ceil(size / 64) * 8;
  }
  get tableBytes(): number {
    return this.size * ENTRY;
  }

  addressLo(v: number): number {
    return this.#view.getUint32(v * ENTRY + PCI.PCI_MSIX_ENTRY_LOWER_ADDR, true);
  }
  addressHi(v: number): number {
    return this.#view.getUint32(v * ENTRY + PCI.PCI_MSIX_ENTRY_UPPER_ADDR, true);
  }
  data(v: number): number {
    return this.#view.getUint32(v * ENTRY + PCI.PCI_MSIX_ENTRY_DATA, true);
  }
  masked(v: number): boolean {
    return (
      (this.#view.getUint32(v * ENTRY + PCI.PCI_MSIX_ENTRY_VECTOR_CTRL, true) &
        PCI.PCI_MSIX_ENTRY_CTRL_MASKBIT) !==
      0
    );
  }

  pending(v: number): boolean {
    return (this.pba[v >> 3]! & (1 << (v & 7))) !== 0;
  }
  setPending(v: number, on: boolean): void {
    if (on) this.pba[v >> 3]! |= 1 << (v & 7);
    else this.pba[v >> 3]! &= ~(1 << (v & 7));
  }

  /** Is [offset, offset+size) a valid access inside a region of `bytes`? */
  static fits(offset: number, size: number, bytes: number): boolean {
    return (
      (size === 1 || size === 2 || size === 4 || size === 8) &&
      offset % size === 0 &&
      offset >= 0 &&
      offset + size <= bytes
    );
  }

  // Byte copies, not subarray views: these run per guest access and must not allocate.
  readTable(offset: number, dst: Uint8Array, size: number): void {
    for (let i = 0; i < size; i++) dst[i] = this.table[offset + i]!;
  }

  writeTable(offset: number, src: Uint8Array, size: number): void {
    const first = Math.floor(offset / ENTRY),
      last = Math.floor((offset + size - 1) / ENTRY);
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      // Only the Mask Bit of vector control is writable; the rest of that dword is reserved.
      if (at % ENTRY >= PCI.PCI_MSIX_ENTRY_VECTOR_CTRL) {
        if (at % ENTRY === PCI.PCI_MSIX_ENTRY_VECTOR_CTRL)
          this.table[at] = (this.table[at]! & ~1) | (src[i]! & 1);
      } else this.table[at] = src[i]!;
    }
    for (let v = first; v <= last; v++) this.listener?.vectorChanged(v);
  }

  readPba(offset: number, dst: Uint8Array, size: number): void {
    this.listener?.pbaRead?.();
    for (let i = 0; i < size; i++) dst[i] = this.pba[offset + i]!;
  }
}
