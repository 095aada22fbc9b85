// A DmaBackend without a kernel, for unit tests of what sits above the interface: it keeps
// mappings the way iommufd does (EEXIST on overlap, EINVAL outside the allowed ranges, ENOENT
// for an unmap that would cut a mapping), records every call, and simulates devices coming
// and going with the ranges they leave. `failNextMap` injects a kernel error.

import { errnoNumber, SysError } from '../../native/errno.js';
import {
  type AttachedDevice,
  type BackendListener,
  BackendListeners,
  type DmaBackend,
  type DmaMapping,
  type GuestMemorySource,
} from '../../src/dma/backend.js';
import {
  findFreeIova,
  type IovaRange,
  spanEnd,
  spanInRanges,
  spansOverlap,
  U64_MAX,
} from '../../src/dma/iova-ranges.js';
import type { MapRunner } from '../../src/dma/map-offload.js';

export type FakeCall =
  | { op: 'map'; iova: bigint; length: bigint; memory: GuestMemorySource }
  | { op: 'unmap'; iova: bigint; length: bigint; bytes: bigint };

export class FakeBackend implements DmaBackend {
  readonly kind: 'iommufd' | 'container';
  calls: FakeCall[] = [];
  failNextMap: string | undefined;
  #mapped: DmaMapping[] = [];
  #devices = 0;
  #ranges: readonly IovaRange[] = [];
  readonly #listeners = new BackendListeners();

  constructor(
    readonly name: string,
    kind: 'iommufd' | 'container' = 'iommufd',
  ) {
    this.kind = kind;
  }

  get active(): boolean {
    return this.#devices > 0;
  }
  allowedRanges(): readonly IovaRange[] {
    return this.#ranges;
  }
  iovaAlignment(): bigint {
    return 0x1000n;
  }
  mappings(): readonly DmaMapping[] {
    return this.#mapped;
  }
  subscribe(l: BackendListener): () => void {
    return this.#listeners.add(l);
  }

  /** A device arrives and the ranges become `ranges` (narrowing is allowed here, unlike the kernel). */
  attach(ranges: readonly IovaRange[]): void {
    this.#devices++;
    this.#ranges = ranges;
    try {
      this.#listeners.emit({ kind: 'ranges', ranges, alignment: 0x1000n }, this);
    } catch (e) {
      this.detach(ranges);
      throw e;
    }
  }

  /** A device leaves; the last one takes the address space and every mapping with it. */
  detach(ranges: readonly IovaRange[] = this.#ranges): void {
    this.#devices--;
    if (this.#devices === 0) {
      this.#mapped = [];
      this.#ranges = [];
      this.#listeners.emit({ kind: 'emptied' }, this);
    } else {
      this.#ranges = ranges;
      this.#listeners.emit({ kind: 'ranges', ranges, alignment: 0x1000n }, this);
    }
  }

  /** The runner decides when (and whether) the "kernel call" completes; then it is mapFixed. */
  async mapFixedOffloaded(
    iova: bigint,
    length: bigint,
    memory: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void> {
    const r = await run(
      { op: 'IOMMU_IOAS_MAP', fd: -1, path: this.name, ioas: 0, va: 0n, length, iova },
      signal,
    );
    if (!r.ok) throw new SysError('FAKE_MAP', this.name, r.errno);
    this.mapFixed(iova, length, memory);
  }

  mapFixed(iova: bigint, length: bigint, memory: GuestMemorySource): void {
    if (this.failNextMap) {
      const code = this.failNextMap;
      this.failNextMap = undefined;
      throw new SysError('FAKE_MAP', this.name, errnoNumber(code));
    }
    const span = { iova, length };
    if (!spanInRanges(span, this.#ranges))
      throw new SysError('FAKE_MAP', this.name, errnoNumber('EINVAL'));
    if (this.#mapped.some((m) => spansOverlap(m, span)))
      throw new SysError('FAKE_MAP', this.name, errnoNumber('EEXIST'));
    this.#mapped.push({ iova, length, memory });
    this.calls.push({ op: 'map', iova, length, memory });
  }

  mapAnywhere(length: bigint, memory: GuestMemorySource): bigint {
    const iova = findFreeIova(this.#ranges, this.#mapped, length, 0x1000n);
    if (iova === undefined) throw new SysError('FAKE_MAP', this.name, errnoNumber('ENOSPC'));
    this.mapFixed(iova, length, memory);
    return iova;
  }

  unmap(iova: bigint, length: bigint): bigint {
    const span = { iova, length };
    if (
      this.#mapped.some(
        (m) => spansOverlap(m, span) && (m.iova < iova || spanEnd(m) > spanEnd(span)),
      )
    )
      throw new SysError('FAKE_UNMAP', this.name, errnoNumber('ENOENT'));
    const gone = this.#mapped.filter((m) => spansOverlap(m, span));
    this.#mapped = this.#mapped.filter((m) => !gone.includes(m));
    const bytes = gone.reduce((n, m) => n + m.length, 0n);
    this.calls.push({ op: 'unmap', iova, length, bytes });
    return bytes;
  }

  unmapAll(): bigint {
    return this.unmap(0n, U64_MAX);
  }

  attachPciDevice(bdf: string): AttachedDevice {
    throw new Error(`the fake backend cannot open ${bdf}`);
  }

  /** The kernel-side truth: is every byte of [iova, iova+length) mapped here? */
  has(iova: bigint, length: bigint): boolean {
    let at = iova;
    for (const m of [...this.#mapped].sort((a, b) => (a.iova < b.iova ? -1 : 1)))
      if (m.iova <= at && spanEnd(m) > at) at = spanEnd(m);
    return at >= iova + length;
  }
}
