// Offloading long map calls (pinning gigabytes) to a piscina pool, so the coordinator's event
// loop stays free. A backend describes its kernel call as data (KernelMapCall); a pool thread
// makes that same ioctl on this process's fds (fds are process-wide) and answers with data,
// since piscina drops custom error properties. The backend records the mapping on success.
import { Piscina } from 'piscina';

export type KernelMapCall =
  | {
      readonly op: 'IOMMU_IOAS_MAP_FILE';
      readonly fd: number;
      readonly path: string;
      readonly ioas: number;
      readonly memfd: number;
      readonly offset: bigint;
      readonly length: bigint;
      readonly iova: bigint;
    }
  | {
      readonly op: 'IOMMU_IOAS_MAP';
      readonly fd: number;
      readonly path: string;
      readonly ioas: number;
      readonly va: bigint;
      readonly length: bigint;
      readonly iova: bigint;
    }
  | {
      readonly op: 'VFIO_IOMMU_MAP_DMA';
      readonly fd: number;
      readonly path: string;
      readonly va: bigint;
      readonly length: bigint;
      readonly iova: bigint;
    };

export type KernelMapResult =
  | { readonly ok: true; readonly ms: number }
  | { readonly ok: false; readonly errno: number; readonly message: string };

/** Runs a kernel map call somewhere else; resolves with its result (rejects only if the runner fails). */
export type MapRunner = (call: KernelMapCall, signal?: AbortSignal) => Promise<KernelMapResult>;

const TASK = new URL('../../workers/map-task.js', import.meta.url).href;

/** A small pool of threads for map calls; one is plenty, two let two backends pin at once. */
export class MapOffload {
  readonly #pool = new Piscina({
    filename: TASK,
    minThreads: 1,
    maxThreads: 2,
    idleTimeout: 30_000,
  });

  readonly run: MapRunner = (call, signal) =>
    this.#pool.run(call, signal ? { signal } : {}) as Promise<KernelMapResult>;

  close(): Promise<void> {
    return this.#pool.destroy();
  }
}
