// The guest's physical address map: where RAM, the boot structures, the MMIO hole and the PCI
// BAR windows are. One place, so the e820 map, the MP table and the BAR placement agree.

export const MiB = 0x100000;
export const GiB = 0x40000000;

/** RAM below 4 GiB ends here at most; the rest goes above 4 GiB (as QEMU's q35 does). */
export const MMIO_HOLE_START = 0xc000_0000;
export const HIGH_RAM_START = 0x1_0000_0000;

/** Boot structures in low RAM (Firecracker's places; all below the EBDA). */
export const GDT_ADDR = 0x500;
export const ZERO_PAGE_ADDR = 0x7000;
export const BOOT_STACK_ADDR = 0x8ff0;
export const CMDLINE_ADDR = 0x20000;
/** Last KiB of base memory: the MP floating pointer goes here (Linux scans 639 KiB..640 KiB). */
export const EBDA_START = 0x9fc00;
export const BIOS_END = 0x100000;
export const KERNEL_LOAD_ADDR = 0x100000;

/** In-kernel irqchip's fixed addresses. */
export const IOAPIC_ADDR = 0xfec0_0000;
export const LAPIC_ADDR = 0xfee0_0000;

/**
 * KVM (VMX) wants one page for its real-mode identity page table and three for the TSS; QEMU
 * puts them just below the BIOS flash at 0xfeffc000. Reserved in e820 so the guest leaves them.
 */
export const IDENTITY_MAP_ADDR = 0xfeff_c000;
export const TSS_ADDR = 0xfeff_d000;
export const KVM_PRIVATE_END = 0xff00_0000;

/** Where the VMM places 32-bit memory BARs: the hole up to the IOAPIC. */
export const PCI_MMIO32_START = MMIO_HOLE_START;
export const PCI_MMIO32_END = 0xfec0_0000;
/** I/O-port BARs go above the legacy ports. */
export const PCI_IO_START = 0xc000;
export const PCI_IO_END = 0x10000;

export interface RamRange {
  gpa: number;
  size: number /** offset in the memfd */;
  offset: number;
}

/** Guest RAM of `total` bytes: below the hole, then above 4 GiB. */
export function ramRanges(total: number): RamRange[] {
  const low = Math.min(total, MMIO_HOLE_START);
  const out: RamRange[] = [{ gpa: 0, size: low, offset: 0 }];
  if (total > low) out.push({ gpa: HIGH_RAM_START, size: total - low, offset: low });
  return out;
}

export const E820_RAM = 1;
export const E820_RESERVED = 2;
export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The e820 map the guest gets: RAM, the EBDA/BIOS area and KVM's pages reserved, the MMIO hole free. */
export function e820Map(total: number): E820Entry[] {
  const [low, high] = ramRanges(total);
  const out: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: BIOS_END - EBDA_START, type: E820_RESERVED },
    { addr: BIOS_END, size: low!.size - BIOS_END, type: E820_RAM },
    { addr: IDENTITY_MAP_ADDR, size: KVM_PRIVATE_END - IDENTITY_MAP_ADDR, type: E820_RESERVED },
  ];
  if (high) out.push({ addr: high.gpa, size: high.size, type: E820_RAM });
  return out;
}
