// The guest's view of its message-signalled vectors, read where the worker emulates them: MSI-X
// from the emulated table/PBA and the message control word; MSI from the emulated capability
// (enable, multiple message enable, address, data, and the mask/pending bits when per-vector
// masking exists). VectorSet reads these; nothing here touches the device.
import { PCI } from '../../native/pci-regs.js';
import { VFIO_C } from '../../native/vfio.js';
import type { MsiMessage } from './gsi-router.js';
import type { InterruptConfigView, MsiCapability, MsixTableView } from './guest-views.js';
import { SRC } from './irq-state.js';
import type { VectorSource } from './vector-set.js';

export class MsixVectors implements VectorSource {
  readonly kind = 'msix';
  readonly vfioIndex = VFIO_C.VFIO_PCI_MSIX_IRQ_INDEX;
  readonly base = SRC.MSIX;
  readonly allAtOnce = false;
  readonly size: number;

  constructor(
    readonly table: MsixTableView,
    readonly config: InterruptConfigView,
    vfioCount: number,
  ) {
    this.size = Math.min(table.size, vfioCount);
  }

  enabled(): boolean {
    return this.config.msixEnabled;
  }
  active(): number {
    return this.size;
  }
  deliverable(v: number): boolean {
    return this.config.msixEnabled && !this.config.msixFunctionMasked && !this.table.masked(v);
  }
  message(v: number, out: MsiMessage): void {
    out.lo = this.table.addressLo(v);
    out.hi = this.table.addressHi(v);
    out.data = this.table.data(v);
  }
  pending(v: number): boolean {
    return this.table.pending(v);
  }
  setPending(v: number, on: boolean): void {
    this.table.setPending(v, on);
  }
}

export class MsiVectors implements VectorSource {
  readonly kind = 'msi';
  readonly vfioIndex = VFIO_C.VFIO_PCI_MSI_IRQ_INDEX;
  readonly base = SRC.MSI;
  readonly allAtOnce = true;
  readonly size: number;
  readonly #cap: MsiCapability;
  readonly #dataOff: number;
  readonly #maskOff: number;
  /** Pending bits of a capability without per-vector masking (the guest cannot see them). */
  #pendingBits = 0;

  constructor(
    readonly config: InterruptConfigView,
    vfioCount: number,
  ) {
    const cap = config.msi;
    if (!cap) throw new Error('the device has no MSI capability');
    this.#cap = cap;
    this.size = Math.min(cap.vectors, vfioCount, 32);
    this.#dataOff = cap.offset + (cap.is64 ? PCI.PCI_MSI_DATA_64 : PCI.PCI_MSI_DATA_32);
    this.#maskOff = cap.offset + (cap.is64 ? PCI.PCI_MSI_MASK_64 : PCI.PCI_MSI_MASK_32);
  }

  #ctl(): number {
    return this.config.virt16(this.#cap.offset + PCI.PCI_MSI_FLAGS);
  }
  enabled(): boolean {
    return (this.#ctl() & PCI.PCI_MSI_FLAGS_ENABLE) !== 0;
  }
  active(): number {
    return Math.min(1 << ((this.#ctl() & PCI.PCI_MSI_FLAGS_QSIZE) >> 4), this.size);
  }

  deliverable(v: number): boolean {
    if (!this.enabled() || v >= this.active()) return false;
    return !this.#cap.maskable || ((this.config.virt32(this.#maskOff) >>> v) & 1) === 0;
  }

  message(v: number, out: MsiMessage): void {
    const c = this.config,
      n = this.active();
    out.lo = c.virt32(this.#cap.offset + PCI.PCI_MSI_ADDRESS_LO);
    out.hi = this.#cap.is64 ? c.virt32(this.#cap.offset + PCI.PCI_MSI_ADDRESS_HI) : 0;
    // With multiple messages the device puts the vector number in the low bits of the data.
    out.data = (c.virt16(this.#dataOff) & ~(n - 1)) | v;
  }

  pending(v: number): boolean {
    const bits = this.#cap.maskable ? this.config.virt32(this.#maskOff + 4) : this.#pendingBits;
    return ((bits >>> v) & 1) === 1;
  }

  setPending(v: number, on: boolean): void {
    if (!this.#cap.maskable) {
      this.#pendingBits = on ? this.#pendingBits | (1 << v) : this.#pendingBits & ~(1 << v);
      return;
    }
    const off = this.#maskOff + 4,
      old = this.config.virt32(off);
    const bits = (on ? old | (1 << v) : old & ~(1 << v)) >>> 0;
    for (let k = 0; k < 4; k++) this.config.virt[off + k] = (bits >>> (8 * k)) & 0xff;
  }
}
