// The coordinator's guest-memory mapping table. The hosting VMM registers guest RAM regions
// (GPA, size, and the memory: a memfd or a host address); the table maps each at IOVA == GPA
// into EVERY DMA backend, split around that backend's holes, and records each map call (so
// it unmaps exactly what it mapped). Regions come and go while devices run; a backend added
// later, or one whose first device just attached, gets every region mapped; when a backend's
// ranges change the table re-checks its mappings. isMapped()/translate() answer "is this DMA
// address inside a registered mapping" before anything trusts an address a device was given.

import { ConflictError, InvalidSpecError, NotFoundError, withHint } from '../errors.js';
import {
  advanceSource,
  type BackendEvent,
  type DmaBackend,
  type GuestMemorySource,
} from './backend.js';
import {
  alignRanges,
  checkSpan,
  formatSize,
  formatSpan,
  hex,
  IovaHoleError,
  type IovaRange,
  type IovaSpan,
  isAligned,
  PAGE_SIZE,
  spanEnd,
  spanInRanges,
  spansOverlap,
  splitGuestRange,
  subtractSpans,
} from './iova-ranges.js';
import type { MapRunner } from './map-offload.js';

export interface GuestRegionSpec {
  /** For messages; defaults to ram@<gpa>. */
  readonly name?: string;
  readonly gpa: bigint;
  readonly size: bigint;
  readonly memory: GuestMemorySource;
}

/** A registered region; as an IovaSpan its iova/length repeat gpa/size (IOVA == GPA). */
export interface GuestRegion extends IovaSpan {
  readonly id: number;
  readonly name: string;
  readonly gpa: bigint;
  readonly size: bigint;
  readonly memory: GuestMemorySource;
}

/** One map call the table made: a piece of a region, at IOVA == GPA. */
export interface TableMapping extends IovaSpan {
  readonly region: GuestRegion;
}

/** What a re-check of one backend found and did. */
export interface RecheckReport {
  readonly backend: DmaBackend;
  readonly ranges: readonly IovaRange[];
  /** Mappings the backend's new ranges no longer allow; the table unmapped them. */
  readonly invalidated: readonly TableMapping[];
  /** Pieces mapped by this re-check: the backend just became active, or its ranges widened. */
  readonly added: readonly TableMapping[];
  /** Mappings the kernel dropped with the address space (the backend's last device left). */
  readonly dropped: readonly TableMapping[];
}

export interface GuestMemoryOptions {
  /** Told after every re-check that changed something (device attach/detach on a backend). */
  readonly onRecheck?: (report: RecheckReport) => void;
}

export interface Translation {
  readonly region: GuestRegion;
  /** Offset of the address inside the region. */
  readonly offset: bigint;
  /** The host virtual address of the guest-physical address. */
  readonly hva: bigint;
  /** Bytes from the address to the end of the region. */
  readonly remaining: bigint;
}

interface BackendState {
  mappings: TableMapping[];
  unsubscribe: () => void;
}

const byIova = (a: IovaSpan, b: IovaSpan): number =>
  a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0;
const describe = (b: DmaBackend): string => `${b.kind} '${b.name}'`;

/** Index of the last span starting at or before `iova` in a sorted, non-overlapping list; -1 if none. */
function lastAtOrBefore(sorted: readonly IovaSpan[], iova: bigint): number {
  let lo = 0,
    hi = sorted.length - 1,
    found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]!.iova <= iova) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** Whether sorted, non-overlapping spans cover [iova, iova+length) without a gap. */
function coveredBySorted(sorted: readonly IovaSpan[], iova: bigint, length: bigint): boolean {
  let i = lastAtOrBefore(sorted, iova);
  let at = iova;
  const end = iova + length;
  while (i >= 0 && i < sorted.length) {
    const s = sorted[i]!;
    if (s.iova > at || spanEnd(s) <= at) return false;
    at = spanEnd(s);
    if (at >= end) return true;
    i++;
  }
  return false;
}

export class GuestMemory {
  #regions: GuestRegion[] = [];
  readonly #backends = new Map<DmaBackend, BackendState>();
  #nextId = 1;

  constructor(private readonly options: GuestMemoryOptions = {}) {}

  regions(): readonly GuestRegion[] {
    return this.#regions;
  }
  backends(): DmaBackend[] {
    return [...this.#backends.keys()];
  }

  /** Every map call the table made into `backend`, by IOVA. */
  mappingsOf(backend: DmaBackend): readonly TableMapping[] {
    return this.#state(backend).mappings;
  }

  /** The parts of registered guest RAM that are not mapped in `backend` (its holes, or all of it while it is inactive). */
  unmappedIn(backend: DmaBackend): IovaSpan[] {
    return subtractSpans(this.#regions, this.#state(backend).mappings);
  }

  #state(backend: DmaBackend): BackendState {
    const st = this.#backends.get(backend);
    if (!st)
      throw new Error(
        `${describe(backend)} is not a backend of this guest-memory table: addBackend() it first`,
      );
    return st;
  }

  // ---------------------------------------------------------------- regions

  /** Register a guest RAM region and map it into every active backend; on any failure nothing stays mapped. */
  addRegion(spec: GuestRegionSpec): GuestRegion {
    const region = this.#planRegion(spec);
    const done: [DmaBackend, TableMapping[]][] = [];
    try {
      for (const [b, st] of this.#backends) {
        if (b.active)
          done.push([
            b,
            this.#mapPieces(
              b,
              st,
              region,
              splitGuestRange(region, b.allowedRanges(), this.#splitOptions(b)).pieces,
            ),
          ]);
      }
    } catch (e) {
      for (const [b, made] of done) this.#undo(b, made);
      throw e;
    }
    this.#regions = [...this.#regions, region].sort(byIova) as GuestRegion[];
    return region;
  }

  /**
   * Unmap a region from every backend, exactly as it was mapped, and forget it. Returns the
   * bytes each backend's kernel reported unmapped. If an unmap fails the region stays
   * registered with what is still mapped (its memory must stay allocated), and the error says so.
   */
  removeRegion(which: GuestRegion | bigint): Map<DmaBackend, bigint> {
    const region =
      typeof which === 'bigint'
        ? this.#regions.find((r) => r.gpa === which)
        : this.#regions.find((r) => r.id === which.id);
    if (!region) {
      const what =
        typeof which === 'bigint' ? `starts at GPA ${hex(which)}` : `'${which.name}' is registered`;
      throw new NotFoundError(
        `no guest region ${what}`,
        'region',
        typeof which === 'bigint' ? hex(which) : which.name,
      );
    }
    const unmapped = new Map<DmaBackend, bigint>();
    let firstError: unknown;
    const failed: string[] = [];
    for (const [b, st] of this.#backends) {
      let bytes = 0n;
      for (const m of st.mappings.filter((x) => x.region === region)) {
        try {
          bytes += b.unmap(m.iova, m.length);
          st.mappings = st.mappings.filter((x) => x !== m);
        } catch (e) {
          firstError ??= e;
          failed.push(`${formatSpan(m)} in ${describe(b)}`);
        }
      }
      unmapped.set(b, bytes);
    }
    if (failed.length)
      throw withHint(
        firstError,
        `guest region '${region.name}' stays registered: ${failed.join(', ')} could not be unmapped`,
      );
    this.#regions = this.#regions.filter((r) => r !== region);
    return unmapped;
  }

  // ---------------------------------------------------------------- backends

  /** Add a backend; if it is active, map every registered region into it now (all or nothing). */
  addBackend(backend: DmaBackend): void {
    if (this.#backends.has(backend))
      throw new Error(`${describe(backend)} is already a backend of this guest-memory table`);
    const st: BackendState = { mappings: [], unsubscribe: () => {} };
    if (backend.active) {
      try {
        for (const r of this.#regions)
          this.#mapPieces(
            backend,
            st,
            r,
            splitGuestRange(r, backend.allowedRanges(), this.#splitOptions(backend)).pieces,
          );
      } catch (e) {
        this.#undo(backend, st.mappings);
        throw e;
      }
    }
    st.unsubscribe = backend.subscribe((event) => this.#onEvent(backend, event));
    this.#backends.set(backend, st);
  }

  /** Unmap everything the table mapped into `backend`, exactly, and stop following it. */
  removeBackend(backend: DmaBackend): void {
    const st = this.#state(backend);
    let firstError: unknown;
    for (const m of [...st.mappings]) {
      try {
        backend.unmap(m.iova, m.length);
        st.mappings = st.mappings.filter((x) => x !== m);
      } catch (e) {
        firstError ??= e;
      }
    }
    if (firstError !== undefined)
      throw withHint(
        firstError,
        `${describe(backend)} stays in the table: ${st.mappings.length} mapping(s) could not be unmapped`,
      );
    st.unsubscribe();
    this.#backends.delete(backend);
  }

  /** Remove every region and backend (unmapping exactly what the table mapped). */
  close(): void {
    for (const r of [...this.#regions]) this.removeRegion(r);
    for (const b of this.backends()) this.removeBackend(b);
  }

  #onEvent(backend: DmaBackend, event: BackendEvent): void {
    const st = this.#state(backend);
    if (event.kind === 'emptied') {
      const dropped = st.mappings;
      st.mappings = [];
      if (dropped.length)
        this.options.onRecheck?.({ backend, ranges: [], invalidated: [], added: [], dropped });
      return;
    }
    this.recheck(backend);
  }

  /**
   * Bring `backend` in line with its current ranges: unmap mappings they no longer allow and
   * map the parts of every region they now allow that are not mapped yet. A region the
   * backend cannot map at all is an error (the change that caused it is undone by the
   * backend); so is a failed map, after this re-check's own maps are undone.
   */
  recheck(backend: DmaBackend): RecheckReport {
    const st = this.#state(backend);
    const ranges = backend.active ? backend.allowedRanges() : [];
    const empty: RecheckReport = { backend, ranges, invalidated: [], added: [], dropped: [] };
    if (!backend.active) return empty;
    const opts = this.#splitOptions(backend);
    const allowed = alignRanges(ranges, opts.alignment);
    const invalidated = st.mappings.filter((m) => !spanInRanges(m, allowed));
    for (const m of invalidated) {
      // Kernels refuse an attach that would strand a mapping, so this is defence: a mapping
      // that will not unmap stays recorded, because the kernel still has it.
      try {
        backend.unmap(m.iova, m.length);
        st.mappings = st.mappings.filter((x) => x !== m);
      } catch {
        /* reported in invalidated */
      }
    }
    const added: TableMapping[] = [];
    try {
      for (const r of this.#regions) {
        const { pieces } = splitGuestRange(r, ranges, opts);
        const missing = subtractSpans(
          pieces,
          st.mappings.filter((m) => m.region === r),
        );
        added.push(...this.#mapPieces(backend, st, r, missing));
      }
    } catch (e) {
      this.#undo(backend, added);
      throw e instanceof IovaHoleError
        ? e
        : withHint(e, `re-checking guest memory in ${describe(backend)}`);
    }
    const report = { ...empty, invalidated, added };
    if (invalidated.length || added.length) this.options.onRecheck?.(report);
    return report;
  }

  /**
   * addRegion with the kernel calls made on a pool thread (`run`, e.g. MapOffload.run), in
   * chunks of `chunkBytes`, so pinning gigabytes neither blocks this event loop nor runs
   * uncancellable: `signal` stops it between chunks (the chunk in flight finishes in the
   * kernel) and everything mapped so far is unmapped. `onProgress` hears bytes done of total.
   */
  async addRegionAsync(
    spec: GuestRegionSpec,
    o: {
      run: MapRunner;
      signal?: AbortSignal;
      chunkBytes?: bigint;
      onProgress?: (done: bigint, total: bigint) => void;
    },
  ): Promise<GuestRegion> {
    const chunk = o.chunkBytes ?? 256n << 20n;
    if (chunk <= 0n || chunk % PAGE_SIZE !== 0n)
      throw new RangeError(
        `addRegionAsync: chunkBytes must be a positive multiple of ${PAGE_SIZE}`,
      );
    // Validate and place the region exactly as addRegion does, mapping nothing yet.
    const region = this.#planRegion(spec);
    const plan: [DmaBackend, BackendState, IovaSpan[]][] = [];
    for (const [b, st] of this.#backends) {
      if (!b.active) continue;
      const pieces: IovaSpan[] = [];
      for (const p of splitGuestRange(region, b.allowedRanges(), this.#splitOptions(b)).pieces) {
        for (let at = p.iova; at < spanEnd(p); at += chunk)
          pieces.push({ iova: at, length: spanEnd(p) - at < chunk ? spanEnd(p) - at : chunk });
      }
      plan.push([b, st, pieces]);
    }
    const total = plan.reduce((n, [, , ps]) => n + ps.reduce((m, p) => m + p.length, 0n), 0n);
    let done = 0n;
    const made: [DmaBackend, BackendState, TableMapping[]][] = [];
    try {
      for (const [b, st, pieces] of plan) {
        const mine: TableMapping[] = [];
        made.push([b, st, mine]);
        for (const p of pieces) {
          if (o.signal?.aborted)
            throw (
              o.signal.reason ?? new Error(`mapping guest region '${region.name}' was cancelled`)
            );
          try {
            await b.mapFixedOffloaded(
              p.iova,
              p.length,
              advanceSource(region.memory, p.iova - region.gpa),
              o.run,
              o.signal,
            );
          } catch (e) {
            throw withHint(
              e,
              `mapping ${formatSpan(p)} of guest region '${region.name}' into ${describe(b)}`,
            );
          }
          const m: TableMapping = { iova: p.iova, length: p.length, region };
          mine.push(m);
          st.mappings = [...st.mappings, m].sort(byIova);
          done += p.length;
          o.onProgress?.(done, total);
        }
      }
    } catch (e) {
      for (const [b, st, mine] of made) this.#undo(b, mine, st);
      throw e;
    }
    if (this.#regions.some((r) => spansOverlap(r, region))) {
      for (const [b, st, mine] of made) this.#undo(b, mine, st);
      throw new RangeError(
        `guest region '${region.name}' ${formatSpan(region)} was overlapped by a region added while it was being mapped`,
      );
    }
    this.#regions = [...this.#regions, region].sort(byIova) as GuestRegion[];
    return region;
  }

  #planRegion(spec: GuestRegionSpec): GuestRegion {
    const span = { iova: spec.gpa, length: spec.size };
    const name = spec.name ?? `ram@${hex(spec.gpa)}`;
    checkSpan(`guest region '${name}'`, span);
    if (!isAligned(spec.gpa, PAGE_SIZE) || !isAligned(spec.size, PAGE_SIZE)) {
      throw new InvalidSpecError(
        `guest region '${name}' ${formatSpan(span)}: GPA and size must be multiples of the ${formatSize(PAGE_SIZE)} page size`,
      );
    }
    const mem = spec.memory;
    if (
      !isAligned(mem.hva, PAGE_SIZE) ||
      (mem.kind === 'memfd' && !isAligned(mem.offset, PAGE_SIZE))
    ) {
      throw new InvalidSpecError(
        `guest region '${name}': its memory must start on a page boundary (host address ${hex(mem.hva)}${mem.kind === 'memfd' ? `, memfd offset ${hex(mem.offset)}` : ''})`,
      );
    }
    const clash = this.#regions.find((r) => spansOverlap(r, span));
    if (clash) {
      throw new ConflictError(
        `guest region '${name}' ${formatSpan(span)} overlaps region '${clash.name}' ${formatSpan(clash)}`,
        'region',
        clash.name,
      );
    }
    const region: GuestRegion = {
      id: this.#nextId++,
      name,
      gpa: spec.gpa,
      size: spec.size,
      iova: spec.gpa,
      length: spec.size,
      memory: mem,
    };
    return region;
  }

  #splitOptions(b: DmaBackend): { alignment: bigint; where: string } {
    const a = b.iovaAlignment();
    return { alignment: a > PAGE_SIZE ? a : PAGE_SIZE, where: describe(b) };
  }

  /** Map pieces of a region (IOVA == GPA), one call each, recording them; on failure undo this call's maps. */
  #mapPieces(
    b: DmaBackend,
    st: BackendState,
    region: GuestRegion,
    pieces: readonly IovaSpan[],
  ): TableMapping[] {
    const made: TableMapping[] = [];
    for (const p of pieces) {
      try {
        b.mapFixed(p.iova, p.length, advanceSource(region.memory, p.iova - region.gpa));
      } catch (e) {
        this.#undo(b, made, st);
        throw withHint(
          e,
          `mapping ${formatSpan(p)} of guest region '${region.name}' into ${describe(b)}`,
        );
      }
      const m: TableMapping = { iova: p.iova, length: p.length, region };
      made.push(m);
      st.mappings = [...st.mappings, m].sort(byIova);
    }
    return made;
  }

  /** Best-effort unmap of mappings this table just made (rolling back a failed operation). */
  #undo(b: DmaBackend, made: readonly TableMapping[], st = this.#backends.get(b)): void {
    for (const m of made) {
      try {
        b.unmap(m.iova, m.length);
      } catch {
        /* the original error is the one to report */
      }
      if (st) st.mappings = st.mappings.filter((x) => x !== m);
    }
  }

  // ---------------------------------------------------------------- queries

  /**
   * Whether [iova, iova+length) is registered guest RAM mapped in `backend`; without a
   * backend, whether it is registered guest RAM mapped in every active backend.
   */
  isMapped(iova: bigint, length: bigint, backend?: DmaBackend): boolean {
    checkSpan('isMapped', { iova, length });
    if (backend) return coveredBySorted(this.#state(backend).mappings, iova, length);
    if (!coveredBySorted(this.#regions, iova, length)) return false;
    for (const [b, st] of this.#backends)
      if (b.active && !coveredBySorted(st.mappings, iova, length)) return false;
    return true;
  }

  /** The region holding guest-physical address `gpa` and its host address; undefined outside guest RAM. */
  translate(gpa: bigint): Translation | undefined {
    const region = this.#regions[lastAtOrBefore(this.#regions, gpa)];
    if (!region || gpa >= spanEnd(region)) return undefined;
    const offset = gpa - region.gpa;
    return { region, offset, hva: region.memory.hva + offset, remaining: region.size - offset };
  }
}
