// What firmware would do for the assigned devices before the kernel starts: give each BAR an
// address (32-bit memory BARs in the hole below the IOAPIC, largest first, each aligned to its
// size; I/O BARs from 0xc000), turn on memory/IO decoding, and wire INTx to an IOAPIC pin
// (written to the interrupt line register). The guest may move BARs later; pci-bus.ts follows.
import { PCI } from '../../native/pci-regs.js';
import type { DeviceDescription, RingClient } from '../index.js';
import { PCI_IO_END, PCI_IO_START, PCI_MMIO32_END, PCI_MMIO32_START } from './memory-map.js';
import { KIND_IO, KIND_MEM32, KIND_MEM64 } from './pci-bus.js';
import { BAR, BARS } from './shared.js';

export interface PlacedDevice {
  slot: number;
  pin: number;
  ioapicPin: number;
}

export class BarAllocator {
  #mem = PCI_MMIO32_START;
  #io = PCI_IO_START;

  place(size: number, io: boolean, what: string): number {
    const align = (a: number, n: number): number => Math.ceil(a / n) * n;
    const at = align(io ? this.#io : this.#mem, io ? Math.max(size, 4) : Math.max(size, 4096));
    const end = at + size;
    if (end > (io ? PCI_IO_END : PCI_MMIO32_END)) {
      const limit = (io ? PCI_IO_END : PCI_MMIO32_END).toString(16);
      throw new Error(
        `${what}: no room for a ${size}-byte ${io ? 'I/O' : 'memory'} BAR below 0x${limit}`,
      );
    }
    if (io) this.#io = end;
    else this.#mem = end;
    return at;
  }
}

/** Program device `index` (slot index+1): BARs, decoding, interrupt line. Fills its rows of the BAR map. */
export function placeDevice(
  c: RingClient,
  d: DeviceDescription,
  index: number,
  ioapicPin: number,
  alloc: BarAllocator,
  bars: Float64Array,
): PlacedDevice {
  const slot = index + 1;
  const list = [...d.bars]
    .filter((b) => Number(b.size) > 0)
    .sort((a, b) => Number(b.size) - Number(a.size));
  let cmd = c.cfgRead(PCI.PCI_COMMAND, 2) & ~(PCI.PCI_COMMAND_MEMORY | PCI.PCI_COMMAND_IO);
  c.cfgWrite(PCI.PCI_COMMAND, 2, cmd); // decoding off while the BARs move
  for (const b of list) {
    const size = Number(b.size);
    const at = alloc.place(size, b.io, `${d.name} BAR${b.index}`);
    c.cfgWrite(0x10 + 4 * b.index, 4, at);
    if (b.is64) c.cfgWrite(0x14 + 4 * b.index, 4, 0);
    const row = (index * BARS + b.index) * BAR.WORDS;
    bars[row + BAR.SIZE] = size;
    bars[row + BAR.KIND] = b.io ? KIND_IO : b.is64 ? KIND_MEM64 : KIND_MEM32;
    cmd |= b.io ? PCI.PCI_COMMAND_IO : PCI.PCI_COMMAND_MEMORY;
  }
  c.cfgWrite(PCI.PCI_COMMAND, 2, cmd);
  const pin = c.cfgRead(PCI.PCI_INTERRUPT_PIN, 1);
  c.cfgWrite(PCI.PCI_INTERRUPT_LINE, 1, pin ? ioapicPin : 0xff);
  return { slot, pin, ioapicPin };
}
