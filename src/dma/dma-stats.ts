// Counters a DMA backend keeps for the metrics (src/metrics/exporter.ts reads them at scrape
// time): map and unmap calls, their summed latency, and kernel call failures by errno name.
// Plain numbers on the coordinator's thread; a map is a control-path call (~10-100 µs), so two
// clock reads per call cost nothing that matters.
import { SysError } from '../../native/errno.js';
import type { DmaSource, GuestMemorySource } from './backend.js';
import type { MapRunner } from './map-offload.js';

export type DmaOp = 'map' | 'unmap';

export class DmaStats {
  /** Successful calls by op. */
  readonly calls: Record<DmaOp, number> = { map: 0, unmap: 0 };
  /** Seconds spent in successful calls, by op. */
  readonly seconds: Record<DmaOp, number> = { map: 0, unmap: 0 };
  /** Failed kernel calls by `op errno` ("map EEXIST"), errno as its name. */
  readonly failures = new Map<string, number>();

  timed<T>(op: DmaOp, fn: () => T): T {
    const t0 = performance.now();
    let r: T;
    try {
      r = fn();
    } catch (e) {
      this.failed(op, e);
      throw e;
    }
    this.#done(op, t0);
    return r;
  }

  async timedAsync<T>(op: DmaOp, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    let r: T;
    try {
      r = await fn();
    } catch (e) {
      this.failed(op, e);
      throw e;
    }
    this.#done(op, t0);
    return r;
  }

  /** Count a failure if it was a kernel call's (one with an errno); others are not the kernel's. */
  failed(op: DmaOp, e: unknown): void {
    const errno = errnoOf(e);
    if (errno === undefined) return;
    const key = `${op} ${errno}`;
    this.failures.set(key, (this.failures.get(key) ?? 0) + 1);
  }

  #done(op: DmaOp, t0: number): void {
    this.calls[op]++;
    this.seconds[op] += (performance.now() - t0) / 1000;
  }
}

/** The errno name of a kernel call's error (SysError, KernelError, or one keeping `errnoName`). */
export function errnoOf(e: unknown): string | undefined {
  if (e instanceof SysError) return e.code;
  const n = (e as { errnoName?: unknown } | null)?.errnoName;
  return typeof n === 'string' && /^E[A-Z0-9]+$/.test(n) ? n : undefined;
}

/**
 * DmaBackend's map and unmap calls, counted and timed the same way for every backend: each is
 * the backend's raw call (`raw*`, which it implements) run under `stats`.
 */
export abstract class CountedDmaCalls {
  readonly stats = new DmaStats();

  protected abstract rawMapFixed(iova: bigint, length: bigint, mem: DmaSource): void;
  protected abstract rawMapFixedOffloaded(
    iova: bigint,
    length: bigint,
    mem: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void>;
  protected abstract rawMapAnywhere(length: bigint, mem: DmaSource): bigint;
  protected abstract rawUnmap(iova: bigint, length: bigint): bigint;
  protected abstract rawUnmapAll(): bigint;

  mapFixed(iova: bigint, length: bigint, mem: DmaSource): void {
    this.stats.timed('map', () => this.rawMapFixed(iova, length, mem));
  }
  mapFixedOffloaded(
    iova: bigint,
    length: bigint,
    mem: GuestMemorySource,
    run: MapRunner,
    signal?: AbortSignal,
  ): Promise<void> {
    return this.stats.timedAsync('map', () =>
      this.rawMapFixedOffloaded(iova, length, mem, run, signal),
    );
  }
  mapAnywhere(length: bigint, mem: DmaSource): bigint {
    return this.stats.timed('map', () => this.rawMapAnywhere(length, mem));
  }
  unmap(iova: bigint, length: bigint): bigint {
    return this.stats.timed('unmap', () => this.rawUnmap(iova, length));
  }
  unmapAll(): bigint {
    return this.stats.timed('unmap', () => this.rawUnmapAll());
  }
}
