// IOVA range arithmetic for the DMA layer, pure logic: the allowed ranges the kernel reports
// (inclusive {start,last}, as IOMMU_IOAS_IOVA_RANGES and Type1's IOVA-range capability give
// them), the holes between them, and the split of a guest range [gpa, gpa+size) into the
// pieces a backend may map. No window is hard-coded here: every hole (the x86 MSI window
// 0xfee00000-0xfeefffff among them) comes from the kernel's list.
import { IovaHoleError } from '../errors.js';

export const U64_MAX = (1n << 64n) - 1n;
/** The host page size this runtime maps in (x86_64); the kernel's reported alignment applies on top. */
export const PAGE_SIZE = 4096n;

/** An inclusive range, as the kernel reports allowed IOVAs. */
export interface IovaRange {
  readonly start: bigint;
  readonly last: bigint;
}
/** A half-open span [iova, iova+length), as guest ranges and map calls are given. */
export interface IovaSpan {
  readonly iova: bigint;
  readonly length: bigint;
}
/** A part of a guest range that may not be mapped, and the hole (complement of the allowed ranges) it lies in. */
export interface HoleHit extends IovaSpan {
  readonly hole: IovaRange;
}
export interface Split {
  readonly pieces: IovaSpan[];
  readonly skipped: HoleHit[];
}

export const hex = (n: bigint): string => `0x${n.toString(16)}`;
export const formatRange = (r: IovaRange): string => `${hex(r.start)}-${hex(r.last)}`;
export const formatSpan = (s: IovaSpan): string =>
  s.length === 0n ? `${hex(s.iova)} (empty)` : `${hex(s.iova)}-${hex(s.iova + s.length - 1n)}`;
export const formatRanges = (rs: readonly IovaRange[]): string =>
  rs.length ? rs.map(formatRange).join(', ') : 'none';
/** The first address after the span (may be 2^64). */
export const spanEnd = (s: IovaSpan): bigint => s.iova + s.length;
export const spanToRange = (s: IovaSpan): IovaRange => ({
  start: s.iova,
  last: s.iova + s.length - 1n,
});
export const rangeToSpan = (r: IovaRange): IovaSpan => ({
  iova: r.start,
  length: r.last - r.start + 1n,
});

/** Size in a form people read in error messages: 32 MiB, 4 KiB, 0x1234 bytes. */
export function formatSize(n: bigint): string {
  for (const [unit, shift] of [
    ['GiB', 30n],
    ['MiB', 20n],
    ['KiB', 10n],
  ] as const) {
    if (n >= 1n << shift && n % (1n << shift) === 0n) return `${n >> shift} ${unit}`;
  }
  return `${hex(n)} bytes`;
}

/** Throws unless `s` is a non-empty span inside the 64-bit IOVA space. */
export function checkSpan(what: string, s: IovaSpan): void {
  if (typeof s.iova !== 'bigint' || typeof s.length !== 'bigint')
    throw new TypeError(`${what}: iova and length must be bigints`);
  if (s.iova < 0n || s.iova > U64_MAX)
    throw new RangeError(`${what}: address ${hex(s.iova)} is outside the 64-bit IOVA space`);
  if (s.length <= 0n) throw new RangeError(`${what}: length must be positive, got ${s.length}`);
  if (s.iova + s.length - 1n > U64_MAX)
    throw new RangeError(
      `${what}: ${hex(s.iova)} + ${hex(s.length)} runs past the end of the 64-bit IOVA space`,
    );
}

function checkAlignment(alignment: bigint): void {
  if (alignment <= 0n || (alignment & (alignment - 1n)) !== 0n)
    throw new RangeError(`IOVA alignment must be a power of two, got ${hex(alignment)}`);
}

export const isAligned = (n: bigint, alignment: bigint): boolean => n % alignment === 0n;
const alignUp = (n: bigint, a: bigint): bigint => ((n + a - 1n) / a) * a;
const alignDown = (n: bigint, a: bigint): bigint => (n / a) * a;

/** Validate, sort and merge overlapping or adjacent ranges. Bad input names the bad range. */
export function normalizeRanges(ranges: readonly IovaRange[]): IovaRange[] {
  for (const r of ranges) {
    if (typeof r.start !== 'bigint' || typeof r.last !== 'bigint')
      throw new TypeError('IOVA range: start and last must be bigints');
    if (r.start < 0n || r.last > U64_MAX || r.start > r.last)
      throw new RangeError(`IOVA range ${formatRange(r)} is not a valid inclusive 64-bit range`);
  }
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: IovaRange[] = [];
  for (const r of sorted) {
    const prev = out[out.length - 1];
    if (prev && r.start <= prev.last + 1n)
      out[out.length - 1] = { start: prev.start, last: r.last > prev.last ? r.last : prev.last };
    else out.push({ start: r.start, last: r.last });
  }
  return out;
}

/** The holes: the complement of the allowed ranges within [0, 2^64-1]. */
export function holesOf(allowed: readonly IovaRange[]): IovaRange[] {
  const holes: IovaRange[] = [];
  let next = 0n;
  for (const r of normalizeRanges(allowed)) {
    if (r.start > next) holes.push({ start: next, last: r.start - 1n });
    if (r.last === U64_MAX) return holes;
    next = r.last + 1n;
  }
  holes.push({ start: next, last: U64_MAX });
  return holes;
}

/**
 * Shrink each allowed range inward to `alignment` (a range edge the IOMMU cannot map at
 * becomes part of the neighbouring hole), dropping ranges left empty.
 */
export function alignRanges(allowed: readonly IovaRange[], alignment: bigint): IovaRange[] {
  checkAlignment(alignment);
  const out: IovaRange[] = [];
  for (const r of normalizeRanges(allowed)) {
    const start = alignUp(r.start, alignment);
    const end = alignDown(r.last + 1n, alignment); // r.last + 1 may be 2^64: still fine as a bigint
    if (end > start) out.push({ start, last: end - 1n });
  }
  return out;
}

/** True when the whole span lies inside one allowed range. */
export function spanInRanges(s: IovaSpan, allowed: readonly IovaRange[]): boolean {
  const last = s.iova + s.length - 1n;
  return normalizeRanges(allowed).some((r) => r.start <= s.iova && last <= r.last);
}

export const spansOverlap = (a: IovaSpan, b: IovaSpan): boolean =>
  a.iova < spanEnd(b) && b.iova < spanEnd(a);

/** `from` minus `remove`: the parts of the spans in `from` that no span in `remove` covers, in order. */
export function subtractSpans(from: readonly IovaSpan[], remove: readonly IovaSpan[]): IovaSpan[] {
  const cuts = [...remove].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  const out: IovaSpan[] = [];
  for (const s of from) {
    let at = s.iova;
    const end = spanEnd(s);
    for (const c of cuts) {
      if (spanEnd(c) <= at || c.iova >= end) continue;
      if (c.iova > at) out.push({ iova: at, length: c.iova - at });
      at = spanEnd(c) > at ? spanEnd(c) : at;
      if (at >= end) break;
    }
    if (at < end) out.push({ iova: at, length: end - at });
  }
  return out;
}

/** True when the union of `cover` contains every byte of `s` (pieces may be adjacent). */
export function spanCovered(s: IovaSpan, cover: readonly IovaSpan[]): boolean {
  return subtractSpans([s], cover).length === 0;
}

// A guest range that lies entirely in a hole: one of the runtime's error kinds (VFR_ERR_IOVA_HOLE).
export { IovaHoleError };

function iovaHoleError(
  span: IovaSpan,
  hole: IovaRange,
  allowed: readonly IovaRange[],
  where?: string,
): IovaHoleError {
  return new IovaHoleError(
    `guest range ${formatSpan(span)} lies entirely in the reserved IOVA hole ${formatRange(hole)}${where ? ` of ${where}` : ''}` +
      ` (the IOMMU allows ${formatRanges(allowed)}): place this memory at guest-physical addresses outside the hole`,
    span,
    hole,
    allowed,
  );
}

export interface SplitOptions {
  /** IOVA alignment the IOMMU needs (IOMMU_IOAS_IOVA_RANGES out_iova_alignment, Type1's smallest page size). */
  readonly alignment?: bigint;
  /** Names the backend in error messages. */
  readonly where?: string;
}

/**
 * Split the guest range `span` into the pieces inside the allowed ranges (each piece lies in
 * one range, so one map call each), and report the parts that fall into holes. Throws
 * IovaHoleError when nothing of the range is allowed.
 */
export function splitGuestRange(
  span: IovaSpan,
  allowed: readonly IovaRange[],
  opts: SplitOptions = {},
): Split {
  const alignment = opts.alignment ?? 1n;
  checkSpan('guest range', span);
  checkAlignment(alignment);
  if (!isAligned(span.iova, alignment) || !isAligned(span.length, alignment)) {
    throw new RangeError(
      `guest range ${formatSpan(span)} is not aligned to ${formatSize(alignment)}, the IOVA alignment${opts.where ? ` of ${opts.where}` : ''}: its address and size must be multiples of it`,
    );
  }
  const effective = alignRanges(allowed, alignment);
  const end = spanEnd(span);
  const pieces: IovaSpan[] = [];
  for (const r of effective) {
    const start = r.start > span.iova ? r.start : span.iova;
    const stop = r.last + 1n < end ? r.last + 1n : end;
    if (start < stop) pieces.push({ iova: start, length: stop - start });
  }
  const holes = holesOf(effective);
  const holeAt = (iova: bigint): IovaRange => holes.find((h) => h.start <= iova && iova <= h.last)!;
  const skipped = subtractSpans([span], pieces).map((s) => ({ ...s, hole: holeAt(s.iova) }));
  if (pieces.length === 0)
    throw iovaHoleError(span, holeAt(span.iova), normalizeRanges(allowed), opts.where);
  return { pieces, skipped };
}

/**
 * The lowest free IOVA for `length` bytes inside the allowed ranges that no span in `used`
 * touches, aligned to `alignment`; never 0 (as the kernel's own allocator, so a zero IOVA is
 * never mistaken for "none"). Undefined when no such space exists.
 */
export function findFreeIova(
  allowed: readonly IovaRange[],
  used: readonly IovaSpan[],
  length: bigint,
  alignment: bigint,
): bigint | undefined {
  checkSpan('allocation', { iova: 0n, length });
  const free = subtractSpans(alignRanges(allowed, alignment).map(rangeToSpan), used);
  for (const f of free) {
    let at = alignUp(f.iova, alignment);
    if (at === 0n) at = alignment;
    if (at + length <= spanEnd(f)) return at;
  }
  return undefined;
}
