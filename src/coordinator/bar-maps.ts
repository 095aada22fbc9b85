// The BAR fast path's mmaps, owned by the runtime: each mappable area of a device's BARs
// (DeviceDescription.bars[i].mappable: whole pages, less the MSI-X table and PBA) mapped shared
// and read-write from the device fd, for a VMM to put into a KVM memory slot. Unmapped by
// Runtime.unmapBarAreas (a VMM's, once its slots over them are deleted), and before the device
// goes (removeDevice, shutdown), so no mapping outlives its device.
import { SysError } from '../../native/errno.js';
import { C, errno, MAP_FAILED, raw, type Target } from '../../native/libc.js';
import type { DeviceDescription } from '../device/assigned-device.js';

/** One mapped area of a BAR. */
export interface BarAreaMapping {
  readonly bar: number;
  /** Its index among the BAR's mappable areas. */
  readonly area: number;
  /** Where the area starts in the BAR, and its size (bytes, whole pages). */
  readonly offset: number;
  readonly size: number;
  /** Where it is mapped in this process. */
  readonly hva: bigint;
}

export class BarMaps {
  readonly #byPort = new Map<string, BarAreaMapping[]>();

  /** Map the areas of `bars` (at most `maxPerBar` per BAR) from `device`; all or, on a failure, the earlier ones kept for unmap(). */
  map(
    port: string,
    device: Target,
    bars: DeviceDescription['bars'],
    maxPerBar = Number.POSITIVE_INFINITY,
  ): readonly BarAreaMapping[] {
    const out: BarAreaMapping[] = [];
    this.#byPort.set(port, out);
    for (const b of bars) {
      for (const [area, [start, end]] of b.mappable.slice(0, maxPerBar).entries()) {
        const size = end - start,
          at = BigInt(b.regionOffset) + BigInt(start);
        const hva = raw.mmap(null, size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, device.fd, at);
        if (hva === MAP_FAILED || hva === 0n)
          throw new SysError('mmap', `${device.path} (BAR area at 0x${at.toString(16)})`, errno());
        out.push({ bar: b.index, area, offset: start, size, hva });
      }
    }
    return [...out];
  }

  has(port: string): boolean {
    return this.#byPort.has(port);
  }

  unmap(port: string): void {
    for (const m of this.#byPort.get(port) ?? []) raw.munmap(m.hva, m.size);
    this.#byPort.delete(port);
  }

  clear(): void {
    for (const port of [...this.#byPort.keys()]) this.unmap(port);
  }
}
