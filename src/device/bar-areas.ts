// Which parts of a BAR a VMM may map straight into the guest (the BAR fast path) and which must
// still trap: from the region's VFIO flags and sparse-mmap areas, less the MSI-X table and PBA
// pages, which the runtime emulates (even when the kernel reports them mappable, MSIX_MAPPABLE:
// the guest's vector writes must reach the runtime's table, not the device's). Pure arithmetic.

/** x86's page: the granule of both mmap and KVM memory slots. */
export const BAR_PAGE = 4096;

/** [start, end) byte offsets inside a BAR. */
export type BarRange = [number, number];

export interface BarAreaInput {
  size: number;
  /** VFIO_REGION_INFO_FLAG_MMAP. */
  mmap: boolean;
  /** The VFIO_REGION_INFO_CAP_SPARSE_MMAP areas, when the kernel reported them. */
  sparse?: readonly { offset: number; size: number }[];
  /** The MSI-X table and PBA, where they sit in this BAR. */
  emulated?: readonly BarRange[];
  page?: number;
}

export interface BarAreas {
  /** Page-aligned ranges a VMM may mmap from the device fd and hand to the guest. */
  mappable: BarRange[];
  /** Everything else: accesses there go through the ring. */
  trapped: BarRange[];
}

export function barAreas(b: BarAreaInput): BarAreas {
  const page = b.page ?? BAR_PAGE;
  let areas: BarRange[] = !b.mmap
    ? []
    : b.sparse
      ? b.sparse.map((a) => [a.offset, a.offset + a.size] as BarRange)
      : [[0, b.size]];
  // Whole pages only, inside the BAR.
  areas = areas
    .map(
      ([s, e]): BarRange => [roundUp(s, page), Math.min(e, b.size) - (Math.min(e, b.size) % page)],
    )
    .filter(([s, e]) => e > s);
  for (const [s, e] of b.emulated ?? []) {
    if (e <= s) continue;
    areas = subtract(areas, [s - (s % page), roundUp(e, page)]);
  }
  const mappable = merge(areas);
  return { mappable, trapped: subtract([[0, b.size]], ...mappable) };
}

const roundUp = (x: number, page: number): number => Math.ceil(x / page) * page;

/** `from` less each of `cut`, in order, empty pieces dropped. */
function subtract(from: readonly BarRange[], ...cut: BarRange[]): BarRange[] {
  let out = [...from];
  for (const [cs, ce] of cut) {
    out = out.flatMap(([s, e]): BarRange[] => {
      if (ce <= s || e <= cs) return [[s, e]];
      const left: BarRange[] = cs > s ? [[s, cs]] : [];
      return ce < e ? [...left, [ce, e]] : left;
    });
  }
  return out;
}

/** Sorted, with touching or overlapping ranges joined. */
function merge(ranges: readonly BarRange[]): BarRange[] {
  const out: BarRange[] = [];
  for (const [s, e] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}
