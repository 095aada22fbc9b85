// One mappable area of an assigned device's BAR, mmapped from its VFIO device fd (shared, read
// and write): the memory a BAR fast-path KVM slot points at (bar-slots.ts). It owns the mapping;
// close() unmaps it, which must come after the slot is deleted and before the device fd closes.
import { SysError } from '../../native/errno.js';
import { C, errno, MAP_FAILED, raw } from '../../native/libc.js';
import type { BarRange } from '../device/bar-areas.js';

export class BarMapping {
  readonly hva: bigint;
  readonly offset: number;
  readonly size: number;
  #open = true;

  /** `regionOffset`: the BAR's region offset in the device fd; `area`: [start, end) in the BAR. */
  constructor(fd: number, path: string, port: string, regionOffset: bigint, area: BarRange) {
    this.offset = area[0];
    this.size = area[1] - area[0];
    const at = regionOffset + BigInt(this.offset);
    const hva = raw.mmap(null, this.size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, at);
    if (hva === MAP_FAILED || hva === 0n)
      throw new SysError(
        'mmap',
        `${path} (BAR area at 0x${at.toString(16)})`,
        errno(),
        `or trap this device's BARs instead: --no-mmap ${port} (VmOptions.noMmap)`,
      );
    this.hva = hva;
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    raw.munmap(this.hva, this.size);
  }
}
