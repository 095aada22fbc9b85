// The record a backend keeps of its own map calls, one entry per call, ordered by IOVA: it
// answers "what would this unmap remove", "which mapping would it cut in two" (both kernels
// refuse that), "which mappings lie outside new allowed ranges", and where free IOVA space is.
import type { DmaMapping } from './backend.js';
import {
  type IovaRange,
  type IovaSpan,
  spanEnd,
  spanInRanges,
  spansOverlap,
} from './iova-ranges.js';

export class MappingLog {
  #items: DmaMapping[] = [];

  add(m: DmaMapping): void {
    const i = this.#items.findIndex((x) => x.iova > m.iova);
    this.#items.splice(i < 0 ? this.#items.length : i, 0, m);
  }

  all(): readonly DmaMapping[] {
    return this.#items;
  }

  get size(): number {
    return this.#items.length;
  }

  /** The mappings entirely inside `span`: what unmapping it removes. */
  within(span: IovaSpan): DmaMapping[] {
    return this.#items.filter((m) => m.iova >= span.iova && spanEnd(m) <= spanEnd(span));
  }

  /** The mappings `span` overlaps without containing: an unmap of it would cut them in two. */
  bisected(span: IovaSpan): DmaMapping[] {
    return this.#items.filter(
      (m) => spansOverlap(m, span) && !(m.iova >= span.iova && spanEnd(m) <= spanEnd(span)),
    );
  }

  overlapping(span: IovaSpan): DmaMapping[] {
    return this.#items.filter((m) => spansOverlap(m, span));
  }

  /** Forget the mappings entirely inside `span`; returns them. */
  removeWithin(span: IovaSpan): DmaMapping[] {
    const gone = this.within(span);
    this.#items = this.#items.filter((m) => !gone.includes(m));
    return gone;
  }

  clear(): DmaMapping[] {
    const gone = this.#items;
    this.#items = [];
    return gone;
  }

  /** The mappings not wholly inside one of `ranges` (after a device narrowed them). */
  outside(ranges: readonly IovaRange[]): DmaMapping[] {
    return this.#items.filter((m) => !spanInRanges(m, ranges));
  }

  spans(): IovaSpan[] {
    return this.#items.map((m) => ({ iova: m.iova, length: m.length }));
  }
}
