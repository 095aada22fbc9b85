// The device worker's last check before a device call: every pread/pwrite of the device fd names
// the window it means (a BAR's region, or the config region) and must lie inside it. Request
// validation (AssignedDevice) keeps accesses inside already; this guard makes a miss there a
// counted, refused event (C_OUTSIDE, vfio_runtime_device_accesses_outside) instead of a device access at
// an offset nobody checked. Two compares per access; no allocation.
import { C_OUTSIDE } from '../metrics/schema.js';

/** Window indexes: BARs 0-5, then the config region. */
export const CONFIG_WINDOW = 6;

export class AccessGuard {
  readonly #start = new Float64Array(7);
  readonly #end = new Float64Array(7); // 0: nothing allowed
  constructor(readonly stats: Float64Array) {}

  /** Accesses through `window` may touch [start, start + size) of the fd. */
  allow(window: number, start: number, size: number): void {
    this.#start[window] = start;
    this.#end[window] = start + size;
  }

  /** Is [at, at + size) inside `window`? If not, the miss is counted and the caller refuses it. */
  inside(window: number, at: number, size: number): boolean {
    if (size > 0 && at >= this.#start[window]! && at + size <= this.#end[window]!) return true;
    this.stats[C_OUTSIDE]!++;
    return false;
  }
}

// The error a refused config-region access throws (ConfigSpace's I/O cannot return a status);
// one of the runtime's error kinds (VFR_ERR_OUTSIDE_ACCESS).
export { OutsideAccessError } from '../errors.js';
